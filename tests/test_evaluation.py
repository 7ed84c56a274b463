"""asr/evaluation.py: scoring any recognizer on a manifest, by the same code on the same audio."""

import json
from pathlib import Path

import pytest

from asr.data import read_cuts
from asr.decoding import DecodingOptions
from asr.evaluation import (
    Evaluation,
    evaluate,
    model_recognizer,
    network_log_probs,
    pocketsphinx_recognizer,
    score_search,
    table,
)
from asr.inference import get_decoder

DEMO = Path(__file__).parents[1] / "recipes" / "synth" / "demo"


@pytest.fixture(scope="module")
def demo_cuts():
    # The manifest's audio paths are relative to the repository root.
    cuts = read_cuts(DEMO / "cuts.jsonl")
    return cuts.map(lambda c: c.with_recording_path_prefix(str(DEMO.parents[2])))


def test_a_perfect_and_a_silent_recognizer(demo_cuts):
    refs = {c.id: c.supervisions[0].text for c in demo_cuts}
    texts = iter(refs.values())
    perfect = evaluate(lambda audio: [next(texts) for _ in audio], demo_cuts, batch_size=4)
    assert perfect.wer == 0 and perfect.cer == 0
    assert perfect.ids == list(refs) and perfect.audio_seconds == pytest.approx(
        sum(c.duration for c in demo_cuts)
    )
    silent = evaluate(lambda audio: ["" for _ in audio], demo_cuts)
    assert silent.wer == 1 and silent.cer == 1
    assert silent.speed > 0


def test_references_are_normalised(demo_cuts):
    shouting = demo_cuts.map(lambda c: c.map_supervisions(lambda s: s.transform_text(str.upper)))
    result = evaluate(lambda audio: ["x"] * len(audio), shouting)
    assert all(r == r.lower() for r in result.refs)


def test_write_is_atomic_and_one_line_per_utterance(tmp_path):
    result = Evaluation(ids=["a", "b"], refs=["hello world", "good bye"], hyps=["hello word", "good bye"])
    path = result.write(tmp_path / "out" / "hyps.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["id"], r["wer"]) for r in rows] == [("a", 0.5), ("b", 0.0)]
    assert sorted(p.name for p in path.parent.iterdir()) == ["hyps.jsonl"]


def test_table_has_one_row_per_result():
    result = Evaluation(ids=["a"], refs=["a b"], hyps=["a"], audio_seconds=10, elapsed=0.1)
    lines = table([("test", "asr greedy", result)]).splitlines()
    assert lines[2] == "| test | asr greedy | 1 | 50.00 | 66.67 | 100 |"


def test_a_model_is_scored_with_its_own_alphabet(demo_cuts, untrained_model_file):
    from asr.model import load_model

    model = load_model(untrained_model_file)
    result = evaluate(model_recognizer(model), demo_cuts, model.config.alphabet)
    assert len(result.hyps) == len(demo_cuts) and all(isinstance(h, str) for h in result.hyps)
    assert result.speed > 0 and 0 <= result.cer


def test_pocketsphinx_hears_words(demo_cuts):
    result = evaluate(pocketsphinx_recognizer(), demo_cuts)
    assert any(result.hyps) and result.wer < 1.0


def test_a_search_on_the_networks_output_scores_as_transcription_does(demo_cuts, untrained_model_file):
    from asr.model import load_model

    model = load_model(untrained_model_file)
    log_probs, seconds = network_log_probs(model, list(demo_cuts))
    assert len(log_probs) == len(demo_cuts) and seconds > 0
    assert all(x.shape[1] == len(model.tokenizer) for x in log_probs)  # (T, V) each
    greedy = get_decoder(DecodingOptions(), model.config.alphabet, model.config.frame_shift)
    searched = score_search(lambda x: " ".join(w.text for w in greedy(x)), demo_cuts, log_probs)
    transcribed = evaluate(model_recognizer(model), demo_cuts, model.config.alphabet)
    assert searched.hyps == transcribed.hyps and searched.refs == transcribed.refs
    assert searched.ids == transcribed.ids and searched.audio_seconds == pytest.approx(
        transcribed.audio_seconds
    )
