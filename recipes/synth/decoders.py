"""Every decoder on the same network outputs: our beam searches beside pyctcdecode's.

    python -m recipes.synth.decoders [--first N] [--model MODEL] [--charlm LM] [--manifests M ...]
        [--decoders greedy ngram ...] [--beam-thresholds 25 15 ...]

The network runs once per manifest (its speed is printed once); then each decoder reads the
same log-probabilities: greedy; our beam search without an LM, with the model's tuned word
3-gram, with the character LM alone (shallow fusion) and with both (the character LM
rescores the n-gram search's hypotheses); pyctcdecode 0.5.0 without an LM and with the same
3-gram through KenLM. Search speed counts the search alone (our beam searches include the
forced alignment that times their words). One Markdown table of WER, CER and search speed.
"""

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from asr.data import read_cuts
from asr.decoding import DecodingOptions
from asr.evaluation import network_log_probs, score_search, table
from asr.inference import get_decoder
from asr.model import load_model
from asr.ngram import arpa_words

MANIFESTS = ["data/synth/cuts_test.jsonl.gz", "data/synth/cuts_test_unseen_voice.jsonl.gz"]
CHARLM = "exp/synth-charlm/charlm.pt"  # `asr lm export` of recipes/synth/charlm.yaml
# Character LM weights chosen on dev clips (recipes/synth/README.md, "Decoders"): alone, inside
# the search (first 100 clips); rescoring the n-gram search's hypotheses, when the model has no
# tuned one (first 300 clips: the least harmful non-zero weight; 0 was best).
FUSION_WEIGHT = 0.6
RESCORE_WEIGHT = 0.1
# pyctcdecode's LM weight (natural log, where ours is log10) and word score, chosen on the first
# 300 dev clips; its beam as wide as ours, its other settings its defaults.
ALPHA, BETA = 0.8, 1.5
DECODERS = ("greedy", "beam", "ngram", "fusion", "rescore", "pyctcdecode", "pyctcdecode-ngram")


def pyctcdecode_decoder(
    alphabet: str, beam_width: int, lm: str | None = None, alpha: float = ALPHA, beta: float = BETA
):
    """pyctcdecode's beam search as (T, V) log-probabilities -> text; ``lm``: an ARPA file."""
    from pyctcdecode import build_ctcdecoder

    labels = ["", *alphabet]  # its blank is "", then our tokens in id order (the space first)
    unigrams = [w for w in arpa_words(lm) if w not in ("<s>", "</s>", "<unk>")] if lm else None
    decoder = build_ctcdecoder(labels, lm, unigrams, alpha=alpha, beta=beta)
    return lambda log_probs: decoder.decode(log_probs.numpy(), beam_width=beam_width)


def ours(options: DecodingOptions, alphabet: str, frame_shift: float):
    """Our decoder for ``options`` as (T, V) log-probabilities -> text."""
    decode = get_decoder(options, alphabet, frame_shift)
    return lambda log_probs: " ".join(w.text for w in decode(log_probs))


def decoders(model, charlm: str, weights: dict[str, float], chosen=DECODERS, thresholds=None) -> dict:
    """Table name -> decoder of each of ``chosen`` (keys of :data:`DECODERS`), in table order.

    ``model.beam_options`` is the tuned n-gram search; the others keep its beam. With
    ``thresholds``, the n-gram search comes once per beam threshold.
    """
    alphabet, shift = model.config.alphabet, model.config.frame_shift
    ngram = replace(model.beam_options, charlm=None)
    beam = DecodingOptions(
        method="beam", beam_size=ngram.beam_size, beam_size_token=ngram.beam_size_token,
        beam_threshold=ngram.beam_threshold,
    )  # fmt: skip
    searches = {
        "greedy": DecodingOptions(),
        "beam": beam,
        "ngram": ngram,
        "fusion": replace(beam, charlm=charlm, charlm_weight=weights["fusion"]),
        "rescore": replace(ngram, charlm=charlm, charlm_weight=weights["rescore"]),
    }
    width, found = beam.beam_size, {}
    for key in (k for k in DECODERS if k in chosen):
        if key == "ngram" and thresholds:
            for threshold in thresholds:
                options = replace(ngram, beam_threshold=threshold)
                found[f"{ngram.name}, threshold {threshold:g}"] = ours(options, alphabet, shift)
        elif key in searches:
            found[searches[key].name] = ours(searches[key], alphabet, shift)
        elif key == "pyctcdecode":
            found[f"pyctcdecode beam {width}"] = pyctcdecode_decoder(alphabet, width)
        else:
            name = f"pyctcdecode beam {width} + n-gram"
            found[name] = pyctcdecode_decoder(alphabet, width, ngram.lm, weights["alpha"], weights["beta"])
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.synth.decoders", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", help="model file with a tuned n-gram (default: the shipped model)")
    parser.add_argument("--charlm", help=f"character LM (default: the model's tuned one, or {CHARLM})")
    parser.add_argument("--manifests", nargs="+", default=MANIFESTS, metavar="MANIFEST")
    parser.add_argument("--first", type=int, help="the first N cuts of each manifest only")
    parser.add_argument("--decoders", nargs="+", choices=DECODERS, default=DECODERS, help="default: all")
    parser.add_argument(
        "--beam-thresholds", type=float, nargs="+", metavar="T",
        help="the n-gram search once per beam threshold (default: the model's tuned one)",
    )  # fmt: skip
    parser.add_argument("--fusion-weight", type=float, default=FUSION_WEIGHT, help="char LM alone")
    parser.add_argument(
        "--rescore-weight", type=float, help=f"char LM rescoring (default: the model's, or {RESCORE_WEIGHT})"
    )
    parser.add_argument("--alpha", type=float, default=ALPHA, help="pyctcdecode's n-gram weight")
    parser.add_argument("--beta", type=float, default=BETA, help="pyctcdecode's word score")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    tuned = model.beam_options
    if tuned is None or not tuned.lm:
        raise SystemExit(
            f"{args.model or 'the shipped model'}: no tuned n-gram beam search (asr lm tune --save)"
        )
    charlm = args.charlm or tuned.charlm or CHARLM
    rescore = tuned.charlm_weight if tuned.charlm else RESCORE_WEIGHT
    rescore = rescore if args.rescore_weight is None else args.rescore_weight
    weights = {"fusion": args.fusion_weight, "rescore": rescore, "alpha": args.alpha, "beta": args.beta}
    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # its notes on ARPA loading times
    found = decoders(model, charlm, weights, args.decoders, args.beam_thresholds)
    rows, network = [], []
    for manifest in args.manifests:
        cuts = read_cuts(manifest)
        cuts = list(cuts.subset(first=args.first) if args.first else cuts)
        name = Path(manifest).name.removesuffix(".gz").removesuffix(".jsonl").removeprefix("cuts_")
        network_log_probs(model, cuts[:1])  # untimed: a process's first pass sets up its kernels
        log_probs, seconds = network_log_probs(model, cuts)
        network.append(f"{name} {sum(c.duration for c in cuts) / seconds:.0f}x")
        for decoder, decode in found.items():
            decode(log_probs[0])  # untimed too, for the same reason
            result = score_search(decode, cuts, log_probs, model.config.alphabet)
            print(f"{manifest} ({decoder}): {result.summary()}", file=sys.stderr, flush=True)
            rows.append((name, decoder, result))
    print(table(rows, speed="search speed (x real time)"))
    print(f"\nnetwork, once per test set (its output feeds every decoder): {', '.join(network)} real time")


if __name__ == "__main__":
    main()
