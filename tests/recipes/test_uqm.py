"""The uqm recipe on a tiny corpus in the layout of Debian's uqm-content and uqm-voice packages.

The two packages hold zip archives (``.uqm``): the game's dialogue texts under ``base/comm``,
and the voice pack's Ogg clips, timing files, a few text overrides and its resource map under
``3dovoice``. Here espeak-ng speaks the lines, at the packages' 11,025 Hz.
"""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet
from lhotse.utils import fastcopy

from recipes import debian
from recipes.uqm import prepare as uqm
from tests.recipes.helpers import (
    assert_clear_error,
    fit_one_step,
    needs_espeak,
    print_config,
    run_main,
    speak,
)

pytestmark = needs_espeak
RATE = 11025
# character -> [(label, clip number or None, lines)]; a clip of several lines gets a .ts entry.
DIALOGUE = {
    "spathi": [
        ("HELLO", 0, ["This is Spathi Captain Fwiffo.", "I know you are going to torture me."]),
        ("identify", None, ["Attention alien vessel: Identify yourself!"]),
    ],
    "shofixti": [("HI", 0, ["Greetings, honored ally."])],
    "supox": [("HI", 0, ["We are the Supox."])],
    "commander": [("HELLO", 0, ["Captain, we have waited so long."])],
    "starbase": [("HELLO", 0, ["The coordinates are 241.6, 368.7"])],
    "syreen": [("HI", 0, ["I am Talana of the Syreen."])],
    "vux": [("HI", 0, ["You are an ugly human."])],
    "arilou": [("HI", 0, ["Hello my little one."])],  # its text comes from the voice pack
    "yehatrebels": [("HI", 0, ["We are the rebels."]), ("SAME", 1, ["You are an ugly human."])],
    "zoqfotpik": [
        ("LONG", 0, ["We are *sigh* the Zoq-Fot-Pik."]),
        ("MISSING", 1, ["This clip is not in the pack."]),
        ("BROKEN", 2, ["This clip is damaged."]),
    ],
}
OVERRIDDEN = {"arilou"}  # the voice pack's own .txt, as in its 3dovoice.rmp
# The LONG clip says much more than its label: a label that covers part of its clip.
LONG_SPEECH = (
    "We are the Zoq-Fot-Pik, and we have a very long story to tell you, of many years and many worlds."
)


def dialogue_text(character: str) -> str:
    entries = []
    for label, clip, lines in DIALOGUE[character]:
        head = f"#({label})" + (f"\t{character}-{clip:03d}.ogg" if clip is not None else "")
        entries.append("\n".join([head, *lines]) + "\n")
    return "\n".join(entries)


def make_packages(root: Path) -> Path:
    """``root/usr/share/games/uqm/content/{packages,addons}/*.uqm``, as dpkg-deb -x leaves them."""
    content = root / uqm.CONTENT
    (content / "packages").mkdir(parents=True)
    (content / "addons").mkdir(parents=True)
    with zipfile.ZipFile(content / uqm.ARCHIVES[0], "w") as game:
        for character in DIALOGUE:
            text = dialogue_text(character).replace("Hello my", "Hi my")
            game.writestr(f"base/comm/{character}/{character}.txt", text)
    rmp, pack = [], zipfile.ZipFile(content / uqm.ARCHIVES[1], "w")
    with pack:
        for character, entries in DIALOGUE.items():
            text = f"addons/3dovoice/{character}/{character}.txt" if character in OVERRIDDEN else (
                f"base/comm/{character}/{character}.txt"
            )  # fmt: skip
            key = "yehat.rebel" if character == "yehatrebels" else character
            rmp.append(
                f"comm.{key}.dialogue = CONVERSATION:{text}:addons/3dovoice/{character}/:"
                f"addons/3dovoice/{character}/{character}.ts"
            )
            if character in OVERRIDDEN:
                pack.writestr(f"3dovoice/{character}/{character}.txt", dialogue_text(character))
            timings = []
            for label, clip, lines in entries:
                if clip is None or label == "MISSING":
                    continue
                ogg = f"3dovoice/{character}/{character}-{clip:03d}.ogg"
                if label == "BROKEN":
                    pack.writestr(ogg, b"OggS but not really")
                    continue
                # Each line spoken, with half a second of silence between lines.
                parts, lengths = [], []
                for line in lines:
                    speech = speak(LONG_SPEECH if label == "LONG" else line, RATE)
                    parts += [speech, np.zeros(RATE // 2, np.float32)]
                    lengths.append(int(1000 * (len(speech) + RATE // 2) / RATE))
                pack.writestr(ogg, ogg_bytes(np.concatenate(parts)))
                timings.append(f"#({label}) {','.join(map(str, lengths[:-1]))}")
            pack.writestr(f"3dovoice/{character}/{character}.ts", "\n".join(timings) + "\n")
        pack.writestr(uqm.RESOURCE_MAP, "\n".join(rmp) + "\n")
    return root


def ogg_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="OGG", subtype="VORBIS")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    packages = make_packages(tmp_path_factory.mktemp("packages"))
    out = tmp_path_factory.mktemp("data") / "uqm"
    return packages, out, uqm.prepare(out, corpus_dir=packages)


def cuts_of(manifests, split) -> list:
    return list(CutSet.from_file(manifests[split]))


def test_whole_characters_are_held_out_and_speakers_are_characters(prepared):
    _, _, manifests = prepared
    speakers = {split: {c.supervisions[0].speaker for c in cuts_of(manifests, split)} for split in manifests}
    assert speakers["dev_human"] == {"spathi", "shofixti", "supox"}
    # Commander Hayes speaks as "commander" and at the starbase: one speaker, held out together.
    assert speakers["test_human"] == {"hayes", "syreen", "vux"}
    assert speakers["train"] == {"arilou", "yehatrebels"}  # the rebels' own clip folder names them


def test_a_clip_is_cut_into_its_lines_at_the_timings(prepared):
    _, _, manifests = prepared
    spathi = [c for c in cuts_of(manifests, "dev_human") if c.supervisions[0].speaker == "spathi"]
    assert [c.supervisions[0].text for c in spathi] == [
        "this is spathi captain fwiffo",
        "i know you are going to torture me",
    ]
    first, second = spathi
    assert first.recording_id == second.recording_id and first.start == 0.0
    # The boundary moved into the pause between the two lines (the .ts time ends that pause).
    speech = len(speak("This is Spathi Captain Fwiffo.", RATE)) / RATE
    assert speech - 0.05 <= second.start <= speech + 0.55
    assert first.sampling_rate == RATE


def test_texts_are_normalised_and_the_voice_pack_overrides_the_game(prepared):
    _, _, manifests = prepared
    texts = {c.supervisions[0].text for split in manifests for c in cuts_of(manifests, split)}
    assert (
        "the coordinates are two hundred and forty one point six three hundred and sixty eight point seven"
        in texts
    )
    assert "hello my little one" in texts and "hi my little one" not in texts


def test_mismatched_missing_and_broken_clips_are_skipped_and_listed(prepared):
    _, out, manifests = prepared
    ids = {c.id for split in manifests for c in cuts_of(manifests, split)}
    assert not any(i.startswith("uqm-zoqfotpik") for i in ids)
    skipped = (out / "skipped.txt").read_text()
    assert "zoqfotpik-000.ogg line 1" in skipped and "characters a second" in skipped
    assert "zoqfotpik-001.ogg\tno such file" in skipped
    assert "zoqfotpik-002.ogg\tnot a readable audio file" in skipped


def test_no_held_out_sentence_is_trained_on(prepared):
    _, out, manifests = prepared
    held = set((out / "text" / "test_human.txt").read_text().split("\n")) - {""}
    assert "you are an ugly human" in held
    assert not held & {c.supervisions[0].text for c in cuts_of(manifests, "train")}


def test_a_second_run_does_nothing_and_prints_the_licence(prepared, capsys):
    packages, out, manifests = prepared
    before = {split: path.stat().st_mtime_ns for split, path in manifests.items()}
    uqm.prepare(out, corpus_dir=packages)
    assert {split: path.stat().st_mtime_ns for split, path in manifests.items()} == before
    assert "CC BY-NC-SA 2.5" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["test_human"]["speakers"] == {"hayes": 2, "syreen": 1, "vux": 1}
    assert summary["dropped_hours"]["too slow"] > 0


def test_every_training_clip_is_spoken_again_by_new_voices(prepared):
    _, out, manifests = prepared
    train = {c.id: c for c in cuts_of(manifests, "train")}
    voiced = cuts_of(manifests, "train_voices")
    assert len(voiced) == uqm.VOICE_COPIES * len(train)
    for cut in voiced:
        source, number = cut.id.rsplit("-v", 1)
        original = train[source].supervisions[0]
        supervision = cut.supervisions[0]
        assert supervision.text == original.text and supervision.speaker == f"{original.speaker}-v{number}"
        assert abs(cut.duration - train[source].duration) < 0.02 and cut.sampling_rate == RATE
        low, high = uqm.FORMANT_SHIFT
        assert low <= supervision.custom["formant"] <= high
        assert (supervision.custom["formant"], supervision.custom["pitch"]) == uqm.voice_shifts(source)[
            int(number) - 1
        ]
    # A second run reuses the audio it wrote: a lost manifest is rebuilt from it, identical.
    before = {p: p.stat().st_mtime_ns for p in (out / "voices").rglob("*.flac")}
    manifests["train_voices"].unlink()
    uqm.main(["--out", str(out), "--stage", "4", "--num-jobs", "1"])
    assert {p: p.stat().st_mtime_ns for p in (out / "voices").rglob("*.flac")} == before
    assert [c.to_dict() for c in cuts_of(manifests, "train_voices")] == [c.to_dict() for c in voiced]


def median_pitch(samples: np.ndarray) -> float:
    import librosa

    f0, voiced, _ = librosa.pyin(samples, fmin=60, fmax=500, sr=RATE)
    return float(np.nanmedian(f0[voiced]))


def test_a_new_voice_moves_pitch_and_formants_and_keeps_the_timing():
    speech = speak("We are the Supox, and we will help you.", RATE)
    higher = uqm.shift_voice(speech, RATE, formant=1.15, pitch=1.5)
    lower = uqm.shift_voice(speech, RATE, formant=0.87, pitch=0.7)
    assert len(higher) == len(lower) == len(speech)
    assert np.abs(higher).max() == pytest.approx(np.abs(speech).max(), rel=1e-3)
    assert median_pitch(higher) / median_pitch(speech) == pytest.approx(1.5, rel=0.1)
    assert median_pitch(lower) / median_pitch(speech) == pytest.approx(0.7, rel=0.1)

    def centroid(x):
        spectrum = np.abs(np.fft.rfft(x))
        return (spectrum * np.fft.rfftfreq(len(x), 1 / RATE)).sum() / spectrum.sum()

    assert centroid(lower) < centroid(speech) < centroid(higher)


def test_a_clip_that_cannot_be_read_gets_no_new_voice(prepared, tmp_path):
    _, _, manifests = prepared
    cut = cuts_of(manifests, "train")[0]
    gone = tmp_path / "gone.ogg"
    recording = cut.recording
    broken = fastcopy(
        cut, recording=fastcopy(recording, sources=[fastcopy(recording.sources[0], source=str(gone))])
    )
    reason = uqm.new_voices(broken, tmp_path / "voices")
    assert isinstance(reason, str) and "gone.ogg" in reason
    assert not list((tmp_path / "voices").rglob("*.flac"))


def test_a_folder_without_the_packages_is_a_clear_error(tmp_path, capsys):
    assert_clear_error(uqm.main, tmp_path / "nothing", tmp_path / "out", capsys)
    code, err = run_main(uqm.main, ["--out", str(tmp_path / "out"), "--stage", "3"], capsys)
    assert code == 1 and "3dovoice.rmp missing" in err
    code, err = run_main(uqm.main, ["--out", str(tmp_path / "out"), "--stage", "4"], capsys)
    assert code == 1 and "cuts_train.jsonl.gz missing" in err


def test_parsers():
    entries = uqm.parse_dialogue(
        "#(A)\tx-000.ogg\nOne.\n  Two.\n\n#(B)\nNot voiced.\n#(C) x-001.ogg\nThree.\n", "x"
    )
    assert [(e.label, e.clip, e.lines) for e in entries] == [
        ("A", "x-000.ogg", ("One.", "Two.")),
        ("C", "x-001.ogg", ("Three.",)),
    ]
    assert uqm.parse_timings("#(A) 1500,2000\n#(B) \n") == {"A": (1500, 2000), "B": ()}
    rmp = (
        "comm.yehat.rebel.dialogue = CONVERSATION:base/comm/y/y.txt:"
        "addons/3dovoice/yehatrebels/:addons/3dovoice/yehatrebels/y.ts"
    )
    assert uqm.read_resource_map(rmp) == {
        "yehatrebels": ("base/comm/y/y.txt", "3dovoice/yehatrebels/", "3dovoice/yehatrebels/y.ts")
    }


def test_the_private_apt_configuration_stays_in_its_folder(tmp_path):
    options = debian.apt_options(tmp_path / "apt")
    sources = (tmp_path / "apt" / "sources.list").read_text()
    assert "main contrib non-free" in sources and debian.codename() in sources
    values = [o.split("=", 1)[1] for o in options if "=" in o and o.startswith("Dir::")]
    assert values and all(v.startswith(str(tmp_path / "apt")) for v in values)


def test_the_recipe_trains_a_step_and_the_mixture_config_parses(prepared, tmp_path, capsys):
    _, _, manifests = prepared
    splits = {"train": manifests["train"], "dev": manifests["dev_human"], "test": manifests["test_human"]}
    fit_one_step("uqm", splits, tmp_path)
    config = print_config("synth", "mix.yaml", capsys)
    assert "init_from: asr/models/default.pt" in config and "train_weights:" in config
