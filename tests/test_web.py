"""The web page of asr serve, end to end in headless Chromium (Debian's, driven by Playwright):
upload a clip and record one from a (fake) microphone, as a person would."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from asr.decoding import DecodingOptions
from asr.serve import create_app
from tests.test_serve import CLIP, LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make system)")
# Flags for a closed network: no background connections, no first-run or component updates.
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def model():
    import asr

    return asr.load_model()


@pytest.fixture(scope="module")
def server(model):
    with LiveServer(create_app(model)) as url:
        yield url


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """The clip as a 48 kHz 16-bit wav, with a second of silence after it: Chromium's fake
    microphone plays it in a loop."""
    import soundfile as sf
    import soxr

    from asr.audio import load_audio

    audio = soxr.resample(load_audio(CLIP), 16000, 48000)
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    sf.write(path, np.concatenate([audio, np.zeros(48000, np.float32)]), 48000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser(recording):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*FLAGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={recording}"],
        )  # fmt: skip
        yield browser
        browser.close()


def _ink(png: bytes) -> float:
    """Share of a screenshot's pixels as dark as the transcript's text (the placeholder of an
    empty transcript and the border are lighter grey)."""
    from PIL import Image

    return float((np.asarray(Image.open(io.BytesIO(png)).convert("L")) < 100).mean())


def test_upload_a_clip_see_its_words_play_from_one_and_download_subtitles(server, browser, model, tmp_path):
    page = browser.new_page()
    page.goto(server)
    page.wait_for_function("document.getElementById('model').textContent.includes('lstm')")
    empty = _ink(page.locator("#transcript").screenshot())
    page.set_input_files("#file", str(CLIP))
    page.wait_for_selector("#transcript .word", timeout=60_000)
    words = page.locator("#transcript .word").all_inner_texts()
    assert words == [w.text for w in model.transcribe(CLIP).words] and words
    assert "synth-test-000001.flac" in page.inner_text("#status")
    shot = page.locator("#transcript").screenshot(path=str(tmp_path / "transcript.png"))
    assert empty < 0.001 and _ink(shot) > 0.01, "the transcript region shows the words"
    # A click on the third word plays the audio from that word's start.
    start = float(page.locator("#transcript .word").nth(2).get_attribute("data-start"))
    page.locator("#transcript .word").nth(2).click()
    page.wait_for_function("!document.getElementById('player').paused", timeout=10_000)
    assert page.evaluate("document.getElementById('player').currentTime") >= start
    with page.expect_download() as download:
        page.click("#downloads button[data-format=srt]")
    srt = Path(download.value.path()).read_text()
    assert srt.startswith("1\n") and words[-1] in srt
    page.close()


def test_a_non_audio_upload_shows_the_servers_error(server, browser, tmp_path):
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio")
    page = browser.new_page()
    page.goto(server)
    page.set_input_files("#file", str(notes))
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "notes.wav: not a readable audio file" in page.inner_text("#status")
    page.close()


def test_record_from_the_microphone_with_partials_then_the_final_words(server, browser, model):
    page = browser.new_page()
    page.goto(server)
    page.select_option("#decoder", "greedy")
    page.click("#record")
    # Partial results while recording (the fake microphone loops the clip).
    page.wait_for_selector("#transcript .partial", timeout=60_000)
    page.wait_for_timeout(4_000)
    page.click("#record")
    page.wait_for_selector("#transcript .word", timeout=60_000)
    heard = " ".join(page.locator("#transcript .word").all_inner_texts())
    expected = model.transcribe(CLIP, options=DecodingOptions()).text.split()
    # The recording starts anywhere in the looped clip; most of its words are heard.
    assert sum(word in heard.split() for word in expected) >= len(expected) // 2, heard
    assert "Recorded" in page.inner_text("#status")
    assert page.evaluate("document.getElementById('player').src").startswith("blob:")
    page.close()
