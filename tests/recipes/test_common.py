"""recipes/common.py."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.audio.utils import AudioLoadingError

from recipes import common
from tests.recipes.helpers import write_tone


def make_cut(cut_id: str, text: str, duration: float) -> CutSet:
    """A one-cut CutSet whose recording is a (never read) file of ``duration`` seconds."""
    recording = Recording.from_dict(
        {
            "id": cut_id,
            "sources": [{"type": "file", "channels": [0], "source": f"/nowhere/{cut_id}.wav"}],
            "sampling_rate": 16000,
            "num_samples": int(duration * 16000),
            "duration": duration,
        }
    )
    segment = SupervisionSegment(cut_id, cut_id, 0.0, duration, channel=0, text=text)
    return common.make_cuts([recording], [segment])


def test_make_cuts_normalises_and_keeps_the_original_text():
    (cut,) = make_cut("a", "Mr. Smith paid $5, didn't he?", 1.0)
    (segment,) = cut.supervisions
    assert segment.text == "mr smith paid five dollars didn't he"
    assert segment.custom["orig_text"] == "Mr. Smith paid $5, didn't he?"


def test_make_cuts_normalises_the_chosen_text():
    recording = make_cut("a", "x", 1.0)[0].recording
    segment = SupervisionSegment("a", "a", 0.0, 1.0, text="Dr. X", custom={"expanded": "Doctor X"})
    (cut,) = common.make_cuts([recording], [segment], text_of=lambda s: s.custom["expanded"])
    assert cut.supervisions[0].text == "doctor x" and cut.supervisions[0].custom["orig_text"] == "Dr. X"


@pytest.mark.parametrize(
    "text, duration, split, reason",
    [
        ("hello", 1.0, "train", None),
        ("...", 1.0, "train", "empty text"),
        ("hello", 0.1, "train", "shorter than 0.2 s"),
        ("hello", 31.0, "train", "longer than 30 s"),
        ("hello", 0.1, "test", None),
        ("hello", 31.0, "test", None),
        ("", 5.0, "test", "empty text"),
    ],
)
def test_drop_reason(text, duration, split, reason):
    (cut,) = make_cut("a", text, duration)
    duration_range = common.TRAIN_DURATION if split == "train" else common.EVAL_DURATION
    assert common.drop_reason(cut, duration_range, common.SkipLog()) == reason


def test_drop_reason_of_a_skipped_recording():
    skipped = common.SkipLog()
    skipped.add("/x/a.flac", "damaged", recording_id="a")
    (cut,) = make_cut("a", "hello", 1.0)
    assert common.drop_reason(cut, common.TRAIN_DURATION, skipped) == "unreadable audio"


def test_write_splits_filters_sorts_summarises_and_reports(tmp_path, capsys):
    train = make_cut("b", "hello there", 2.0) + make_cut("a", "hi", 1.0) + make_cut("c", "!", 1.0)
    skipped = common.SkipLog()
    skipped.add(tmp_path / "bad.flac", "not a readable audio file (Format not recognised)")
    out = tmp_path / "data" / "new"
    paths = common.write_splits(out, {"train": train, "test": make_cut("t", "x", 0.1)}, skipped)
    assert paths == {"train": out / "cuts_train.jsonl.gz", "test": out / "cuts_test.jsonl.gz"}
    assert [cut.id for cut in CutSet.from_file(paths["train"])] == ["a-0", "b-0"]
    printed = capsys.readouterr().out
    assert "train: 2 utterances, 0.00 h, dropped 1 empty text" in printed and "test: 1 utterances" in printed
    assert "1 input files skipped" in printed
    report = (out / "skipped.txt").read_text()
    assert report == f"{tmp_path / 'bad.flac'}\tnot a readable audio file (Format not recognised)\n"
    assert not list(out.glob(".partial-*"))


def test_write_splits_writes_nothing_when_a_split_is_empty(tmp_path):
    with pytest.raises(common.CorpusError, match="no usable utterances for the dev split"):
        splits = {"train": make_cut("a", "hi", 1.0), "dev": make_cut("b", "", 1.0)}
        common.write_splits(tmp_path, splits, common.SkipLog())
    assert [path.name for path in tmp_path.iterdir()] == ["skipped.txt"]


def test_write_atomically_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "cuts_train.jsonl.gz"
    path.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        common.write_atomically(path, fail)
    assert path.read_text() == "old"


def test_existing_manifests(tmp_path, capsys):
    assert common.existing_manifests(tmp_path, ["train", "test"]) is None
    for split in ("train", "test"):
        common.manifest_path(tmp_path, split).write_text("")
    assert common.existing_manifests(tmp_path, ["train", "test"]) == {
        "train": tmp_path / "cuts_train.jsonl.gz",
        "test": tmp_path / "cuts_test.jsonl.gz",
    }
    assert "nothing to do" in capsys.readouterr().out


def test_split_by_key_is_seeded_disjoint_and_complete():
    cuts = CutSet.from_cuts(c for i in range(100) for c in make_cut(f"u{i:03d}", "hi", 1.0))
    splits = common.split_by_key(cuts, lambda c: c.recording_id, {"dev": 0.05, "test": 0.1}, seed=0)
    ids = {split: {c.id for c in part} for split, part in splits.items()}
    assert {split: len(part) for split, part in ids.items()} == {"train": 85, "dev": 5, "test": 10}
    assert set().union(*ids.values()) == {c.id for c in cuts}
    again = common.split_by_key(cuts.shuffle(), lambda c: c.recording_id, {"dev": 0.05, "test": 0.1}, seed=0)
    assert {split: {c.id for c in part} for split, part in again.items()} == ids
    other = common.split_by_key(cuts, lambda c: c.recording_id, {"dev": 0.05, "test": 0.1}, seed=1)
    assert {c.id for c in other["dev"]} != ids["dev"]


def test_split_by_key_gives_each_split_at_least_one_and_refuses_too_few():
    cuts = CutSet.from_cuts(c for i in range(3) for c in make_cut(f"u{i}", "hi", 1.0))
    splits = common.split_by_key(cuts, lambda c: c.id, {"dev": 0.01, "test": 0.01}, seed=0)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [1, 1, 1]
    with pytest.raises(common.CorpusError, match="too few"):
        common.split_by_key(cuts[:2], lambda c: c.id, {"dev": 0.01, "test": 0.01}, seed=0)


def test_locate_finds_the_corpus_in_the_download_folder(tmp_path):
    (tmp_path / "Corpus" / "wavs").mkdir(parents=True)
    assert common.locate(tmp_path, ["wavs"], "Corpus/wavs", inside=("Corpus",)) == tmp_path / "Corpus"
    assert common.locate(tmp_path / "Corpus", ["wavs"], "Corpus/wavs") == tmp_path / "Corpus"
    with pytest.raises(common.CorpusError, match=r"is not laid out as expected: expected Corpus/wavs"):
        common.locate(tmp_path, ["wavs"], "Corpus/wavs")
    with pytest.raises(common.CorpusError, match="nope is not a folder"):
        common.locate(tmp_path / "nope", ["wavs"], "Corpus/wavs")


def test_locate_refuses_to_guess_between_two_releases(tmp_path):
    for release in ("cv-corpus-9.0", "cv-corpus-17.0"):
        (tmp_path / release / "en").mkdir(parents=True)
    with pytest.raises(common.CorpusError, match="holds 2 corpora"):
        common.locate(tmp_path, ["en"], "cv-corpus-*/en", inside=("cv-corpus-*",))
    assert (
        common.locate(tmp_path / "cv-corpus-9.0", ["en"], "x", inside=("cv-corpus-*",)).name
        == "cv-corpus-9.0"
    )


def test_unreadable_reason(tmp_path):
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"not audio at all")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert common.unreadable_reason(tmp_path / "missing.wav", ValueError("x")) == "no such file"
    assert common.unreadable_reason(empty, ValueError("x")) == "empty file (0 bytes)"
    assert common.unreadable_reason(garbage, ValueError("x")).startswith("not a readable audio file (")
    good = write_tone(tmp_path / "good.wav", 0.5)
    assert common.unreadable_reason(good, ValueError("first line\nsecond")) == "first line"


def test_read_recording_logs_what_it_cannot_read(tmp_path):
    skipped = common.SkipLog()
    good = write_tone(tmp_path / "good.flac", 0.5)
    assert common.read_recording(good, "good", skipped).duration == 0.5
    (tmp_path / "bad.flac").write_bytes(b"junk")
    assert common.read_recording(tmp_path / "bad.flac", "bad", skipped) is None
    assert [path for path, _ in skipped.entries] == [str(tmp_path / "bad.flac")]


def test_tolerate_unreadable_audio_stands_in_and_restores(tmp_path):
    module = SimpleNamespace(Recording=Recording)
    (tmp_path / "bad.flac").write_bytes(b"junk")
    good = write_tone(tmp_path / "good.flac", 0.5)
    skipped = common.SkipLog()
    with common.tolerate_unreadable_audio(module, skipped):
        assert module.Recording.from_file(good).id == "good"
        stand_in = module.Recording.from_file(path=tmp_path / "bad.flac", recording_id="utt-1")
    assert stand_in.id == "utt-1" and skipped.recording_ids == {"utt-1"}
    assert skipped.entries[0][0] == str(tmp_path / "bad.flac")
    assert module.Recording is Recording
    with pytest.raises(AudioLoadingError):
        module.Recording.from_file(tmp_path / "bad.flac")


def test_run_passes_the_options_and_turns_a_corpus_error_into_one_line(tmp_path, capsys):
    calls = []

    def prepare(corpus_dir, out_dir, seed=0):
        calls.append((corpus_dir, out_dir, seed))
        raise common.CorpusError(f"{corpus_dir} is not a folder: expected x/y")

    with pytest.raises(SystemExit) as exit_info:
        common.run(prepare, tmp_path / "x", tmp_path / "out", seed=3)
    assert exit_info.value.code == 1 and calls == [(tmp_path / "x", tmp_path / "out", 3)]
    assert capsys.readouterr().err == f"error: {tmp_path / 'x'} is not a folder: expected x/y\n"


def test_run_without_a_corpus_needs_manifests_made_before(tmp_path, capsys):
    def prepare(corpus_dir, out_dir):
        raise AssertionError("not called without a corpus folder")

    with pytest.raises(SystemExit) as exit_info:
        common.run(prepare, None, tmp_path)
    assert exit_info.value.code == 1 and "--corpus-dir" in capsys.readouterr().err
    for split in ("train", "dev", "test"):
        common.manifest_path(tmp_path, split).write_text("")
    common.run(prepare, None, tmp_path)
    assert "nothing to do" in capsys.readouterr().out


def test_argument_parser():
    parser = common.argument_parser("demo", "demo")
    args = parser.parse_args(["--corpus-dir", "a", "--out", "b"])
    assert (args.corpus_dir, args.out) == (Path("a"), Path("b"))
    assert parser.parse_args(["--out", "b"]).corpus_dir is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--corpus-dir", "a"])


def test_jobs_default_to_the_cores_this_process_may_use(monkeypatch):
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5}, raising=False)
    assert common.available_cores() == 2  # a container's or taskset's share, not the machine's 64
    monkeypatch.delattr(os, "sched_getaffinity")
    assert common.available_cores() == 64
