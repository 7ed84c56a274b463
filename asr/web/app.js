// The page of `asr serve`: upload or record audio, show the words, play from a word, download.
// Plain JavaScript against the server's own API (/v1/transcribe, /v1/stream, /v1/render).
"use strict";

const $ = (id) => document.getElementById(id);
let result = null; // the transcription shown (JSON of /v1/transcribe)
let recorder = null; // the recording in progress
let audioUrl = null;

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function describe() {
  try {
    const h = await (await fetch("/health")).json();
    const streaming = h.streaming === "exact" ? "streams exactly" : "streams by re-decoding a window";
    $("model").textContent = `Model ${h.model}: ${h.network}; decodes with ${h.decoder}; ${streaming}.`;
  } catch {
    $("model").textContent = "The server does not answer.";
  }
}

function play(url) {
  if (audioUrl) URL.revokeObjectURL(audioUrl);
  audioUrl = url;
  $("player").src = url;
  $("player").hidden = false;
}

function show(transcription) {
  result = transcription;
  const box = $("transcript");
  box.replaceChildren();
  for (const w of transcription.words || []) {
    const span = document.createElement("span");
    span.className = "word" + (w.confidence < 0.5 ? " low" : "");
    span.textContent = w.word;
    span.dataset.start = w.start;
    span.dataset.end = w.end;
    span.title = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s, confidence ${Math.round(w.confidence * 100)} %`;
    span.addEventListener("click", () => {
      $("player").currentTime = w.start;
      $("player").play();
    });
    box.append(span, " ");
  }
  $("downloads").hidden = !transcription.text;
}

function showPartial(text) {
  const span = document.createElement("span");
  span.className = "partial";
  span.textContent = text;
  $("transcript").replaceChildren(span);
}

async function transcribeFile(file) {
  if (recorder) return;
  status(`Transcribing ${file.name}…`);
  play(URL.createObjectURL(file));
  const form = new FormData();
  form.append("file", file);
  const decoder = $("decoder").value;
  const started = performance.now();
  let response;
  try {
    response = await fetch("/v1/transcribe" + (decoder ? `?decoder=${decoder}` : ""), { method: "POST", body: form });
  } catch {
    status("The server does not answer.", true);
    return;
  }
  if (!response.ok) {
    status(await errorText(response), true);
    return;
  }
  const transcription = await response.json();
  show(transcription);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  status(`${file.name}: ${transcription.duration.toFixed(1)} s of audio in ${seconds} s (${transcription.decoder}).`);
}

// 16-bit PCM WAV of the recorded float chunks, for playback.
function wavBlob(chunks, rate) {
  const count = chunks.reduce((n, c) => n + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * count));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * count, true); text(8, "WAVE"); text(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * count, true);
  let at = 44;
  for (const chunk of chunks) {
    for (const x of chunk) {
      view.setInt16(at, Math.max(-1, Math.min(1, x)) * 32767, true);
      at += 2;
    }
  }
  return new Blob([view], { type: "audio/wav" });
}

async function startRecording() {
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (err) {
    status(`No microphone: ${err.message}`, true);
    return;
  }
  const context = new AudioContext();
  const source = context.createMediaStreamSource(media);
  const node = context.createScriptProcessor(4096, 1, 1);
  const decoder = $("decoder").value;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = `sample_rate=${context.sampleRate}&encoding=f32` + (decoder ? `&decoder=${decoder}` : "");
  const socket = new WebSocket(`${scheme}://${location.host}/v1/stream?${query}`);
  socket.binaryType = "arraybuffer";
  const pending = []; // audio recorded before the socket opened
  recorder = { media, context, source, node, socket, chunks: [], pending };
  socket.onopen = () => pending.splice(0).forEach((message) => socket.send(message));
  node.onaudioprocess = (event) => {
    const samples = new Float32Array(event.inputBuffer.getChannelData(0));
    if (!recorder) return;
    recorder.chunks.push(samples);
    if (socket.readyState === WebSocket.OPEN) socket.send(samples.buffer);
    else pending.push(samples.buffer);
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "partial") {
      showPartial(message.text);
    } else if (message.type === "final") {
      show(message);
      const how = message.mode === "exact" ? "streamed" : "re-decoded in windows while recording";
      status(`Recorded ${message.duration.toFixed(1)} s (${how}).`);
    }
  };
  socket.onclose = (event) => {
    if (event.code !== 1000 && event.code !== 1005) status(`The stream ended: ${event.reason || event.code}`, true);
  };
  source.connect(node);
  node.connect(context.destination);
  $("record").textContent = "■ Stop";
  $("record").classList.add("recording");
  status("Recording: speak, then press Stop.");
}

function stopRecording() {
  const r = recorder;
  recorder = null;
  r.node.disconnect();
  r.source.disconnect();
  r.media.getTracks().forEach((track) => track.stop());
  const end = JSON.stringify({ type: "end" });
  if (r.socket.readyState === WebSocket.OPEN) r.socket.send(end);
  else r.pending.push(end);
  play(URL.createObjectURL(wavBlob(r.chunks, r.context.sampleRate)));
  r.context.close();
  $("record").textContent = "● Record";
  $("record").classList.remove("recording");
  status("Finishing the transcript…");
}

async function download(format) {
  const response = await fetch(`/v1/render?format=${format}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(result),
  });
  if (!response.ok) {
    status(await errorText(response), true);
    return;
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `transcript.${format === "text" ? "txt" : format}`;
  link.click();
  URL.revokeObjectURL(link.href);
}

$("file").addEventListener("change", (event) => event.target.files[0] && transcribeFile(event.target.files[0]));
$("drop").addEventListener("dragover", (event) => {
  event.preventDefault();
  $("drop").classList.add("over");
});
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop").classList.remove("over");
  if (event.dataTransfer.files[0]) transcribeFile(event.dataTransfer.files[0]);
});
$("record").addEventListener("click", () => (recorder ? stopRecording() : startRecording()));
for (const button of document.querySelectorAll("#downloads button")) {
  button.addEventListener("click", () => download(button.dataset.format));
}
$("player").addEventListener("timeupdate", () => {
  const t = $("player").currentTime;
  for (const span of document.querySelectorAll("#transcript .word")) {
    span.classList.toggle("now", span.dataset.start <= t && t < span.dataset.end);
  }
});
describe();
