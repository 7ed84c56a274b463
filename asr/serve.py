"""``asr serve``: the recognizer as an HTTP service (FastAPI on uvicorn), with a web page.

    asr serve [--model M] [--host 127.0.0.1] [--port 8000] [--workers 1]

- ``POST /v1/transcribe``: a multipart ``file`` or the raw audio as the body; JSON (text,
  words with start, end and confidence, duration) or text, srt, vtt, tsv (``format``).
- ``POST /v1/audio/transcriptions``: OpenAI's transcription API (``file``, ``model``,
  ``response_format``, ``timestamp_granularities[]``), so that its clients work unchanged.
- ``GET /v1/models``, ``GET /health``, ``/docs`` (OpenAPI, served from the package: offline).
- ``WS /v1/stream``: audio chunks in, partial and final results out (:mod:`asr.streaming`).
- ``GET /``: the web page (``asr/web``).

The model is loaded once and shared. CPU work (reading uploads, the network, the search) runs
in a pool of ``workers`` threads, never on the event loop, so the server keeps accepting
requests and answering ``/health`` while it transcribes. Requests that wait for a worker are
transcribed together, one batch of up to :data:`asr.inference.MAX_BATCH_SECONDS` of audio per
decoding setting: under load one forward pass serves many clips (``make bench``: serving).
"""

import asyncio
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from asr.audio import SAMPLE_RATE, AudioError, load_audio
from asr.decoding import DecodingOptions, Transcription, Word
from asr.inference import MAX_BATCH_SECONDS, default_options
from asr.streaming import ENCODINGS, RATES, open_stream, pcm_samples
from asr.writers import cues, format_results

WEB = Path(__file__).parent / "web"
MAX_UPLOAD_MB = 100.0
FORMATS = {"json": "json", "text": "txt", "srt": "srt", "vtt": "vtt", "tsv": "tsv"}
OPENAI_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


class ApiError(HTTPException):
    """An error answered as ``{"error": {"message", "type", "code"}}`` (OpenAI's shape)."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(status, message)
        self.code = code


def _error_response(status: int, message: str, code: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


@dataclass
class _Job:
    wave: np.ndarray
    options: DecodingOptions
    done: asyncio.Future


class Batcher:
    """Transcribes waveforms in a pool of ``workers`` threads; the jobs that wait while every
    worker is busy go together into the next batch (same options, up to ``max_seconds``)."""

    def __init__(self, model, workers: int, max_seconds: float = MAX_BATCH_SECONDS):
        self.model, self.max_seconds = model, max_seconds
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="asr-worker")
        self.slots = asyncio.Semaphore(workers)
        self.waiting: list[_Job] = []
        self.arrived = asyncio.Event()
        self.batches = 0  # batches run, for /health
        self.task: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()  # held: the event loop keeps only weak references

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def run_in_worker(self, function, *args):
        """Run CPU work in the pool (reading audio, a stream's chunk)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def transcribe(self, wave: np.ndarray, options: DecodingOptions) -> Transcription:
        job = _Job(wave, options, asyncio.get_running_loop().create_future())
        self.waiting.append(job)
        self.arrived.set()
        return await job.done

    async def _run(self) -> None:
        while True:
            await self.slots.acquire()
            while not self.waiting:
                self.arrived.clear()
                await self.arrived.wait()
            task = asyncio.get_running_loop().create_task(self._run_batch(self._take()))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    def _take(self) -> list[_Job]:
        """The first waiting job and those after it with its options, up to max_seconds."""
        options, batch, seconds, rest = self.waiting[0].options, [], 0.0, []
        for job in self.waiting:
            length = len(job.wave) / SAMPLE_RATE
            if job.done.done():  # its client has gone
                continue
            if job.options == options and (not batch or seconds + length <= self.max_seconds):
                batch.append(job)
                seconds += length
            else:
                rest.append(job)
        self.waiting = rest
        return batch

    async def _run_batch(self, batch: list[_Job]) -> None:
        try:
            if batch:
                waves = [job.wave for job in batch]
                results = await self.run_in_worker(
                    self.model.transcribe_batch, waves, SAMPLE_RATE, batch[0].options
                )
                self.batches += 1
                for job, result in zip(batch, results, strict=True):
                    if not job.done.done():
                        job.done.set_result(result)
        except Exception as err:  # a bug: every job of the batch gets it
            for job in batch:
                if not job.done.done():
                    job.done.set_exception(err)
        finally:
            self.slots.release()


class UploadLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413, whether it
    says its length (refused before it is read) or not (refused once that much has come)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = _error_response(413, self._message(), "upload_too_large")
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, self._message(), "upload_too_large")
            return message

        return await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"upload larger than the server's limit of {self.limit / 1e6:g} MB (asr serve --max-upload-mb)"


def _read_upload(data: bytes, name: str) -> np.ndarray:
    """Decode uploaded bytes (any format load_audio reads) to 16 kHz samples."""
    if not data:
        raise ApiError(400, f"{name}: empty upload (0 bytes)", "empty_audio")
    suffix = Path(name).suffix if len(Path(name).suffix) <= 8 else ""
    with tempfile.NamedTemporaryFile(suffix=suffix) as file:
        file.write(data)
        file.flush()
        try:
            return load_audio(file.name)
        except AudioError as err:
            raise ApiError(400, f"{name}: {err.problem}", "invalid_audio") from None


async def _upload(request: Request, field: str = "file") -> tuple[bytes, str]:
    """The audio of a request: its multipart ``file`` field, or the whole body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get(field)
        if upload is None or isinstance(upload, str):
            raise ApiError(400, f"the form has no file field {field!r}", "missing_file")
        return await upload.read(), upload.filename or field
    return await request.body(), request.query_params.get("filename", "upload")


def _word_json(word: Word) -> dict:
    return {"word": word.text, "start": word.start, "end": word.end, "confidence": round(word.confidence, 3)}


def _render(result: Transcription, name: str, fmt: str, decoder: str, words: bool = True) -> Response:
    if fmt == "json":
        body = {"text": result.text, "duration": result.duration, "decoder": decoder}
        if words:
            body["words"] = [_word_json(w) for w in result.words]
        return JSONResponse(body)
    media = {"vtt": "text/vtt", "tsv": "text/tab-separated-values"}.get(fmt, "text/plain")
    return PlainTextResponse(format_results([(name, result)], FORMATS[fmt]), media_type=media)


def _verbose_json(result: Transcription, words: bool) -> dict:
    """OpenAI's verbose_json: segments (subtitle cues of the words), and words if asked."""
    segments = [
        {
            "id": n, "seek": 0, "start": cue[0].start, "end": cue[-1].end,
            "text": " " + " ".join(w.text for w in cue), "tokens": [], "temperature": 0.0,
            "avg_logprob": float(np.mean([np.log(max(w.confidence, 1e-6)) for w in cue])),
            "compression_ratio": 1.0, "no_speech_prob": 0.0,
        }
        for n, cue in enumerate(cues(result.words))
    ]  # fmt: skip
    body = {"task": "transcribe", "language": "english", "duration": result.duration, "text": result.text}
    body["segments"] = segments
    if words:
        body["words"] = [{"word": w.text, "start": w.start, "end": w.end} for w in result.words]
    return body


def create_app(
    model,
    model_name: str = "default",
    workers: int = 1,
    max_upload_mb: float = MAX_UPLOAD_MB,
    options: DecodingOptions | None = None,
    batch_seconds: float = MAX_BATCH_SECONDS,
):
    """The service around a loaded ``model``. Requests decode with ``options`` unless they ask
    for greedy or beam (by default the model's own: :func:`asr.inference.default_options`);
    the requests that wait together share batches of up to ``batch_seconds`` of audio (0: one
    request at a time)."""
    batcher: Batcher | None = None
    default = options or default_options(model)
    beam = default if default.method == "beam" else model.beam_options or DecodingOptions(method="beam")
    options_of = {"greedy": DecodingOptions(), "beam": beam}
    streaming = "exact" if open_stream(model).mode == "exact" else "window"
    started = time.time()

    async def lifespan(app):
        nonlocal batcher
        batcher = Batcher(model, workers, batch_seconds)
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPIOffline(
        title="asr",
        summary="Recurrent CTC speech recognition",
        description="Transcribe audio files, or stream audio over a WebSocket. The page at / uses this API.",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(UploadLimit, limit=int(max_upload_mb * 1e6))

    @app.exception_handler(HTTPException)
    async def api_error(request, err: HTTPException):
        return _error_response(err.status_code, str(err.detail), getattr(err, "code", "error"))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, err: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return _error_response(400, problems, "invalid_request")

    async def transcribe(data: bytes, name: str, options: DecodingOptions) -> Transcription:
        wave = await batcher.run_in_worker(_read_upload, data, name)
        return await batcher.transcribe(wave, options)

    audio_body = {
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "audio/*": {"schema": {"type": "string", "format": "binary"}},
            },
            "required": True,
        }
    }

    @app.post("/v1/transcribe", openapi_extra=audio_body, summary="Transcribe an audio file")
    async def transcribe_endpoint(
        request: Request,
        decoder: Annotated[str | None, Query(pattern="^(greedy|beam)$")] = None,
        word_timestamps: bool = True,
        format: Annotated[str, Query(pattern=f"^({'|'.join(FORMATS)})$")] = "json",
        filename: str = "upload",
    ):
        """Any audio format the toolkit reads (wav, flac, ogg, mp3, ...), as a multipart `file`
        field or as the raw body (then `filename` names it in errors and outputs). `decoder`:
        greedy, or beam (with the model's tuned LM); by default the model's own."""
        data, name = await _upload(request)
        options = options_of[decoder] if decoder else default
        result = await transcribe(data, name, options)
        return _render(result, name, format, options.name, word_timestamps)

    @app.post("/v1/audio/transcriptions", openapi_extra=audio_body, summary="OpenAI-compatible transcription")
    async def openai_transcriptions(request: Request):
        """OpenAI's `audio.transcriptions.create`: form fields `file`, `model` (any name: this
        server has one model), `response_format` (json, text, srt, vtt, verbose_json) and
        `timestamp_granularities[]` (word, segment); `language`, `prompt` and `temperature`
        are accepted and ignored."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(
                400, "send a multipart form with a file field (as OpenAI's API)", "invalid_request"
            )
        form = await request.form()
        fmt = str(form.get("response_format") or "json")
        if fmt not in OPENAI_FORMATS:
            raise ApiError(
                400, f"response_format {fmt!r}: use one of {', '.join(OPENAI_FORMATS)}", "invalid_format"
            )
        granularities = form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities")
        data, name = await _upload(request)
        result = await transcribe(data, name, default)
        if fmt == "verbose_json":
            return JSONResponse(_verbose_json(result, words="word" in granularities))
        if fmt == "json":
            return JSONResponse({"text": result.text})
        return _render(result, name, fmt, default.name)

    @app.post("/v1/render", summary="A transcription JSON as text, srt, vtt or tsv")
    async def render(
        transcription: dict, format: Annotated[str, Query(pattern="^(text|srt|vtt|tsv)$")] = "srt"
    ):
        """The page's downloads: the JSON of `/v1/transcribe` in another format, without
        transcribing again."""
        try:
            words = [Word(w["word"], float(w["start"]), float(w["end"]), float(w.get("confidence", 1.0)))
                     for w in transcription.get("words", [])]  # fmt: skip
            result = Transcription(str(transcription["text"]), words, float(transcription.get("duration", 0)))
        except (KeyError, TypeError, ValueError) as err:
            raise ApiError(
                400, f"not a transcription of /v1/transcribe ({err!r})", "invalid_request"
            ) from None
        return _render(result, str(transcription.get("name", "upload")), format, "")

    @app.get("/v1/models", summary="The model this server runs")
    async def models():
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": int(started), "owned_by": "asr"}],
        }

    @app.get("/health", summary="Liveness and what is served")
    async def health():
        config = model.config
        return {
            "status": "ok", "model": model_name, "decoder": default.name, "streaming": streaming,
            "network": f"{config.rnn_type} {config.num_layers}x{config.hidden_size}"
            + (" bidirectional" if config.bidirectional else ""),
            "workers": workers, "batches": batcher.batches if batcher else 0,
            "uptime": round(time.time() - started, 1),
        }  # fmt: skip

    @app.websocket("/v1/stream")
    async def stream_endpoint(
        websocket: WebSocket,
        sample_rate: int = SAMPLE_RATE,
        encoding: str = "pcm16",
        decoder: str | None = None,
    ):
        """Binary messages: mono audio at `sample_rate` (pcm16: 16-bit little-endian, f32:
        float32); a text message `{"type": "end"}` ends the utterance. Answers: `{"type":
        "partial", "text", "mode"}` as the text grows, then `{"type": "final", "text",
        "words", "duration", "mode"}`, and the server closes. Mode "exact": a unidirectional
        model streams its offline output; "window": a bidirectional model re-decodes the
        latest seconds each second of audio (asr.streaming.WindowStream)."""
        await websocket.accept()
        problem = None
        if encoding not in ENCODINGS:
            problem = f"encoding {encoding!r}: use pcm16 or f32"
        elif not RATES[0] <= sample_rate <= RATES[1]:
            problem = f"sample_rate {sample_rate}: between {RATES[0]} and {RATES[1]} Hz"
        elif decoder not in (None, "greedy", "beam"):
            problem = f"decoder {decoder!r}: use greedy or beam"
        if problem:
            return await websocket.close(code=1008, reason=problem)
        dtype = ENCODINGS[encoding]
        stream = open_stream(model, sample_rate, options_of[decoder] if decoder else default)
        shown = None
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return  # the client left mid-stream: nothing to answer
                if message.get("bytes") is not None:
                    data = message["bytes"]
                    if len(data) % dtype.itemsize:
                        return await websocket.close(
                            code=1007,
                            reason=f"{encoding} samples are {dtype.itemsize} bytes; a message of {len(data)}",
                        )
                    try:
                        chunk = pcm_samples(data, encoding)
                    except ValueError as err:
                        return await websocket.close(code=1007, reason=str(err))
                    partial = await batcher.run_in_worker(stream.feed, chunk)
                    if partial.text != shown:
                        shown = partial.text
                        await websocket.send_json(
                            {"type": "partial", "text": partial.text, "mode": stream.mode}
                        )
                    continue
                try:
                    end = json.loads(message.get("text") or "").get("type") == "end"
                except (ValueError, AttributeError):
                    end = False
                if not end:
                    return await websocket.close(
                        code=1003, reason='text messages: only {"type": "end"}; audio goes in binary messages'
                    )
                final = await batcher.run_in_worker(stream.finish)
                await websocket.send_json(
                    {
                        "type": "final", "text": final.text, "words": [_word_json(w) for w in final.words],
                        "duration": final.duration, "mode": stream.mode,
                    }
                )  # fmt: skip
                return await websocket.close()
        except WebSocketDisconnect:
            return

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB / "index.html")

    app.mount("/web", StaticFiles(directory=WEB), name="web")
    return app


def serve(model, model_name: str, host: str, port: int, **settings) -> None:
    """Run the service until interrupted (Ctrl-C); ``settings`` as :func:`create_app`'s."""
    import uvicorn

    app = create_app(model, model_name, **settings)
    uvicorn.run(app, host=host, port=port, log_level="info", ws_max_size=16 * 2**20)
