"""recipes/synth/decoders.py: every decoder on one network output, in one table."""

import shutil

import pytest

from asr.charlm import CharLM, CharLMConfig, save_charlm
from asr.decoding import DecodingOptions, write_beam_defaults
from asr.ngram import build_arpa
from recipes.synth import decoders

TEXT = ["hello world", "this is a test", "the cat sat on the mat", "a test of the world"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, untrained_model_file):
    """A model with a tuned 3-gram beside it (gzipped, as shipped), and a character LM."""
    folder = tmp_path_factory.mktemp("model")
    model = shutil.copy(untrained_model_file, folder / "model.pt")
    lm = build_arpa(TEXT, folder / "words.arpa.gz", order=3)
    write_beam_defaults(model, DecodingOptions(method="beam", beam_size=8, lm=str(lm), lm_weight=1.0))
    save_charlm(CharLM(CharLMConfig(hidden_size=16, num_layers=1)), folder / "charlm.pt")
    return folder


def test_every_decoder_gets_a_row_per_test_set(model_folder, corpus, capsys):
    args = ["--model", str(model_folder / "model.pt"), "--charlm", str(model_folder / "charlm.pt")]
    decoders.main([*args, "--manifests", corpus["test"], corpus["dev"], "--first", "2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| test |") or line.startswith("| dev |")]
    names = [
        "greedy",
        "beam 8",
        "beam 8 + n-gram",
        "beam 8 + char LM",
        "beam 8 + n-gram + char LM",
        "pyctcdecode beam 8",
        "pyctcdecode beam 8 + n-gram",
    ]
    assert [row.split(" | ")[1] for row in rows] == names * 2
    assert all(row.split(" | ")[2] == "2" for row in rows)  # --first 2 cuts of each
    assert "search speed (x real time)" in out and "network, once per test set" in out
    decoders.main(
        [*args, "--manifests", corpus["test"], "--first", "1", "--decoders", "pyctcdecode", "greedy"]
    )
    rows = [
        line.split(" | ")[1] for line in capsys.readouterr().out.splitlines() if line.startswith("| test |")
    ]
    assert rows == ["greedy", "pyctcdecode beam 8"]  # the chosen ones, in table order


def test_a_model_without_a_tuned_ngram_is_refused(untrained_model_file):
    with pytest.raises(SystemExit, match="no tuned n-gram beam search"):
        decoders.main(["--model", untrained_model_file, "--manifests", "unused.jsonl.gz"])


def test_the_ngram_search_comes_once_per_beam_threshold(model_folder, corpus, capsys):
    args = ["--model", str(model_folder / "model.pt"), "--manifests", corpus["test"], "--first", "2"]
    decoders.main([*args, "--decoders", "ngram", "--beam-thresholds", "25", "12.5"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ")[1] for line in lines if line.startswith("| test |")]
    assert rows == ["beam 8 + n-gram, threshold 25", "beam 8 + n-gram, threshold 12.5"]
