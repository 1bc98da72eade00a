// The Voice page: what htmx cannot do. A voice's sample is fetched and played; the second
// player of a comparison plays when the first ends; the microphone is recorded with a
// live level meter, and the take, made a WAV file, is heard and then sent (as the file
// input's file, so that htmx uploads it as it uploads a picked file) or discarded.

const $ = (id) => document.getElementById(id);

function csrfToken() {
  try {
    return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || "";
  } catch {
    return "";
  }
}

// --- voice samples ---------------------------------------------------------------------

let previewUrl = null;

async function preview(button) {
  const select = $(button.dataset.previewVoice);
  const error = $("voice-preview-error");
  const player = $("voice-preview-audio");
  const form = button.closest("form");
  if (!select || !player || !form) return;
  error.textContent = "";
  if (!select.value) {
    error.textContent = "Pick a voice to hear first.";
    return;
  }
  const body = new FormData();
  body.append("voice", select.value);
  button.disabled = true;
  try {
    const response = await fetch(form.dataset.previewUrl, {
      method: "POST",
      body,
      headers: { "x-csrftoken": csrfToken() },
      credentials: "same-origin",
    });
    if (!response.ok) {
      error.textContent = (await response.text()) || `The sample failed (${response.status}).`;
      return;
    }
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(await response.blob());
    player.src = previewUrl;
    await player.play();
  } catch (exc) {
    error.textContent = `The sample could not be played: ${exc.message}`;
  } finally {
    button.disabled = false;
  }
}

// The players of a comparison take turns: the second starts when the first ends.
document.addEventListener(
  "ended",
  (event) => {
    const players = event.target.closest?.(".voice-players");
    if (!players) return;
    const all = [...players.querySelectorAll("audio")];
    const next = all[all.indexOf(event.target) + 1];
    if (next && next.played.length === 0) next.play().catch(() => {});
  },
  true,
);

// --- the microphone --------------------------------------------------------------------

let take = null; // {stream, media, context, analyser, chunks, frame, started}
let recorded = null; // {file, url}

function say(message) {
  const status = $("voice-mic-status");
  if (status) status.textContent = message;
}

function showRecording(on) {
  $("voice-record").hidden = on;
  $("voice-stop").hidden = !on;
  $("voice-recorder").classList.toggle("is-recording", on);
}

function drawLevel() {
  const canvas = $("voice-meter");
  if (!take || !canvas) return;
  const samples = new Float32Array(take.analyser.fftSize);
  take.analyser.getFloatTimeDomainData(samples);
  let sum = 0;
  for (const sample of samples) sum += sample * sample;
  const rms = Math.sqrt(sum / samples.length);
  // Decibels from -60 (silence) to 0 (full scale), as a share of the bar.
  const level = Math.max(0, Math.min(1, (20 * Math.log10(rms || 1e-6) + 60) / 60));
  const style = getComputedStyle(canvas);
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = style.getPropertyValue("--meter-track").trim() || "#ddd";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = style.getPropertyValue("--meter-fill").trim() || "#5b4cf0";
  context.fillRect(0, 0, Math.round(canvas.width * level), canvas.height);
  canvas.dataset.level = level.toFixed(3);
  const seconds = Math.floor((performance.now() - take.started) / 1000);
  $("voice-clock").textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  take.frame = requestAnimationFrame(drawLevel);
}

async function startRecording() {
  if (take) return;
  discard();
  if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
    say("This browser cannot record here (a microphone needs HTTPS); upload a file instead.");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (exc) {
    say(`The microphone could not be opened: ${exc.message}`);
    return;
  }
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  context.createMediaStreamSource(stream).connect(analyser);
  const media = new MediaRecorder(stream);
  take = { stream, media, context, analyser, chunks: [], frame: 0, started: performance.now() };
  media.addEventListener("dataavailable", (event) => take?.chunks.push(event.data));
  media.start(250);
  showRecording(true);
  say("Recording… press Stop when you are done.");
  drawLevel();
}

function stopRecording() {
  if (!take) return;
  const current = take;
  current.media.addEventListener("stop", async () => {
    cancelAnimationFrame(current.frame);
    current.stream.getTracks().forEach((track) => track.stop());
    current.context.close();
    take = null;
    showRecording(false);
    const canvas = $("voice-meter");
    canvas?.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    const blob = new Blob(current.chunks, { type: current.media.mimeType });
    try {
      const wav = await toWav(blob);
      recorded = { file: new File([wav], "recording.wav", { type: "audio/wav" }) };
      recorded.url = URL.createObjectURL(recorded.file);
    } catch (exc) {
      say(`The recording could not be read: ${exc.message}`);
      return;
    }
    $("voice-take-audio").src = recorded.url;
    $("voice-take").hidden = false;
    say("Listen to it, then send it to be transcribed or discard it.");
  });
  current.media.stop();
}

function discard() {
  if (recorded) URL.revokeObjectURL(recorded.url);
  recorded = null;
  const box = $("voice-take");
  if (box) box.hidden = true;
  const player = $("voice-take-audio");
  if (player) player.removeAttribute("src");
  say("");
}

function send() {
  const input = $("voice-file");
  const form = $("voice-transcribe-form");
  if (!recorded || !input || !form) return;
  const transfer = new DataTransfer();
  transfer.items.add(recorded.file);
  input.files = transfer.files;
  form.requestSubmit();
}

// The browser records in its own container (WebM with Opus in Chromium); the take is
// decoded and written as 16-bit mono WAV, which every transcriber reads and measures.
async function toWav(blob) {
  const context = new AudioContext();
  try {
    const audio = await context.decodeAudioData(await blob.arrayBuffer());
    const length = audio.length;
    const mono = new Float32Array(length);
    for (let channel = 0; channel < audio.numberOfChannels; channel++) {
      const data = audio.getChannelData(channel);
      for (let i = 0; i < length; i++) mono[i] += data[i] / audio.numberOfChannels;
    }
    const buffer = new ArrayBuffer(44 + length * 2);
    const view = new DataView(buffer);
    const text = (at, value) => [...value].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
    text(0, "RIFF");
    view.setUint32(4, 36 + length * 2, true);
    text(8, "WAVE");
    text(12, "fmt ");
    view.setUint32(16, 16, true);
    view.setUint16(20, 1, true); // PCM
    view.setUint16(22, 1, true); // mono
    view.setUint32(24, audio.sampleRate, true);
    view.setUint32(28, audio.sampleRate * 2, true);
    view.setUint16(32, 2, true);
    view.setUint16(34, 16, true);
    text(36, "data");
    view.setUint32(40, length * 2, true);
    for (let i = 0; i < length; i++) {
      const sample = Math.max(-1, Math.min(1, mono[i]));
      view.setInt16(44 + i * 2, sample < 0 ? sample * 0x8000 : sample * 0x7fff, true);
    }
    return new Blob([buffer], { type: "audio/wav" });
  } finally {
    context.close();
  }
}

// Once a recording was sent (or refused), the next one starts afresh.
document.addEventListener("htmx:afterRequest", (event) => {
  if (event.detail.elt?.id === "voice-transcribe-form" && event.detail.successful) discard();
});

document.addEventListener("click", (event) => {
  const button = event.target.closest?.("button");
  if (!button) return;
  if (button.dataset.previewVoice) preview(button);
  else if (button.id === "voice-record") startRecording();
  else if (button.id === "voice-stop") stopRecording();
  else if (button.id === "voice-discard") discard();
  else if (button.id === "voice-send") send();
});

// Ctrl or Cmd+Enter in the text speaks, as it sends in chat.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
  const form = event.target.closest?.("#voice-speech-form");
  if (form) {
    event.preventDefault();
    form.requestSubmit($("voice-speak"));
  }
});
