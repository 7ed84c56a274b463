"""The Common Voice recipe on a tiny release in Common Voice's own layout (espeak-ng speech as MP3)."""

import hashlib
from pathlib import Path

import pytest
import soundfile as sf
from lhotse import CutSet

from asr.text import normalize_text
from recipes.commonvoice.prepare import main, prepare
from tests.recipes.helpers import (
    assert_clear_error,
    fit_one_step,
    needs_espeak,
    print_config,
    run_main,
    speak,
)

pytestmark = needs_espeak

# The header of the tsv files of Common Voice 17.0 and later.
HEADER = (
    "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents"
    "\tvariant\tlocale\tsegment"
)
SENTENCES = {
    "train": ["The 2nd floor is closed.", "Please call Stella.", "Ask her to bring these things with her."],
    "dev": ["She can scoop these things into three red bags.", "We also need a small plastic snake."],
    "test": ['He said "goodbye" & left.', "Six spoons of fresh snow peas."],
}
RELEASE = "cv-corpus-17.0-2024-03-15"


def row(clip: str, sentence: str, rate: int) -> str:
    """One tsv line as Common Voice writes it (a client hash, votes, demographics)."""
    client = hashlib.sha256(clip.encode()).hexdigest()
    sentence_id = hashlib.sha256(sentence.encode()).hexdigest()
    gender = "male_masculine" if rate == 48000 else ""
    fields = [
        client,
        clip,
        sentence_id,
        sentence,
        "",
        "2",
        "0",
        "twenties",
        gender,
        "United States English",
        "",
        "en",
        "",
    ]
    return "\t".join(fields)


def make_release(download: Path) -> Path:
    """``download/cv-corpus-17.0-.../en/`` with clips/*.mp3 (48 and 32 kHz) and the split tsv files."""
    lang = download / RELEASE / "en"
    (lang / "clips").mkdir(parents=True)
    tables: dict[str, list[str]] = {}
    for split, sentences in SENTENCES.items():
        for sentence in sentences:
            number = 1000 + sum(len(rows) for rows in tables.values())
            clip, rate = f"common_voice_en_{number}.mp3", 48000 if number % 2 else 32000
            sf.write(lang / "clips" / clip, speak(normalize_text(sentence), rate), rate, format="MP3")
            tables.setdefault(split, []).append(row(clip, sentence, rate))
    tables["validated"] = [line for split in SENTENCES for line in tables[split]]
    for name, rows in tables.items():
        (lang / f"{name}.tsv").write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return download


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    download = make_release(tmp_path_factory.mktemp("download"))
    out = tmp_path_factory.mktemp("data")
    return download, out, prepare(download, out, num_jobs=2)


def test_manifests_hold_the_official_splits(prepared):
    _, out, manifests = prepared
    assert set(manifests) == {"train", "dev", "test"}
    for split, path in manifests.items():
        cuts = CutSet.from_file(path)
        assert len(cuts) == len(SENTENCES[split])
        assert sorted(c.supervisions[0].custom["orig_text"] for c in cuts) == sorted(SENTENCES[split])
        for cut in cuts:
            (segment,) = cut.supervisions
            assert segment.text == normalize_text(segment.custom["orig_text"]) != ""
            assert segment.language == "en" and len(segment.speaker) == 64
            assert cut.sampling_rate in (32000, 48000) and cut.duration > 0.2
            assert cut.load_audio().shape == (1, cut.num_samples)
    texts = {c.supervisions[0].text for c in CutSet.from_file(manifests["test"])}
    assert "he said goodbye and left" in texts
    assert (out / "skipped.txt").read_text() == ""
    assert not list(out.glob(".lhotse-*"))


def test_second_run_does_nothing(prepared, capsys):
    download, out, manifests = prepared
    before = {path: path.stat().st_mtime_ns for path in manifests.values()}
    assert prepare(download / RELEASE, out) == manifests
    assert {path: path.stat().st_mtime_ns for path in manifests.values()} == before
    assert "nothing to do" in capsys.readouterr().out


def test_unreadable_clip_is_reported_and_the_rest_prepared(tmp_path, capsys):
    download = make_release(tmp_path / "download")
    broken = download / RELEASE / "en" / "clips" / "common_voice_en_1001.mp3"
    broken.write_bytes(b"")
    manifests = prepare(download, tmp_path / "data")
    assert len(CutSet.from_file(manifests["train"])) == len(SENTENCES["train"]) - 1
    assert (tmp_path / "data" / "skipped.txt").read_text() == f"{broken}\tempty file (0 bytes)\n"
    assert "dropped 1 unreadable audio" in capsys.readouterr().out


def test_missing_or_misplaced_corpus_is_one_line_error(tmp_path, capsys):
    assert_clear_error(main, tmp_path / "nowhere", tmp_path / "out", capsys)
    (tmp_path / "cv-corpus-17.0" / "fr" / "clips").mkdir(parents=True)
    assert_clear_error(main, tmp_path, tmp_path / "out", capsys)


def test_release_without_the_columns_lhotse_reads_is_one_line_error(tmp_path, capsys):
    download = make_release(tmp_path / "download")
    train = download / RELEASE / "en" / "train.tsv"
    train.write_text(train.read_text().replace("\tvariant", "\tdialect"))
    code, err = run_main(main, ["--corpus-dir", str(download), "--out", str(tmp_path / "out")], capsys)
    assert code == 1 and err.count("\n") == 1 and str(train) in err and "variant" in err


def test_one_training_step_with_the_recipe_config(prepared, tmp_path):
    fit_one_step("commonvoice", prepared[2], tmp_path)


def test_configs_parse(capsys):
    cpu = print_config("commonvoice", "config.yaml", capsys)
    assert "train_cuts: data/commonvoice/cuts_train.jsonl.gz" in cpu
    gpu = print_config("commonvoice", "config_gpu.yaml", capsys)
    assert "hidden_size: 800" in gpu and "precision: bf16-mixed" in gpu
