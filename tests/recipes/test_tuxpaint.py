"""The tuxpaint recipe on a tiny copy of tuxpaint-stamps-default's layout (dpkg-deb -x).

Each stamp folder holds ``<stamp>.png``, ``<stamp>.txt`` (English first line, then
``<locale>.utf8=`` translations), the English description ``<stamp>_desc.ogg`` and other
languages' ``<stamp>_desc_<locale>.ogg``; some description clips have no text beside them.
espeak-ng speaks the descriptions, at the package's 44.1 and 8 kHz.
"""

from pathlib import Path

import pytest
import soundfile as sf
from lhotse import CutSet

from recipes.tuxpaint import prepare as tuxpaint
from tests.recipes.helpers import assert_clear_error, needs_espeak, run_main, speak

pytestmark = needs_espeak
# folder -> {stamp: (text file or None, rate)}
STAMPS = {
    "animals/mammals/bovines": {"yak": ("A yak.\nfr.utf8=Un yack.\n", 44100), "zebu": ("A zebu.\n", 8000)},
    "animals/marsupials": {
        "kangaroo": ("A red kangaroo.\nde.utf8=Ein Känguru.\n", 44100),
        "wallaby": (None, 44100),
    },
    "animals/birds": {"owl": ("fr.utf8=Un hibou.\n", 44100), "crow": ("Two crows.\n", 44100)},
}


def make_package(root: Path) -> Path:
    for folder, stamps in STAMPS.items():
        directory = root / tuxpaint.STAMPS / folder
        directory.mkdir(parents=True)
        for stamp, (text, rate) in stamps.items():
            (directory / f"{stamp}.png").write_bytes(b"\x89PNG")
            if text is not None:
                (directory / f"{stamp}.txt").write_text(text, encoding="utf-8")
            spoken = (text or f"A {stamp}.").splitlines()[0].split("=")[-1]
            sf.write(
                directory / f"{stamp}_desc.ogg", speak(spoken, rate), rate, format="OGG", subtype="VORBIS"
            )
            sf.write(directory / f"{stamp}_desc_fr.ogg", speak("Un animal.", rate), rate, format="OGG")
    # A clip that is not audio.
    (root / tuxpaint.STAMPS / "animals/birds/crow_desc.ogg").write_bytes(b"OggS but not really")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    package = make_package(tmp_path_factory.mktemp("package"))
    out = tmp_path_factory.mktemp("data") / "tuxpaint"
    return package, out, tuxpaint.prepare(out, corpus_dir=package)


def test_english_description_clips_become_a_test_set(prepared):
    _, out, manifests = prepared
    assert set(manifests) == {"test_tuxpaint"}
    cuts = sorted(CutSet.from_file(manifests["test_tuxpaint"]), key=lambda c: c.recording_id)
    assert [(c.recording_id, c.supervisions[0].text) for c in cuts] == [
        ("tuxpaint-animals-mammals-bovines-yak", "a yak"),
        ("tuxpaint-animals-mammals-bovines-zebu", "a zebu"),
        ("tuxpaint-animals-marsupials-kangaroo", "a red kangaroo"),
    ]
    assert {c.sampling_rate for c in cuts} == {44100, 8000}
    assert all(c.supervisions[0].duration == pytest.approx(c.duration) and c.duration > 0.3 for c in cuts)
    assert cuts[2].supervisions[0].custom["orig_text"] == "A red kangaroo."


def test_clips_without_an_english_text_or_readable_audio_are_listed_in_skipped(prepared):
    _, out, _ = prepared
    skipped = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())
    reasons = {Path(path).name: reason for path, reason in skipped.items()}
    assert set(reasons) == {"wallaby_desc.ogg", "owl_desc.ogg", "crow_desc.ogg"}
    assert "no text file wallaby.txt" in reasons["wallaby_desc.ogg"]
    assert "no English first line" in reasons["owl_desc.ogg"]
    assert reasons["crow_desc.ogg"]  # unreadable audio, with the reason


def test_a_second_run_does_nothing(prepared):
    package, out, manifests = prepared
    before = manifests["test_tuxpaint"].stat().st_mtime_ns
    assert tuxpaint.prepare(out, corpus_dir=package) == manifests
    assert manifests["test_tuxpaint"].stat().st_mtime_ns == before


def test_a_folder_without_the_package_or_without_clips_is_a_clear_error(tmp_path, capsys):
    assert_clear_error(tuxpaint.main, tmp_path / "nothing", tmp_path / "out", capsys)
    (tmp_path / "empty" / tuxpaint.STAMPS).mkdir(parents=True)
    code, err = run_main(
        tuxpaint.main, ["--corpus-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 1 and "no description clip" in err and "Traceback" not in err
    assert not list((tmp_path / "o").glob("cuts_*"))
