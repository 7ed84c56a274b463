"""The shipped English models (asr/models/default.pt, streaming.pt, the character LM default.charlm.pt)
on the shipped demo clips.

`make demo` runs exactly these commands; these tests fail if the model goes missing, grows past
its size budget, or stops transcribing the demo clips.
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

import asr
from asr.audio import SAMPLE_RATE
from asr.charlm import DEFAULT_CHARLM, load_charlm, perplexity
from asr.data import read_cuts
from asr.decoding import DecodingOptions
from asr.evaluation import evaluate, model_recognizer
from asr.model import DEFAULT_MODEL, MODELS_DIR

DEMO = Path(__file__).parents[1] / "recipes" / "synth" / "demo"


@pytest.fixture(scope="module")
def model():
    return asr.load_model()


@pytest.fixture(scope="module")
def demo_cuts():
    cuts = read_cuts(DEMO / "cuts.jsonl")
    return cuts.map(lambda c: c.with_recording_path_prefix(str(DEMO.parents[2])))


def test_the_default_model_ships_with_its_card_and_fits_the_budget():
    assert DEFAULT_MODEL.is_file() and DEFAULT_MODEL.stat().st_size <= 25e6
    card = DEFAULT_MODEL.with_suffix(".md").read_text()
    assert "PocketSphinx" in card and "make train RECIPE=synth" in card


def test_the_default_model_transcribes_the_demo_clips(model, demo_cuts):
    # The seen voices' clips hold 24 words: the shipped model gets 9 wrong greedy (38 %) and 2
    # with its beam search and LM (8 %); the unseen voice's CER is 24 %. Each bound leaves
    # two words (or 6 points of CER) of margin, so a decoding quirk does not fail it, while a
    # worse model or LM does.
    seen = demo_cuts.filter(lambda c: "unseen" not in c.id)
    greedy = evaluate(model_recognizer(model, DecodingOptions()), seen)
    words = sum(len(ref.split()) for ref in greedy.refs)
    assert greedy.wer * words <= 11, greedy.listing()
    beam = evaluate(model_recognizer(model), seen)  # by default: its tuned beam search and LM
    assert model.beam_options.lm and beam.wer * words <= 4, beam.listing()
    unseen = demo_cuts.filter(lambda c: "unseen" in c.id)
    unseen = evaluate(model_recognizer(model, DecodingOptions()), unseen)
    assert unseen.cer <= 0.30, unseen.listing()


def test_transcribe_needs_no_model_argument():
    clip = DEMO / "synth-test-000001.flac"
    out = subprocess.run(
        [sys.executable, "-m", "asr.cli", "transcribe", "--format", "json", str(clip)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert result["text"] and result["words"]
    assert 0 <= result["words"][0]["start"] < result["words"][-1]["end"] <= result["duration"]


def test_a_script_transcribes_and_exits_with_the_imports_objects_frozen():
    # A handler registered before `import asr` runs after asr's (last in, first out): by then the
    # objects are frozen, so the interpreter's last collections skip them; the script's own
    # output and handlers are as without.
    script = (
        "import atexit, gc; atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); "
        f"import asr; print(asr.load_model().transcribe({str(DEMO / 'synth-test-000001.flac')!r}).text)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    text, frozen = out.stdout.splitlines()
    assert text.strip() and frozen == "frozen True"


def test_evaluate_shows_each_demo_clip_against_its_reference(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "asr.cli",
            "evaluate",
            "--show",
            str(DEMO / "cuts.jsonl"),
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=DEMO.parents[2],  # the manifest's audio paths are relative to the repository root
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("REF: ") == out.stdout.count("HYP: ") == 6
    assert f"| cuts | asr {asr.load_model().beam_options.name} | 6 |" in out.stdout  # the default decoder


@pytest.fixture(scope="module")
def streaming():
    return asr.load_model("streaming")


def test_the_streaming_model_ships_with_its_card_and_streams_exactly(streaming):
    path = MODELS_DIR / "streaming.pt"
    assert path.is_file() and path.stat().st_size <= 10e6
    card = path.with_suffix(".md").read_text()
    assert "make train RECIPE=synth" in card and "PocketSphinx" in card
    assert not streaming.config.bidirectional and streaming.beam_options.lm
    assert streaming.stream().mode == "exact"


def test_the_streaming_model_transcribes_the_demo_clips_as_it_hears_them(streaming, demo_cuts):
    seen = demo_cuts.filter(lambda c: "unseen" not in c.id)
    greedy = DecodingOptions()
    step = SAMPLE_RATE // 10  # 100 ms chunks
    for cut in seen:
        audio = cut.load_audio()[0]
        stream = streaming.stream(options=greedy, pause=None)
        partials = [stream.feed(audio[i : i + step]).text for i in range(0, len(audio), step)]
        final = stream.finish()
        assert final.text == streaming.transcribe(audio, SAMPLE_RATE, greedy).text
        assert partials[-1] and final.text.startswith(partials[-1].rsplit(" ", 1)[0])
    # With its beam search and LM it gets 4 of the 24 words wrong (greedy 14); two words of margin.
    words = sum(len(c.supervisions[0].text.split()) for c in seen)
    beam = evaluate(model_recognizer(streaming), seen)
    assert beam.wer * words <= 6, beam.listing()


def test_stream_command_takes_the_streaming_model_by_name():
    clip = DEMO / "synth-test-000001.flac"
    out = subprocess.run(
        [sys.executable, "-m", "asr.cli", "stream", str(clip), "--model", "streaming", "--chunk-ms", "100"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("[") and lines[-1].startswith("final: ") and len(lines[-1]) > len("final: ")


def test_the_character_lm_ships_beside_the_default_model(demo_cuts):
    """`asr lm sample` and `asr lm perplexity` need no --model: the shipped character LM knows
    English spelling (the demo references against the same characters in a shuffled order)."""
    assert DEFAULT_CHARLM.is_file() and DEFAULT_CHARLM.stat().st_size <= 10e6
    lm = ["-m", "asr.cli", "lm"]
    out = subprocess.run(
        [sys.executable, *lm, "sample", "--prompt", "the ", "-n", "3", "--seed", "0"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    samples = out.stdout.splitlines()
    assert len(samples) == 3 and all(s.startswith("the ") and len(s) > 6 for s in samples), samples
    references = [c.supervisions[0].text for c in demo_cuts]
    shuffled = ["".join(random.Random(0).sample(s, len(s))) for s in references]
    model = load_charlm()
    english, scrambled = perplexity(model, references), perplexity(model, shuffled)
    assert english < 5 and scrambled > 2 * english, (english, scrambled)
