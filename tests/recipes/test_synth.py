import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet

from asr.cli import main
from asr.text import normalize_text
from recipes.synth import augment, prepare, text, voices
from tests.recipes.helpers import REPO


def test_fortune_paragraphs_drop_attributions_and_overstrike(tmp_path):
    (tmp_path / "fortunes").write_text("A _\bbold move.\n\t-- Somebody\n%\nSecond one here.\n%\n")
    (tmp_path / "fortunes.dat").write_bytes(b"\x00index")
    assert text.fortune_paragraphs(tmp_path) == ["A bold move.", "Second one here.", ""]


def test_wordnet_examples_are_the_quoted_glosses(tmp_path):
    header = '  1 This software and database is provided "as is" and so on\n'
    entry = (
        '00002724 29 v 01 choke 0 002 | breathe with difficulty; "She choked with emotion when she spoke"\n'
    )
    for part in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{part}").write_text(header + (entry if part == "verb" else ""))
    assert text.wordnet_examples(tmp_path) == ["She choked with emotion when she spoke"]


def test_wordnet_definitions_are_the_glosses_without_examples(tmp_path):
    entry = '00002724 29 v 01 choke 0 002 | breathe with difficulty; gasp; "She choked with emotion"\n'
    for part in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{part}").write_text(entry if part == "verb" else "")
    assert text.wordnet_definitions(tmp_path) == ["breathe with difficulty", "gasp"]


def test_sentences_keep_phrasing_for_speech_and_normalise_transcripts():
    pairs = text.sentences(['Well, I paid $5 for it; 3 times! Too short. Then "he left" quietly.'])
    assert pairs[0] == (
        "well, i paid five dollars for it, three times!",
        normalize_text("Well, I paid $5 for it; 3 times!"),
    )
    assert all(normalize_text(spoken) == transcript for spoken, transcript in pairs)
    assert "too short" not in [t for _, t in pairs]  # fewer than three words


def test_missing_text_package_names_the_package(tmp_path):
    with pytest.raises(text.MissingPackage, match="apt-get install fortunes"):
        text.fortune_paragraphs(tmp_path)


@pytest.mark.parametrize(
    "engine, name",
    [("espeak", "en-gb-scotland+m3"), ("festival", "kal_diphone"), ("flite", "kal16"), ("flite", "awb")],
)
def test_every_engine_speaks_and_follows_rate(engine, name):
    slow, fast = voices.render(
        [("a short test sentence.", voices.Voice(engine, name, rate=r)) for r in (1.3, 0.8)]
    )
    assert slow[0].dtype == np.float32 and np.abs(slow[0]).max() > 0.05
    assert len(slow[0]) / slow[1] > 1.2 * len(fast[0]) / fast[1]


def test_render_refuses_mixed_voices():
    with pytest.raises(ValueError, match="one engine"):
        voices.render([("a", voices.Voice("flite", "kal16")), ("b", voices.Voice("espeak", "en-us"))])
    with pytest.raises(ValueError, match="one festival voice"):
        voices.render(
            [("a", voices.Voice("festival", "kal_diphone")), ("b", voices.Voice("festival", "ked_diphone"))]
        )


def _tone(seconds=1.0, hz=440.0):
    t = np.arange(int(seconds * augment.SAMPLE_RATE)) / augment.SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("colour", sorted(augment.NOISE_COLOURS))
def test_noise_is_mixed_at_the_requested_snr(colour):
    clean = _tone()
    noisy = augment.apply(clean, augment.Effects(noise=colour, snr_db=10.0, seed=3), [], [])
    noise = noisy - clean
    assert 10 * np.log10(np.mean(clean**2) / np.mean(noise**2)) == pytest.approx(10.0, abs=0.1)


def test_vocal_tract_factor_scales_frequencies_and_duration():
    out = augment.apply(_tone(1.0, 400.0), augment.Effects(vtl=1.1), [], [])
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * augment.SAMPLE_RATE / len(out)
    assert len(out) == pytest.approx(augment.SAMPLE_RATE / 1.1, rel=0.01)
    assert peak_hz == pytest.approx(440.0, rel=0.01)


def test_telephone_channel_removes_low_and_high_frequencies():
    mixed = _tone(1.0, 100.0) + _tone(1.0, 1000.0) + _tone(1.0, 6000.0)
    spectrum = np.abs(np.fft.rfft(augment.apply(mixed, augment.Effects(channel="telephone"), [], [])))
    at = lambda hz: spectrum[int(hz)]  # 1 s of audio: one bin per Hz  # noqa: E731
    assert at(1000) > 30 * at(100) and at(1000) > 30 * at(6000)


def test_gain_sets_the_peak_level_and_identity_changes_nothing():
    tone = _tone()
    assert np.abs(augment.apply(tone, augment.Effects(gain_db=-20.0), [], [])).max() == pytest.approx(
        0.1, rel=1e-3
    )
    np.testing.assert_array_equal(augment.apply(tone, augment.Effects(), [], []), tone)


def test_draws_are_reproducible_and_cover_every_effect():
    config = augment.AugmentConfig()
    first = [augment.draw(np.random.default_rng([0, i]), config) for i in range(300)]
    again = [augment.draw(np.random.default_rng([0, i]), config) for i in range(300)]
    assert first == again
    assert {fx.noise for fx in first} >= {"music", "white", "pink", "brown", None}
    assert {fx.channel for fx in first} == {"telephone", "lowpass", None}
    assert any(fx.room is not None for fx in first) and any(fx.vtl != 1.0 for fx in first)


def test_the_room_bank_is_the_same_every_time_and_leaves_torch_as_it_was():
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    first = augment.make_rooms(4, seed=0)
    assert torch.rand(1) == expected and not torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = augment.make_rooms(4, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0][: len(first[1])], first[1][: len(first[0])])


SENTENCES = [
    (f"sentence number {n}, spoken.", f"sentence number {normalize_text(str(n))} spoken") for n in range(40)
]


@pytest.fixture
def tiny_recipe(monkeypatch):
    monkeypatch.setattr(text, "read_all", lambda: {"fixture": SENTENCES})
    # LM text: the corpus sentences, each also inside a longer line, and one definition.
    lm_lines = [t for _, t in SENTENCES] + [f"he said {t} twice" for _, t in SENTENCES] + ["a definition"]
    monkeypatch.setattr(text, "lm_sentences", lambda: lm_lines)
    monkeypatch.setattr(prepare, "RESERVED", {"dev": 4, "test": 4})
    monkeypatch.setitem(prepare.SIZES, "tiny", {"train": 6, "dev": 2, "test": 2})
    monkeypatch.setitem(prepare.SIZES, "bigger", {"train": 9, "dev": 2, "test": 2})
    monkeypatch.setattr(augment.AugmentConfig, "rooms", 3)


def _texts(path) -> set[str]:
    return {c.supervisions[0].text for c in CutSet.from_file(path)}


def test_prepare_makes_disjoint_splits_with_held_out_voices(tiny_recipe, tmp_path):
    manifests = prepare.prepare(tmp_path, size="tiny", workers=1)
    cuts = {split: list(CutSet.from_file(path)) for split, path in manifests.items()}
    assert {s: len(c) for s, c in cuts.items()} == {"train": 6, "dev": 2, "test": 2, "test_unseen_voice": 2}
    assert not _texts(manifests["train"]) & (_texts(manifests["dev"]) | _texts(manifests["test"]))
    assert _texts(manifests["test_unseen_voice"]) == _texts(manifests["test"])
    held_out = {f"flite:{v}" for v in voices.HELD_OUT_VOICES}
    assert {c.supervisions[0].speaker for c in cuts["test_unseen_voice"]} == held_out
    assert not {c.supervisions[0].speaker for s in ("train", "dev", "test") for c in cuts[s]} & held_out
    for cut in cuts["train"] + cuts["test_unseen_voice"]:
        audio = cut.load_audio()
        assert cut.sampling_rate == 16000 and audio.shape[1] > 8000 and np.abs(audio).max() > 0.01
    assert all(c.supervisions[0].custom["effects"] == {"seed": 0, "vtl": 1.0} for c in cuts["test"])
    assert json.loads((tmp_path / "summary.json").read_text())["train"]["clips"] == 6
    # LM text: every training sentence (also those no clip speaks) and the other lines, less
    # those that hold a dev or test sentence.
    lm_text = (tmp_path / "lm" / "train.txt").read_text().splitlines()
    train = [
        t
        for _, t in SENTENCES
        if t not in {t for s in ("dev", "test") for _, t in prepare._read_text(tmp_path, s)}
    ]
    assert len(train) == 40 - 8 and len(lm_text) == 2 * len(train) + 1
    assert set(lm_text) == set(train) | {f"he said {t} twice" for t in train} | {"a definition"}
    assert (tmp_path / "lm" / "dev.txt").read_text().splitlines() == [
        t for _, t in prepare._read_text(tmp_path, "dev")
    ]
    assert (tmp_path / "lm" / "words.arpa").read_text().startswith("\\data\\")


def test_prepare_resumes_and_grows_without_rendering_twice(tiny_recipe, tmp_path):
    manifests = prepare.prepare(tmp_path, size="tiny", workers=1)
    flacs = sorted(tmp_path.glob("audio/**/*.flac"))
    mtimes = {p: p.stat().st_mtime_ns for p in flacs}
    flacs[0].unlink()  # an interrupted run: one clip and one manifest missing
    manifests["dev"].unlink()
    prepare.prepare(tmp_path, size="tiny", workers=1)
    assert flacs[0].exists() and manifests["dev"].exists()
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in flacs[1:])
    prepare.prepare(tmp_path, size="bigger", workers=1)
    assert len(list(CutSet.from_file(manifests["train"]))) == 9
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in flacs[1:])
    assert not list(tmp_path.rglob(".partial-*"))


def test_editing_the_recipe_re_renders_only_the_clips_it_changes(tiny_recipe, tmp_path, monkeypatch):
    manifests = prepare.prepare(tmp_path, size="tiny", workers=1)
    flacs = sorted(tmp_path.glob("audio/**/*.flac"))
    mtimes = {p: p.stat().st_mtime_ns for p in flacs}
    monkeypatch.setattr(prepare, "PITCH", (1.4, 1.5))  # every seen-voice clip gets a higher pitch

    prepare.prepare(tmp_path, size="tiny", workers=1)

    for split in ("train", "dev", "test"):
        for cut in CutSet.from_file(manifests[split]):  # the manifest says what the audio is
            assert 1.4 <= cut.supervisions[0].custom["voice"]["pitch"] <= 1.5
            path = Path(cut.recording.sources[0].source)
            assert path.exists() and path.stat().st_mtime_ns != mtimes[path]
    unseen = tmp_path.glob("audio/test_unseen_voice/**/*.flac")  # fixed voice: nothing to redo
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in unseen)


def test_a_new_room_bank_re_renders_the_clips_in_a_room(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(augment.AugmentConfig, "p_room", 0.5)
    prepare.prepare(tmp_path, size="tiny", workers=1)
    plan = prepare._read_plan(tmp_path, "train")
    mtimes = {c["id"]: (tmp_path / c["audio"]).stat().st_mtime_ns for c in plan}
    # As an edit of the room simulation in augment.py would: other rooms, a new fingerprint.
    make_rooms = augment.make_rooms
    monkeypatch.setattr(augment, "make_rooms", lambda n, seed: [r[::-1].copy() for r in make_rooms(n, seed)])
    monkeypatch.setattr(prepare, "_plan_fingerprint", lambda *args: "edited")

    prepare.prepare(tmp_path, size="tiny", workers=1)

    redone = {c["id"] for c in plan if (tmp_path / c["audio"]).stat().st_mtime_ns != mtimes[c["id"]]}
    in_a_room = {c["id"] for c in plan if "room" in c["effects"]}
    assert redone == in_a_room and 0 < len(in_a_room) < len(plan)


def test_prepare_refuses_a_folder_made_with_another_seed(tiny_recipe, tmp_path):
    prepare.prepare(tmp_path, size="tiny", stop_stage=1)
    with pytest.raises(ValueError, match="another seed"):
        prepare.prepare(tmp_path, size="tiny", seed=1, stop_stage=1)


def test_charlm_config_is_valid(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["lm", "fit", "--config", str(REPO / "recipes" / "synth" / "charlm.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = capsys.readouterr().out
    assert "train_text: data/synth/lm/train.txt" in config and "hidden_size: 384" in config
