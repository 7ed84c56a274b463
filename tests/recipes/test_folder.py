"""The folder recipe: nested clips in several formats with .txt transcripts, or a .tsv/.csv list."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from recipes.folder.prepare import main, prepare
from tests.recipes.helpers import (
    assert_clear_error,
    fit_one_step,
    needs_espeak,
    print_config,
    run_main,
    speak,
)

pytestmark = needs_espeak

# clip -> (transcript, sample rate, channels, soundfile format)
CLIPS = {
    "hello.wav": ("Hello world.", 16000, 1, "WAV"),
    "meeting/notes-01.flac": ("The meeting starts at 10.", 44100, 2, "FLAC"),
    "meeting/notes-02.ogg": ("Bring the blue folder, please!", 48000, 1, "OGG"),
    "meeting/day2/memo.mp3": ("Call me back tomorrow", 22050, 1, "MP3"),
    "meeting/day2/notes-01.wav": ("Same name, other folder", 8000, 1, "WAV"),
    "shopping/list.wav": ("Milk, eggs & bread", 16000, 1, "WAV"),
}


def write_clip(path: Path, text: str, rate: int, channels: int, fmt: str) -> None:
    """espeak-ng saying ``text`` stored as the given format, rate and channel count."""
    samples = speak(text, rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([samples] * channels, axis=1) if channels > 1 else samples, rate, format=fmt)


def make_folder(root: Path) -> Path:
    """The clips of CLIPS with .txt beside each, plus a damaged clip, one without a transcript,
    one with an empty transcript and a text file that is no transcript."""
    for name, (text, rate, channels, fmt) in CLIPS.items():
        write_clip(root / name, text, rate, channels, fmt)
        (root / name).with_suffix(".txt").write_text(text + "\n")
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "broken.txt").write_text("this clip is damaged")
    write_clip(root / "meeting" / "untranscribed.flac", "no words here", 16000, 1, "FLAC")
    write_clip(root / "shopping" / "silent.wav", "nothing", 16000, 1, "WAV")
    (root / "shopping" / "silent.txt").write_text("  \n")
    (root / "README.txt").write_text("my recordings\n")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("recordings"))
    out = tmp_path_factory.mktemp("data")
    return root, out, prepare(root, out)


def test_manifests_split_the_transcribed_clips(prepared):
    root, out, manifests = prepared
    cuts = {split: CutSet.from_file(path) for split, path in manifests.items()}
    assert {split: len(part) for split, part in cuts.items()} == {"train": 4, "dev": 1, "test": 1}
    by_id = {cut.recording_id: cut for part in cuts.values() for cut in part}
    assert sorted(by_id) == sorted(CLIPS)
    for name, (text, rate, channels, _) in CLIPS.items():
        cut = by_id[name]
        assert cut.supervisions[0].custom["orig_text"] == text and cut.supervisions[0].text
        assert cut.sampling_rate == rate and cut.duration > 0.2
        assert cut.load_audio().shape == (channels, cut.num_samples)
    assert by_id["shopping/list.wav"].supervisions[0].text == "milk eggs and bread"


def test_skipped_clips_are_listed_with_the_reason(prepared):
    root, out, _ = prepared
    lines = (out / "skipped.txt").read_text().splitlines()
    reasons = dict(line.split("\t") for line in lines)
    assert reasons.keys() == {
        str(root / "broken.wav"),
        str(root / "meeting" / "untranscribed.flac"),
        str(root / "shopping" / "silent.wav"),
    }
    assert reasons[str(root / "broken.wav")].startswith("not a readable audio file")
    untranscribed = reasons[str(root / "meeting" / "untranscribed.flac")]
    assert untranscribed == "no transcript (untranscribed.txt not found beside it)"
    assert reasons[str(root / "shopping" / "silent.wav")] == "empty transcript (silent.txt)"


def test_second_run_does_nothing(prepared, capsys):
    root, out, manifests = prepared
    before = {path: path.stat().st_mtime_ns for path in manifests.values()}
    assert prepare(root, out) == manifests
    assert {path: path.stat().st_mtime_ns for path in manifests.values()} == before
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, lines",
    [
        (
            "list.tsv",
            ["path\ttext", "audio/hello.wav\tHello world.", 'audio/meeting/notes-02.ogg\tShe said "no"'],
        ),
        ("list.csv", ["audio/hello.wav,Hello world.", 'audio/meeting/notes-02.ogg,"Bring it, please"']),
    ],
)
def test_list_variant(prepared, tmp_path, name, lines):
    root, _, _ = prepared
    (tmp_path / "audio").symlink_to(root)
    good = ["audio/shopping/list.wav\tMilk", "audio/meeting/day2/memo.mp3\tCall me"]
    bad = [
        "audio/missing.wav\tnot there",
        "audio/broken.wav\tdamaged",
        "audio/meeting/day2/notes-01.wav\t",
        "",
    ]
    rows = lines + [line.replace("\t", ",") if name.endswith(".csv") else line for line in good + bad]
    (tmp_path / name).write_text("\n".join(rows) + "\n")
    manifests = prepare(tmp_path, tmp_path / "data", list_file=name)
    cuts = {cut.recording_id: cut for path in manifests.values() for cut in CutSet.from_file(path)}
    listed = ["hello.wav", "meeting/notes-02.ogg", "shopping/list.wav", "meeting/day2/memo.mp3"]
    assert sorted(cuts) == sorted(f"audio/{name}" for name in listed)
    expected = "she said no" if name.endswith(".tsv") else "bring it please"
    assert cuts["audio/meeting/notes-02.ogg"].supervisions[0].text == expected
    reasons = dict(line.split("\t") for line in (tmp_path / "data" / "skipped.txt").read_text().splitlines())
    assert reasons[str(tmp_path / "audio/missing.wav")] == "no such file"
    assert reasons[str(tmp_path / "audio/broken.wav")].startswith("not a readable audio file")
    assert reasons[str(tmp_path / "audio/meeting/day2/notes-01.wav")].startswith(
        f"empty transcript ({name} line"
    )


def test_missing_folder_or_list_is_one_line_error(tmp_path, capsys):
    assert_clear_error(main, tmp_path / "nowhere", tmp_path / "out", capsys)
    argv = ["--corpus-dir", str(tmp_path), "--out", str(tmp_path / "out"), "--list", "x.tsv"]
    code, err = run_main(main, argv, capsys)
    assert code == 1 and err.count("\n") == 1 and str(tmp_path / "x.tsv") in err


def test_folder_without_usable_clips_is_one_line_error(tmp_path, capsys):
    (tmp_path / "lonely.wav").write_bytes(b"")
    code, err = run_main(main, ["--corpus-dir", str(tmp_path), "--out", str(tmp_path / "out")], capsys)
    assert code == 1 and err.count("\n") == 1 and "no readable clip" in err
    assert "lonely.wav\tno transcript" in (tmp_path / "out" / "skipped.txt").read_text()


def test_one_training_step_with_the_recipe_config(prepared, tmp_path):
    fit_one_step("folder", prepared[2], tmp_path)


def test_config_parses(capsys):
    assert "train_cuts: data/folder/cuts_train.jsonl.gz" in print_config("folder", "config.yaml", capsys)
