import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
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


def _installed(engine: str, name: str):
    """(engine, name) as a test parameter, skipped where the voice is not installed."""
    missing = voices.missing_parts(voices.Voice(engine, name))
    return pytest.param(
        engine, name, marks=pytest.mark.skipif(bool(missing), reason=f"no {', '.join(missing)}")
    )


# One voice of each engine the recipe added to its first three.
ADDED_ENGINES = [
    _installed("rhvoice", "bdl"),
    _installed("mbrola", "us1"),
    _installed("pico", "en-GB"),
    _installed("festival", "rab_diphone"),
    _installed("piper", "joe"),
]


@pytest.mark.parametrize(
    "engine, name",
    [("espeak", "en-gb-scotland+m3"), ("festival", "kal_diphone"), ("flite", "kal16"), ("flite", "awb")]
    + ADDED_ENGINES,
)
def test_every_engine_speaks_and_follows_rate(engine, name):
    # Piper draws each phoneme's duration at random (one rendering at 0.8 was once only 5 %
    # shorter than one at 1.3), so the comparison is between totals of several renderings.
    repeats = 6
    requests = [("a short test sentence.", voices.Voice(engine, name, rate=r)) for r in (1.3, 0.8)]
    clips = voices.render(requests * repeats)
    slow, fast = clips[0::2], clips[1::2]
    assert slow[0][0].dtype == np.float32 and np.abs(slow[0][0]).max() > 0.05
    seconds = [sum(len(audio) / rate for audio, rate in clips) for clips in (slow, fast)]
    assert seconds[0] > 1.2 * seconds[1]


@pytest.mark.parametrize("engine, name", ADDED_ENGINES)
def test_an_added_engine_renders_a_16_khz_clip(engine, name, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "_WORKER", {"rooms": [], "music": []})
    clip = {"spoken": "the british have tea breaks.", "audio": "clip.flac", "effects": {"seed": 0}}
    clip["voice"] = {"engine": engine, "name": name, "rate": 1.1, "pitch": 0.9}

    seconds = prepare._render_chunk(tmp_path, [clip])

    audio, rate = sf.read(tmp_path / "clip.flac", dtype="float32")
    assert rate == 16000 and len(audio) == pytest.approx(seconds * rate)
    assert 0.8 < seconds < 5.0 and np.abs(audio).max() > 0.05


def test_a_missing_engine_names_the_packages_to_install(monkeypatch):
    monkeypatch.setattr(voices.shutil, "which", lambda program: None)
    with pytest.raises(voices.MissingSynthesizer, match="recipes.debian install rhvoice rhvoice-english"):
        voices.render([("a", voices.Voice("rhvoice", "bdl"))])
    with pytest.raises(voices.MissingSynthesizer, match="recipes.debian install mbrola mbrola-de4"):
        voices.require(voices.Voice("mbrola", "de4-en"))


def test_no_training_voice_is_a_held_out_speaker():
    trained = set(prepare.VOICE_SHARES) | set(prepare.ADDED_VOICE_SHARES)
    assert not trained & voices.HELD_OUT_SPEAKERS
    assert {("flite", name) for name in voices.HELD_OUT_VOICES} <= voices.HELD_OUT_SPEAKERS


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


# Clips of the corpus rendered before voices were added, as the recipe planned them then: adding
# voices must not change them, or every clip already on disk would be rendered again.
PLANNED = [
    ("train", 0, "festival", "cmu_us_slt_arctic_hts", 0.921, 0.773,
     {"vtl": 1.013, "noise": "pink", "snr_db": 25.4, "seed": 1960127676, "gain_db": -29.9}),
    ("train", 1, "festival", "kal_diphone", 0.976, 1.067,
     {"vtl": 0.882, "noise": "music", "snr_db": 14.1, "seed": 1646654869, "channel": "lowpass",
      "lowpass_hz": 6798, "gain_db": -20.7}),
    ("train", 3, "flite", "kal16", 0.999, 0.975,
     {"vtl": 1.0, "room": 76, "seed": 1911207827, "gain_db": -4.4}),
    ("train", 35999, "flite", "kal16", 1.188, 0.875,
     {"vtl": 1.0, "noise": "pink", "snr_db": 5.8, "seed": 1948010262, "gain_db": -10.6}),
    ("dev", 999, "espeak", "en-029+iven3", 0.905, 0.957, {"vtl": 1.0, "seed": 0}),
    ("test", 0, "espeak", "en-gb-scotland+edward2", 1.071, 0.83, {"vtl": 1.0, "seed": 0}),
    ("test_unseen_voice", 1, "flite", "rms", 1.0, 1.0, {"vtl": 1.0, "seed": 0}),
]  # fmt: skip


@pytest.mark.parametrize("split, i, engine, name, rate, pitch, effects", PLANNED)
def test_adding_voices_keeps_the_plan_of_every_earlier_clip(split, i, engine, name, rate, pitch, effects):
    record = prepare.plan_clip(split, i, "s.", "s", 0, voices.espeak_variants())
    assert record["voice"] == {"engine": engine, "name": name, "rate": rate, "pitch": pitch}
    assert record["effects"] == effects


def test_only_the_clips_after_the_first_corpus_draw_the_added_voices():
    variants = voices.espeak_variants()

    def engine_and_name(split, i):
        voice = prepare.plan_clip(split, i, "s.", "s", 0, variants)["voice"]
        return (voice["engine"], None if voice["engine"] == "espeak" else voice["name"])

    first = prepare.ADDED_VOICES_FROM
    assert {engine_and_name("train", i) for i in range(0, first, 97)} <= set(prepare.VOICE_SHARES)
    assert {engine_and_name("dev", i) for i in range(0, 1000, 7)} <= set(prepare.VOICE_SHARES)
    added = {engine_and_name("train", i) for i in range(first, prepare.SIZES["default"]["train"], 7)}
    assert added == set(prepare.ADDED_VOICE_SHARES)  # every added voice speaks, and no other


@pytest.fixture
def one_added_voice(tiny_recipe, monkeypatch):
    """The tiny recipe with one voice (flite's kal16) for its first 4 training clips and another
    (flite's slt) after them, and slt not installed."""
    monkeypatch.setattr(prepare, "VOICE_SHARES", {("flite", "kal16"): 1.0})
    monkeypatch.setattr(prepare, "ADDED_VOICE_SHARES", {("flite", "slt"): 1.0})
    monkeypatch.setattr(prepare, "ADDED_VOICES_FROM", 4)
    missing_parts = voices.missing_parts
    monkeypatch.setattr(voices, "missing_parts", lambda v: ["slt"] if v.name == "slt" else missing_parts(v))
    return missing_parts


def test_a_voice_not_installed_stops_the_recipe_saying_what_to_install(one_added_voice, tmp_path):
    with pytest.raises(voices.MissingSynthesizer, match=r"flite:slt \(2 clips\).*apt-get install flite"):
        prepare.prepare(tmp_path, size="tiny", workers=1)
    with pytest.raises(SystemExit):
        prepare.main(["--out", str(tmp_path), "--size", "tiny", "--workers", "1"])


def test_allow_missing_voices_skips_their_clips_until_installed(
    one_added_voice, tmp_path, monkeypatch, capsys
):
    manifests = prepare.prepare(tmp_path, size="tiny", workers=1, allow_missing_voices=True)

    assert "skipped 2 clips of voices not installed: flite:slt (2 clips)" in capsys.readouterr().out
    assert {c.supervisions[0].speaker for c in CutSet.from_file(manifests["train"])} == {"flite:kal16"}
    summary = json.loads((tmp_path / "summary.json").read_text())["train"]
    assert summary["clips"] == 4 and summary["by_engine"]["flite"]["speakers"] == 1
    with pytest.raises(ValueError, match="2 planned clips have no audio"):  # stage 4 alone, not allowed
        prepare.prepare(tmp_path, size="tiny", stage=4, stop_stage=4)

    monkeypatch.setattr(voices, "missing_parts", one_added_voice)  # slt installed: its clips follow
    prepare.prepare(tmp_path, size="tiny", workers=1)

    cuts = CutSet.from_file(manifests["train"])
    assert len(cuts) == 6 and {c.supervisions[0].speaker for c in cuts} == {"flite:kal16", "flite:slt"}
    summary = json.loads((tmp_path / "summary.json").read_text())["train"]
    assert (summary["clips"], summary["engines"], summary["speakers"]) == (6, 1, 2)


def test_charlm_config_is_valid(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["lm", "fit", "--config", str(REPO / "recipes" / "synth" / "charlm.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = capsys.readouterr().out
    assert "train_text: data/synth/lm/train.txt" in config and "hidden_size: 384" in config


def test_the_comparison_times_one_layer_of_every_variant():
    from recipes.synth.compare import STUDIES, Study, layer_costs

    people = STUDIES["people"]
    small = Study(
        people.config, {"model.net.hidden_size": 32},
        {"lstm": {}, "lstmp": {"model.net.proj_size": 16}, "gru": {"model.net.rnn_type": "gru"}},
        people.dev, 1,
    )  # fmt: skip
    costs = layer_costs(small, repeats=1)
    assert list(costs) == ["lstm", "lstmp", "gru"] and all(ms > 0 for ms in costs.values())
