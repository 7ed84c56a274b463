import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import asr.model
from asr import cli
from asr.cli import main
from asr.model import load_model

SMOKE_CONFIG = str(Path(__file__).parents[1] / "recipes" / "smoke" / "config.yaml")


def run_asr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr.cli", *args], capture_output=True, text=True)


def _fit_args(corpus, root, *extra) -> list[str]:
    return [
        "fit", "--config", SMOKE_CONFIG,
        "--data.train_cuts", corpus["train"], "--data.val_cuts", corpus["dev"],
        "--data.test_cuts", corpus["test"], "--data.num_workers", "0",
        "--model.net.hidden_size", "32", "--model.net.conv_channels", "32", "--model.stats_batches", "2",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip


def test_fit_fast_dev_run_through_the_cli(corpus, tmp_path):
    main(_fit_args(corpus, tmp_path, "--trainer.fast_dev_run", "1"))


@pytest.mark.parametrize("native", [False, True])
def test_bf16_training_falls_back_to_fp32_on_a_cpu_without_it(corpus, tmp_path, monkeypatch, capsys, native):
    monkeypatch.setattr(asr.model, "native_bf16_cpu", lambda: native)
    args = _fit_args(corpus, tmp_path, "--trainer.fast_dev_run", "1", "--trainer.precision", "bf16-mixed")
    trainer = cli.lightning_cli(args).trainer
    warned = "training in fp32 (32-true) instead" in capsys.readouterr().err
    assert warned != native
    assert trainer.precision == ("bf16-mixed" if native else "32-true")
    # Only a CPU run falls back: a GPU has its own bf16.
    assert cli.training_precision("bf16-mixed", "gpu") == "bf16-mixed"
    assert cli.training_precision("32-true", "cpu") == "32-true"


def test_print_config_shows_the_model_and_data(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", SMOKE_CONFIG, "--print_config"])
    config = capsys.readouterr().out
    assert "rnn_type: lstm" in config and "train_cuts: data/smoke/cuts_train.jsonl.gz" in config


def test_make_train_seed_sets_the_runs_and_the_datas_seed(capsys):
    repo = Path(SMOKE_CONFIG).parents[2]
    make = ["make", "-n", "--no-print-directory", "train", "RECIPE=smoke", "SEED=7"]
    out = subprocess.run(make, cwd=repo, capture_output=True, text=True, check=True).stdout
    (line,) = [line for line in out.splitlines() if " fit " in line]
    args = line.split(" fit ", 1)[1].rstrip(" \\").split()
    with pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    import yaml

    config = yaml.safe_load(capsys.readouterr().out)
    assert config["seed_everything"] == 7 and config["data"]["seed"] == 7


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> dict:
    """One short epoch through `asr fit`, then `asr export`."""
    root = tmp_path_factory.mktemp("run")
    main(_fit_args(corpus, root, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"))
    checkpoint = root / "checkpoints" / "best.ckpt"
    model = root / "model.pt"
    assert main(["export", str(checkpoint), str(model)]) == 0
    return {"root": root, "checkpoint": checkpoint, "model": model}


def test_fit_writes_checkpoints_and_metrics(trained):
    assert (trained["root"] / "checkpoints" / "last.ckpt").is_file()
    assert list(trained["root"].glob("lightning_logs/version_*/metrics.csv"))


def test_a_fresh_run_refuses_a_folder_holding_another_and_a_resumed_one_keeps_best_ckpt(
    trained, corpus, capsys, tmp_path
):
    root = shutil.copytree(trained["root"], tmp_path / "run")
    checkpoints = root / "checkpoints"
    before = {p.name: p.read_bytes() for p in checkpoints.glob("*.ckpt")}
    fresh = _fit_args(corpus, root, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3")
    assert main(fresh) == 1
    err = capsys.readouterr().err
    assert err.startswith("asr: error: ") and str(checkpoints) in err and "--ckpt_path" in err
    assert {p.name: p.read_bytes() for p in checkpoints.glob("*.ckpt")} == before  # nothing touched

    resume = ["--ckpt_path", str(checkpoints / "last.ckpt"), "--trainer.max_epochs", "2"]
    assert main(_fit_args(corpus, root, "--trainer.limit_train_batches", "3", *resume)) == 0
    assert sorted(p.name for p in checkpoints.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


def test_top_checkpoints_keep_the_best_validations_and_average_into_a_model(corpus, tmp_path):
    import csv

    root = tmp_path / "run"
    args = ["--trainer.max_epochs", "4", "--trainer.limit_train_batches", "2", "--top.save_top_k", "2"]
    assert main(_fit_args(corpus, root, *args)) == 0
    scores = [
        float(row["val_wer"])
        for log in root.glob("lightning_logs/version_*/metrics.csv")
        for row in csv.DictReader(log.open())
        if row.get("val_wer")
    ]
    assert len(scores) == 4
    kept = sorted((root / "checkpoints").glob("top-step=*.ckpt"))
    assert len(kept) == 2
    state = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (top,) = [v for k, v in state.items() if k.startswith("TopCheckpoints")]
    assert sorted(map(str, kept)) == sorted(top["best_k_models"])
    assert sorted(float(v) for v in top["best_k_models"].values()) == pytest.approx(sorted(scores)[:2])
    # the best alone still as best.ckpt, for `asr export`
    assert (root / "checkpoints" / "best.ckpt").is_file()
    assert main(["average", *map(str, kept), "-o", str(tmp_path / "mean.pt")]) == 0
    from asr.checkpoints import recognizer_of

    heads = [recognizer_of(path).head.weight for path in kept]
    mean = load_model(tmp_path / "mean.pt").head.weight  # stored in half precision
    torch.testing.assert_close(mean, (heads[0] + heads[1]) / 2, rtol=1e-3, atol=1e-4)


def test_make_trains_each_config_in_the_folder_the_config_names():
    import yaml

    repo = Path(SMOKE_CONFIG).parents[2]
    roots = {}
    for config in sorted(repo.glob("recipes/*/*.yaml")):
        root = yaml.safe_load(config.read_text())["trainer"]["default_root_dir"]
        assert root not in roots.values(), f"{config} shares its run folder with another config"
        roots[config] = root
        make = ["make", "-n", "--no-print-directory", "export", f"RECIPE={config.parent.name}"]
        make.append(f"CONFIG={config}")
        out = subprocess.run(make, cwd=repo, capture_output=True, text=True, check=True).stdout
        assert f"{root}/checkpoints/best.ckpt {root}/model.pt" in out, out


def test_exported_model_matches_the_checkpoint(trained, speech_wav):
    model = load_model(trained["model"])
    state = torch.load(trained["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    for name, value in model.state_dict().items():  # weights travel as float16
        torch.testing.assert_close(value, state[f"net.{name}"], rtol=1e-3, atol=1e-4)
    assert model.frontend.has_stats
    result = model.transcribe(speech_wav)
    assert result.duration == pytest.approx(sf.info(speech_wav).duration, abs=1e-3)


def test_python_api_one_liner(trained, speech_wav):
    code = "import asr, sys; print(type(asr.load_model(sys.argv[1]).transcribe(sys.argv[2]).text).__name__)"
    out = subprocess.run([sys.executable, "-c", code, str(trained["model"]), speech_wav], capture_output=True)
    assert out.stdout.decode().strip() == "str", out.stderr.decode()


def test_evaluate_prints_a_table_beside_pocketsphinx_and_writes_hypotheses(trained, corpus, tmp_path):
    manifests = [corpus["dev"], corpus["test"]]
    out = run_asr(
        "evaluate", "--model", str(trained["model"]), *manifests, "--compare", "pocketsphinx",
        "--output-dir", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines()[2:]]
    assert [(r[0].strip(), r[1].strip(), r[2].strip()) for r in rows] == [
        ("dev", "asr greedy", "4"), ("dev", "pocketsphinx", "4"),
        ("test", "asr greedy", "4"), ("test", "pocketsphinx", "4"),
    ]  # fmt: skip
    assert all(0 <= float(r[3]) <= 100 * 10 for r in rows)  # WER %, may pass 100 on insertions
    for name in ("cuts_test.greedy.hyps.jsonl", "cuts_test.pocketsphinx.hyps.jsonl"):
        hyps = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        assert len(hyps) == 4 and {"id", "ref", "hyp", "wer"} <= hyps[0].keys()
    # PocketSphinx hears real words in espeak-ng speech: some of its hypotheses are not empty.
    assert any(h["hyp"] for h in hyps)


def test_export_of_a_missing_checkpoint_fails_cleanly(tmp_path):
    out = run_asr("export", str(tmp_path / "nope.ckpt"), str(tmp_path / "m.pt"))
    assert out.returncode == 1 and "Traceback" not in out.stderr and "nope.ckpt" in out.stderr


def _bug(*args):
    # A genuine bug: torch refuses a shape inside the program, not in anything the user gave.
    torch.zeros(2, 3).view(4, 5)


def _input_error(*args):
    from asr.features import Augment

    Augment(warp=2.0)  # the package's own check of a value the user gave


@pytest.mark.parametrize("debug", [None, "--debug", "ASR_DEBUG"])
def test_a_bug_keeps_its_traceback_and_an_input_error_is_one_line_unless_debugging(
    monkeypatch, capsys, debug
):
    if debug == "ASR_DEBUG":
        monkeypatch.setenv("ASR_DEBUG", "1")
    flags = ["--debug"] if debug == "--debug" else []
    monkeypatch.setattr(cli, "lm_sample_command", _bug)
    with pytest.raises(RuntimeError, match="shape"):
        main([*flags, "lm", "sample", "--model", "m.lm"])

    monkeypatch.setattr(cli, "lm_sample_command", _input_error)
    if debug:
        with pytest.raises(ValueError, match="augment.warp"):
            main([*flags, "lm", "sample", "--model", "m.lm"])
    else:
        assert main(["lm", "sample", "--model", "m.lm"]) == 1
        assert capsys.readouterr().err == "asr: error: augment.warp must be in [0, 1), got 2.0\n"


def test_only_the_packages_own_value_errors_are_input_errors():
    with pytest.raises(ValueError) as inside_numpy:
        np.zeros(3).reshape(2, 2)
    with pytest.raises(ValueError) as outside_the_package:
        raise ValueError("raised by a caller")
    with pytest.raises(ValueError) as the_packages_check:
        _input_error()

    assert not cli.is_input_error(inside_numpy.value)
    assert not cli.is_input_error(outside_the_package.value)
    assert cli.is_input_error(the_packages_check.value)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    files = {"missing": d / "missing.wav", "empty": d / "empty.wav", "text": d / "notes.wav"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not audio\n")
    files["nan"] = d / "nan.wav"
    sf.write(files["nan"], np.full(1600, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    good = d / "good.wav"
    sf.write(good, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    truncated = d / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])  # cut inside the header
    files["truncated"] = truncated
    return files


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "nan", "truncated"])
def test_transcribe_bad_input_is_one_line_error(untrained_model_file, bad_inputs, kind):
    out = run_asr("transcribe", "--model", untrained_model_file, str(bad_inputs[kind]))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and str(bad_inputs[kind]) in out.stderr


def test_transcribe_keeps_going_past_bad_files(untrained_model_file, bad_inputs, speech_wav):
    files = [str(bad_inputs["missing"]), speech_wav, str(bad_inputs["text"]), speech_wav]
    out = run_asr("transcribe", "--model", untrained_model_file, "--format", "jsonl", *files)
    assert out.returncode == 1
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["audio"] for r in rows] == [speech_wav, speech_wav]
    assert all({"text", "words", "duration"} <= r.keys() for r in rows)
    assert out.stderr.count("\n") == 2


@pytest.mark.parametrize("fmt, first_line", [("srt", None), ("vtt", "WEBVTT"), ("json", "[")])
def test_transcribe_writes_files_per_input(untrained_model_file, speech_wav, tmp_path, fmt, first_line):
    out = run_asr(
        "transcribe",
        "--model",
        untrained_model_file,
        "--format",
        fmt,
        "--output-dir",
        str(tmp_path),
        speech_wav,
    )
    assert out.returncode == 0, out.stderr
    written = (tmp_path / f"{Path(speech_wav).stem}.{fmt}").read_text()
    if first_line:
        assert written.splitlines()[0] == first_line


def test_transcripts_of_same_named_inputs_in_different_folders_do_not_overwrite_each_other(
    untrained_model_file, speech_wav, tmp_path
):
    for folder in ("a", "b/c"):
        (tmp_path / folder).mkdir(parents=True)
        shutil.copy(speech_wav, tmp_path / folder / "clip.wav")
    out = tmp_path / "out"
    files = [str(tmp_path / "a" / "clip.wav"), str(tmp_path / "b" / "c" / "clip.wav")]
    assert main(["transcribe", "--model", untrained_model_file, "--output-dir", str(out), *files]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == ["a/clip.txt", "b/c/clip.txt"]

    shutil.copy(speech_wav, tmp_path / "a" / "clip.flac")  # same folder, same stem: refused first
    with pytest.raises(ValueError, match="clip.wav and .*clip.flac would both be written to"):
        cli.output_paths([files[0], str(tmp_path / "a" / "clip.flac")], str(out), "txt")


def test_evaluate_scores_the_readable_cuts_and_names_the_others(trained, corpus, tmp_path, capsys):
    from asr.data import read_cuts

    cuts = read_cuts(corpus["test"]).to_eager()
    broken = cuts[1].id
    source = cuts[1].recording.sources[0]
    source.source = str(tmp_path / "gone.flac")
    cuts.to_file(tmp_path / "cuts_test.jsonl.gz")
    args = ["evaluate", "--model", str(trained["model"]), str(tmp_path / "cuts_test.jsonl.gz")]
    assert main([*args, "--decoder", "greedy", "beam", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr()
    assert err.err.count(f"cut {broken}:") == 1 and "gone.flac" in err.err
    assert "| test | asr greedy | 3 |" in err.out and "| test | asr beam" in err.out
    hyps = (tmp_path / "cuts_test.greedy.hyps.jsonl").read_text().splitlines()
    assert len(hyps) == 3 and broken not in "".join(hyps)


@pytest.mark.parametrize("content", [b"not a model", b""], ids=["text", "empty"])
def test_transcribe_with_a_file_that_is_not_a_model(tmp_path, speech_wav, content):
    model = tmp_path / "model.pt"
    model.write_bytes(content)
    out = run_asr("transcribe", "--model", str(model), speech_wav)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "not a model file" in out.stderr and str(model) in out.stderr


def test_transcribe_with_a_training_checkpoint_says_to_export(trained, speech_wav):
    out = run_asr("transcribe", "--model", str(trained["checkpoint"]), speech_wav)
    assert out.returncode == 1 and "asr export" in out.stderr and "Traceback" not in out.stderr


def test_transcribe_without_a_model_and_no_default_says_what_to_do(speech_wav, monkeypatch, tmp_path, capsys):
    import asr.model

    monkeypatch.setattr(asr.model, "DEFAULT_MODEL", tmp_path / "default.pt")
    assert main(["transcribe", speech_wav]) == 1  # in-process: the patched default applies
    err = capsys.readouterr().err
    assert "no default model" in err and "--model" in err and err.count("\n") == 1


def test_transcribe_and_evaluate_with_beam_search_and_an_ngram_lm(trained, corpus, speech_wav, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("hello world this is a test\nthis is a test\n")
    assert main(["lm", "build", str(text), "--out", str(tmp_path / "lm.arpa")]) == 0
    beam = ["--decoder", "beam", "--beam-size", "8", "--lm", str(tmp_path / "lm.arpa")]
    out = run_asr("transcribe", speech_wav, "--model", str(trained["model"]), "--format", "json", *beam)
    assert out.returncode == 0, out.stderr
    words = json.loads(out.stdout)[0]["words"]
    assert {w["text"] for w in words} <= {"hello", "world", "this", "is", "a", "test"}  # the LM's words only
    # An LM given without --decoder asks for the beam search.
    out = run_asr("transcribe", speech_wav, "--model", str(trained["model"]), "--format", "json", *beam[2:])
    assert json.loads(out.stdout)[0]["words"] == words
    out = run_asr(
        "evaluate", corpus["test"], "--model", str(trained["model"]), "--output-dir", str(tmp_path), *beam
    )
    assert out.returncode == 0, out.stderr
    assert "| test | asr beam 8 + n-gram | 4 |" in out.stdout
    assert (tmp_path / "cuts_test.beam8+n-gram.hyps.jsonl").is_file()
    # Hotwords: a word the LM lacks becomes possible; a boost must be a number.
    out = run_asr(
        "transcribe", speech_wav, "--model", str(trained["model"]), *beam, "--hotwords", "hullo:3", "tst"
    )
    assert out.returncode == 0, out.stderr
    out = run_asr("transcribe", speech_wav, "--model", str(trained["model"]), *beam, "--hotwords", "hullo:x")
    assert out.returncode == 1 and "--hotwords 'hullo:x': the boost after ':' must be a number" in out.stderr
    out = run_asr(
        "transcribe", speech_wav, "--model", str(trained["model"]), "--decoder", "greedy", "--hotwords", "a"
    )
    assert out.returncode == 1 and "hotwords boost words of the beam search's word n-gram" in out.stderr


def test_lm_tune_saves_the_best_weights_and_beam_decoding_then_uses_them(
    trained, corpus, speech_wav, tmp_path
):
    model = tmp_path / "model.pt"
    model.write_bytes(trained["model"].read_bytes())
    (tmp_path / "text.txt").write_text("hello world this is a test\nthis is a test\n")
    assert main(["lm", "build", str(tmp_path / "text.txt"), "--out", str(tmp_path / "lm.arpa.gz")]) == 0
    # Two manifests, scored together.
    tune = [
        "lm",
        "tune",
        corpus["dev"],
        corpus["test"],
        "--model",
        str(model),
        "--lm",
        str(tmp_path / "lm.arpa.gz"),
    ]
    out = run_asr(
        *tune, "--lm-weights", "0.5", "2", "--word-scores", "0", "--beam-size", "8", "--beam-size-token", "4",
        "--save",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [
        line for line in out.stdout.splitlines() if line.startswith("| 0.5 |") or line.startswith("| 2.0 |")
    ]
    assert len(rows) == 2 and "best: --lm-weight" in out.stdout
    assert f"8 utterances of {corpus['dev']}, {corpus['test']}" in out.stdout
    assert all(row.split(" | ")[2] == "-" for row in rows)  # no char LM: its weight is not tuned
    assert "--charlm-weight" not in out.stdout
    tuned = load_model(model).beam_options
    assert (tuned.lm, tuned.beam_size, tuned.beam_size_token) == (str(tmp_path / "lm.arpa.gz"), 8, 4)
    out = run_asr("transcribe", speech_wav, "--model", str(model), "--format", "json", "--decoder", "beam")
    assert out.returncode == 0, out.stderr
    words = json.loads(out.stdout)[0]["words"]
    assert {w["text"] for w in words} <= {"hello", "world", "this", "is", "a", "test"}  # the saved LM's words
    # With no --decoder, and through the API, a model with a tuned search decodes with it.
    out = run_asr("transcribe", speech_wav, "--model", str(model), "--format", "json")
    assert json.loads(out.stdout)[0]["words"] == words
    assert [w.text for w in load_model(model).transcribe(speech_wav).words] == [w["text"] for w in words]
    out = run_asr(
        "evaluate", corpus["test"], "--model", str(model), "--decoder", "greedy", "beam",
        "--output-dir", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "| test | asr greedy | 4 |" in out.stdout
    assert "| test | asr beam 8 + n-gram | 4 |" in out.stdout  # the beam size it was tuned with
    out = run_asr("evaluate", corpus["test"], "--model", str(model), "--output-dir", str(tmp_path))
    assert "| test | asr beam 8 + n-gram | 4 |" in out.stdout and "greedy" not in out.stdout
    out = run_asr("evaluate", corpus["test"], "--model", str(model), "--decoder", "beam", "--no-lm")
    assert out.returncode == 0, out.stderr
    assert "| test | asr beam 32 |" in out.stdout  # --no-lm: the plain beam search


def test_lm_tune_save_needs_a_model_and_an_lm_beside_it_before_the_grid_runs(
    trained, corpus, tmp_path, monkeypatch, capsys
):
    from asr import decoding

    monkeypatch.setattr(decoding, "write_beam_defaults", _bug)  # nothing may be written
    monkeypatch.setattr("asr.evaluation.tune_beam", _bug)  # nor the grid start
    (tmp_path / "lm.arpa").write_text("\\data\\\n")  # never read: the check comes first
    tune = ["lm", "tune", corpus["dev"], "--lm", str(tmp_path / "lm.arpa"), "--save"]
    assert main(tune) == 1
    assert "--save stores the beam search beside a model: name it with --model" in capsys.readouterr().err
    assert main([*tune, "--model", str(trained["model"])]) == 1  # the LM is not beside that model
    assert "put the LM beside the model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "fmt", "written"),
    [("m.pt", None, "pt"), ("m.onnx", None, "onnx"), ("m.pt", "pt", "pt"), ("m.onnx", "onnx", "onnx"),
     ("m.onnx", "pt", None), ("m.pt", "onnx", None)],
)  # fmt: skip
def test_export_takes_the_format_from_the_suffix_and_refuses_a_contradiction(name, fmt, written):
    if written:
        assert cli.export_format(name, fmt) == written
    else:
        with pytest.raises(ValueError, match=f"{name}: --format {fmt} needs"):
            cli.export_format(name, fmt)


def test_models_load_on_the_device_asked_for(untrained_model_file, speech_wav, monkeypatch, capsys):
    from asr.model import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert main(["transcribe", speech_wav, "--model", untrained_model_file, "--device", "cuda"]) == 1
    assert capsys.readouterr().err == "asr: error: device cuda: this machine has 0 CUDA devices\n"
    assert main(["transcribe", speech_wav, "--model", untrained_model_file, "--device", "tpu"]) == 1
    assert "device must be auto, cpu, cuda or cuda:N, got 'tpu'" in capsys.readouterr().err
    assert main(["transcribe", speech_wav, "--model", untrained_model_file, "--device", "cpu"]) == 0


def test_transcribe_in_bf16(untrained_model_file, speech_wav, capsys):
    assert main(["transcribe", speech_wav, "--model", untrained_model_file, "--precision", "bf16"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # one file: its transcript alone


class _RunsCode:
    """Unpickling this creates a file: what a crafted model or checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_no_model_lm_or_checkpoint_file_can_run_code_when_loaded(corpus, tmp_path, monkeypatch):
    from asr.charlm import load_charlm
    from asr.checkpoints import export_checkpoint
    from asr.training import CTCTraining
    from tests.conftest import TINY

    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": "asr-model", "state_dict": {}, "payload": _RunsCode(marker)}, crafted)
    loaders = {
        "model file": lambda: load_model(crafted),
        "character LM file": lambda: load_charlm(crafted),
        "checkpoint to export": lambda: export_checkpoint(crafted, tmp_path / "out.pt"),
        "init_from": lambda: CTCTraining(TINY, init_from=str(crafted)),
        "--ckpt_path": lambda: main(_fit_args(corpus, tmp_path / "run", "--ckpt_path", str(crafted))),
    }
    for name, load in loaders.items():
        with pytest.raises(Exception) as refused:  # noqa: PT011 (each refuses in its own words)
            load()
        assert not marker.exists(), f"{name}: unpickling ran code"
        assert "weights" in str(refused.value).lower() or "not a" in str(refused.value), (name, refused.value)


def test_a_killed_export_leaves_the_old_model_or_the_new_one_never_half_of_one(
    trained, untrained_model_file, tmp_path
):
    import signal
    import time

    target = tmp_path / "model.pt"
    export = [sys.executable, "-m", "asr.cli", "export", str(trained["checkpoint"]), str(target)]
    started = time.perf_counter()
    subprocess.run(export, check=True, capture_output=True)
    duration = time.perf_counter() - started
    new, old = target.read_bytes(), Path(untrained_model_file).read_bytes()
    for share in (0.2, 0.5, 0.8, 0.9, 0.95):  # kill points through start-up, loading and writing
        target.write_bytes(old)
        process = subprocess.Popen(export, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(share * duration)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert target.read_bytes() in (old, new), f"killed at {share:.0%}: a model file half written"
        load_model(target)
    subprocess.run(export, check=True, capture_output=True)  # the rerun completes
    assert target.read_bytes() == new


def test_a_killed_fit_resumes_mid_epoch_and_ends_like_an_uninterrupted_run(corpus, tmp_path):
    # `make train` reruns the same command, with --ckpt_path once last.ckpt exists. Checkpoints
    # every update (rather than every 10 minutes) put the kill anywhere, saving included.
    import csv
    import signal
    import time

    steps = 24

    def command(root: Path) -> list[str]:
        last = root / "checkpoints" / "last.ckpt"
        args = _fit_args(
            corpus, root, "--data.max_duration", "6", "--trainer.max_steps", str(steps),
            "--trainer.limit_val_batches", "0", "--checkpoint.monitor", "null",
            "--autosave.train_time_interval", "null", "--autosave.every_n_train_steps", "1",
        )  # fmt: skip
        return [
            sys.executable,
            "-m",
            "asr.cli",
            *args,
            *(["--ckpt_path", str(last)] if last.exists() else []),
        ]

    def state(root: Path) -> dict:
        return torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)

    def losses(root: Path) -> dict[int, float]:
        rows = [
            row
            for log in sorted(root.glob("lightning_logs/version_*/metrics.csv"))
            for row in csv.DictReader(log.open())
        ]
        return {int(row["step"]): float(row["train_loss"]) for row in rows if row.get("train_loss")}

    whole = tmp_path / "whole"
    subprocess.run(command(whole), check=True, capture_output=True)

    run = tmp_path / "killed"
    process = subprocess.Popen(command(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (run / "checkpoints" / "last.ckpt").exists() and state(run)["global_step"] >= steps // 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = state(run)  # complete: written beside its path and renamed
    batch = killed["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
    assert 0 < killed["global_step"] < steps and batch > 0, "killed mid-epoch, before the end"

    subprocess.run(command(run), check=True, capture_output=True)  # the same command resumes
    resumed, reference = state(run), state(whole)
    assert resumed["global_step"] == reference["global_step"] == steps
    # Same data order, random draws and LR schedule: the same weights and the same loss after
    # the interruption, within float rounding.
    for name, value in reference["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, rtol=1e-4, atol=1e-5)
    after = [step for step in losses(whole) if step > killed["global_step"]]
    assert after, "a loss logged after the interruption"
    for step in after:
        assert losses(run)[step] == pytest.approx(losses(whole)[step], rel=1e-4)


def test_runs_stopped_by_their_budget_resume_where_they_stopped_again_and_again(corpus, tmp_path):
    # max_steps or max_time end a run mid-epoch, and Lightning then counts the epoch as done:
    # a resumed run must still go on with the rest of that epoch, and so must one resumed from it.
    import csv

    def fit(root: Path, steps: int) -> None:
        last = root / "checkpoints" / "last.ckpt"
        args = _fit_args(
            corpus, root, "--data.max_duration", "6", "--trainer.max_steps", str(steps),
            "--trainer.limit_val_batches", "0", "--checkpoint.monitor", "null",
            "--trainer.log_every_n_steps", "1", *(["--ckpt_path", str(last)] if last.exists() else []),
        )  # fmt: skip
        cli.lightning_cli(args)

    def losses(root: Path) -> dict[int, float]:
        logs = sorted(root.glob("lightning_logs/version_*/metrics.csv"))
        rows = [row for log in logs for row in csv.DictReader(log.open()) if row.get("train_loss")]
        return {int(row["step"]): float(row["train_loss"]) for row in rows}

    fit(tmp_path / "whole", 6)
    for steps in (2, 4, 6):  # 12 batches an epoch: all within the first
        fit(tmp_path / "stopped", steps)
    whole, stopped = losses(tmp_path / "whole"), losses(tmp_path / "stopped")
    assert sorted(stopped) == sorted(whole) == list(range(6))
    for step, loss in whole.items():
        assert stopped[step] == pytest.approx(loss, rel=1e-4), f"update {step + 1}"


def test_checkpoints_are_written_atomically_and_a_printed_config_runs_again(corpus, tmp_path, capsys):
    from asr.training import AtomicCheckpointIO, RandomState

    args = _fit_args(corpus, tmp_path / "a", "--trainer.fast_dev_run", "1")
    trainer = cli.lightning_cli(args).trainer
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert any(isinstance(c, RandomState) for c in trainer.callbacks)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.lightning_cli([*args, "--print_config"])
    config = tmp_path / "config.yaml"
    config.write_text(capsys.readouterr().out)
    root = str(tmp_path / "b")
    trainer = cli.lightning_cli(["fit", "--config", str(config), "--trainer.default_root_dir", root]).trainer
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
