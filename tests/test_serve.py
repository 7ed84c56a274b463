"""asr/serve.py: the HTTP service, its OpenAI-compatible endpoint, WebSocket streaming and bad input."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import asr
from asr.audio import SAMPLE_RATE, load_audio
from asr.decoding import DecodingOptions
from asr.serve import create_app
from asr.streaming import GREEDY, open_stream

CLIP = Path(__file__).parents[1] / "recipes" / "synth" / "demo" / "synth-test-000001.flac"


@pytest.fixture(scope="module")
def model():
    return asr.load_model()


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model)) as client:  # runs the lifespan: the batcher starts
        yield client


class LiveServer:
    """uvicorn serving ``app`` on a free port of 127.0.0.1, in a thread."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            self.thread.join(0.05)
            assert self.thread.is_alive(), "the server did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(model):
    with LiveServer(create_app(model)) as url:
        yield url


def test_health_models_and_offline_api_docs(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "default" and health["streaming"] == "window"
    assert client.get("/v1/models").json()["data"][0]["id"] == "default"
    docs = client.get("/docs").text
    assert "swagger-ui-bundle.js" in docs and "http://" not in docs and "https://" not in docs
    script = docs.split('src="')[1].split('"')[0]
    assert client.get(script).status_code == 200  # served by the package itself
    assert "/v1/audio/transcriptions" in client.get("/openapi.json").json()["paths"]


def test_transcribe_upload_and_raw_body_give_what_the_python_api_gives(client, model):
    expected = model.transcribe(CLIP)
    upload = client.post("/v1/transcribe", files={"file": (CLIP.name, CLIP.read_bytes())}).json()
    assert upload["text"] == expected.text and expected.text
    assert [w["word"] for w in upload["words"]] == [w.text for w in expected.words]
    assert [w["start"] for w in upload["words"]] == [w.start for w in expected.words]
    assert upload["decoder"] == model.beam_options.name
    raw = client.post("/v1/transcribe?decoder=greedy&word_timestamps=false", content=CLIP.read_bytes()).json()
    assert raw["text"] == model.transcribe(CLIP, options=DecodingOptions()).text and "words" not in raw


@pytest.mark.parametrize(
    "fmt, start", [("text", None), ("srt", "1\n00:00:0"), ("vtt", "WEBVTT"), ("tsv", "audio\t")]
)
def test_transcribe_formats(client, model, fmt, start):
    response = client.post(f"/v1/transcribe?format={fmt}&decoder=greedy", content=CLIP.read_bytes())
    assert response.status_code == 200
    text = model.transcribe(CLIP, options=DecodingOptions()).text
    assert response.text.startswith(start or text) and text.split()[-1] in response.text


def test_render_turns_a_transcription_into_subtitles_without_decoding_again(client):
    result = client.post("/v1/transcribe?decoder=greedy", content=CLIP.read_bytes()).json()
    vtt = client.post("/v1/render?format=vtt", json=result)
    assert vtt.text.startswith("WEBVTT") and result["words"][0]["word"] in vtt.text
    assert client.post("/v1/render?format=srt", json={"words": []}).status_code == 400


@pytest.mark.parametrize(
    "request_kwargs, status, code, named",
    [
        ({"content": b"not audio", "params": {"filename": "notes.txt"}}, 400, "invalid_audio", "notes.txt"),
        ({"files": {"file": ("page.wav", b"<html></html>")}}, 400, "invalid_audio", "page.wav"),
        ({"content": b""}, 400, "empty_audio", "empty upload"),
        ({"files": {"other": ("a.wav", b"RIFF")}}, 400, "missing_file", "'file'"),
        ({"content": b"RIFF", "params": {"decoder": "viterbi"}}, 400, "invalid_request", "decoder"),
    ],
    ids=["not-audio", "html-named-wav", "empty", "no-file-field", "unknown-decoder"],
)  # fmt: skip
def test_bad_uploads_get_a_4xx_json_error_naming_the_problem(client, request_kwargs, status, code, named):
    response = client.post("/v1/transcribe", **request_kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and named in error["message"]


def test_uploads_over_the_limit_are_refused_with_413_before_or_while_they_are_read(model):
    with TestClient(create_app(model, max_upload_mb=0.05)) as small:
        big = CLIP.read_bytes() * 3
        assert len(big) > 50_000
        said = small.post("/v1/transcribe", content=big)
        assert said.status_code == 413 and "0.05 MB" in said.json()["error"]["message"]
        unsaid = small.post(
            "/v1/transcribe", content=iter([big[:40_000], big[40_000:]])
        )  # chunked: no length
        assert unsaid.status_code == 413
        assert small.post("/v1/transcribe", content=CLIP.read_bytes()[:40_000]).status_code in (200, 400)


def test_the_openai_client_works_unchanged(live, model):
    from openai import OpenAI

    client = OpenAI(base_url=f"{live}/v1", api_key="unused")
    expected = model.transcribe(CLIP)
    with CLIP.open("rb") as audio:
        assert client.audio.transcriptions.create(model="whisper-1", file=audio).text == expected.text
    with CLIP.open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json", timestamp_granularities=["word"]
        )
    assert [w.word for w in verbose.words] == [w.text for w in expected.words]
    assert verbose.words[0].start == expected.words[0].start and verbose.duration == expected.duration
    assert " ".join(s.text.strip() for s in verbose.segments) == expected.text
    with CLIP.open("rb") as audio:
        srt = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="srt")
    assert srt.startswith("1\n") and expected.words[-1].text in srt
    assert [m.id for m in client.models.list()] == ["default"]


def test_requests_that_come_together_share_batches_and_bad_ones_do_not_disturb_the_others(live, model):
    import httpx

    expected = model.transcribe(CLIP, options=DecodingOptions()).text
    before = httpx.get(f"{live}/health").json()["batches"]

    def good(_):
        return httpx.post(f"{live}/v1/transcribe?decoder=greedy", content=CLIP.read_bytes(), timeout=120)

    def bad(_):
        return httpx.post(f"{live}/v1/transcribe", content=b"garbage", timeout=120)

    with ThreadPoolExecutor(12) as pool:
        goods = [pool.submit(good, i) for i in range(8)]
        bads = [pool.submit(bad, i) for i in range(4)]
        answers = [f.result() for f in goods]
        assert all(f.result().status_code == 400 for f in bads)
    assert all(a.status_code == 200 and a.json()["text"] == expected for a in answers)
    batches = httpx.get(f"{live}/health").json()["batches"] - before
    assert 1 <= batches < 8, "eight requests at once ran in fewer batches than requests"


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def _stream(client, query: str, chunks: list[bytes]) -> tuple[list[dict], dict]:
    with client.websocket_connect(f"/v1/stream?{query}") as ws:
        for chunk in chunks:
            ws.send_bytes(chunk)
        ws.send_text(json.dumps({"type": "end"}))
        messages = []
        while not messages or messages[-1]["type"] != "final":
            messages.append(ws.receive_json())
    return messages[:-1], messages[-1]


def test_a_websocket_stream_of_a_bidirectional_model_re_decodes_windows(client, model):
    audio = load_audio(CLIP)
    audio = np.concatenate([audio, np.zeros(SAMPLE_RATE // 2, np.float32)] * 4)  # 15 s: more than a window
    chunks = [_pcm16(audio[i : i + 4000]) for i in range(0, len(audio), 4000)]
    partials, final = _stream(client, "sample_rate=16000&encoding=pcm16&decoder=greedy", chunks)
    stream = open_stream(model, options=GREEDY)
    for i in range(0, len(audio), 4000):
        stream.feed(np.frombuffer(chunks[i // 4000], "<i2").astype(np.float32) / 32768)
    assert final["text"] == stream.finish().text and final["mode"] == "window"
    assert partials and all(p["mode"] == "window" for p in partials)
    assert final["duration"] == pytest.approx(len(audio) / SAMPLE_RATE, abs=1e-3)


def test_a_websocket_stream_of_a_unidirectional_model_is_exact_at_any_rate(tmp_path):
    from asr.model import RecurrentCTC
    from tests.conftest import TINY

    uni = RecurrentCTC(TINY.__class__(**{**TINY.__dict__, "bidirectional": False})).eval()
    audio = load_audio(CLIP)
    import soxr

    at_8k = soxr.resample(audio, SAMPLE_RATE, 8000).astype("<f4")
    with TestClient(create_app(uni, options=DecodingOptions())) as client:
        _, final = _stream(
            client,
            "sample_rate=8000&encoding=f32",
            [at_8k[i : i + 800].tobytes() for i in range(0, len(at_8k), 800)],
        )
    stream = uni.stream(sample_rate=8000, options=DecodingOptions())
    stream.feed(at_8k)
    assert final["mode"] == "exact" and final["text"] == stream.finish().text


@pytest.mark.parametrize(
    "query, send, code, reason",
    [
        ("encoding=mp3", None, 1008, "encoding 'mp3'"),
        ("sample_rate=100", None, 1008, "sample_rate 100"),
        ("encoding=pcm16", b"\x00\x01\x02", 1007, "2 bytes"),
        ("encoding=f32", np.array([np.nan, 0], "<f4").tobytes(), 1007, "NaN"),
        ("encoding=pcm16", "hello", 1003, "audio goes in binary messages"),
    ],
    ids=["unknown-encoding", "rate", "odd-bytes", "nan", "garbage-text"],
)  # fmt: skip
def test_bad_streams_are_closed_with_a_reason_and_the_server_goes_on(client, query, send, code, reason):
    with client.websocket_connect(f"/v1/stream?{query}") as ws:
        if isinstance(send, bytes):
            ws.send_bytes(send)
        elif send is not None:
            ws.send_text(send)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == code and reason in closed.value.reason
    assert client.get("/health").json()["status"] == "ok"


def test_a_client_that_leaves_mid_stream_does_not_disturb_the_next(client):
    audio = _pcm16(load_audio(CLIP))
    with client.websocket_connect("/v1/stream?decoder=greedy") as ws:
        ws.send_bytes(audio[: len(audio) // 2])
    # The connection is gone without an end message; the server serves the next one whole.
    _, final = _stream(client, "decoder=greedy", [audio])
    assert final["text"]
