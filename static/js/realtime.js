// The Realtime page: a spoken session through the console's websocket (never a key here).
// The microphone is captured by an AudioWorklet (realtime-worklet.js) as 24 kHz PCM16 and
// sent as binary frames: while the talk button is held (push to talk), or all the time
// (voice activity, where the server finds the turns). The answer's audio arrives as binary
// frames, each after a `response.audio.delta` event naming its response, and is played
// at once; speaking again stops it and drops the rest of that answer (barge-in). Both
// sides are transcribed, every event is listed in the inspector (repeats collapsed into a
// count), and the latency from the end of speech to the first audio of the answer and
// the session's running cost are shown.

const $ = (id) => document.getElementById(id);
const page = $("rt-page");
const MAX_EVENTS = 400;
const MIN_TURN_BYTES = 4800; // 100 ms of audio: the least the server commits

const state = {
  ws: null,
  connected: false,
  mode: "ptt",
  talking: false,
  turnBytes: 0,
  mic: null, // {context, stream, node}
  player: null, // AudioContext at 24 kHz
  playHead: 0,
  sources: new Set(),
  response: null, // the response being answered
  dropped: new Set(), // responses interrupted: their remaining audio is not played
  pendingAudio: null, // the event of the binary frame to come
  speechEnded: null, // when the last turn ended (performance.now), until its first audio
  bytesIn: 0,
  bytesOut: 0,
  bargeIns: 0,
  started: 0,
  closing: false,
};

function rate() {
  return Number(page.dataset.sampleRate) || 24000;
}

// --- the state line and errors ---------------------------------------------------------

function setState(name, text) {
  const chip = $("rt-state");
  chip.dataset.state = name;
  chip.textContent = text;
  const live = name === "connected" || name === "connecting";
  $("rt-connect").hidden = live;
  $("rt-disconnect").hidden = !live;
  $("rt-model").disabled = live;
  $("rt-talk").disabled = !(name === "connected" && state.mode === "ptt");
}

function showError(message) {
  $("rt-error-text").textContent = message;
  $("rt-error").hidden = !message;
}

// --- the event inspector ----------------------------------------------------------------

let lastEntry = null;
let eventCount = 0;
// Deltas (and audio appends) come in runs, interleaved with one another: while a run goes
// on, each kind of delta is one entry with a count; any other event ends the run.
const runs = new Map();

function repeats(type) {
  return type?.endsWith(".delta") || type === "input_audio_buffer.append";
}

function log(direction, event) {
  eventCount += 1;
  $("rt-event-count").textContent = `${eventCount} event${eventCount === 1 ? "" : "s"}`;
  const list = $("rt-events");
  const seconds = ((performance.now() - state.started) / 1000).toFixed(2);
  const key = `${direction} ${event.type}`;
  const same = repeats(event.type) ? runs.get(key) : lastEntry?.key === key ? lastEntry : null;
  // The console's own meter is not part of the conversation: it ends no run.
  if (!repeats(event.type) && event.type !== "console.meter") runs.clear();
  if (same) {
    same.count += 1;
    same.latest = event;
    same.countEl.textContent = `×${same.count}`;
    same.countEl.hidden = false;
    same.timeEl.textContent = `${seconds} s`;
    if (same.details.open) same.pre.textContent = JSON.stringify(event, null, 2);
    return;
  }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const item = document.createElement("li");
  item.className = "rt-event";
  item.dataset.direction = direction;
  item.dataset.type = event.type || "?";
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  const arrow = document.createElement("span");
  arrow.className = "rt-dir";
  arrow.textContent = direction === "out" ? "↑" : "↓";
  arrow.title = direction === "out" ? "sent" : "received";
  const type = document.createElement("code");
  type.className = "rt-type";
  type.textContent = event.type || "(no type)";
  const count = document.createElement("span");
  count.className = "chip rt-count";
  count.hidden = true;
  const time = document.createElement("time");
  time.textContent = `${seconds} s`;
  summary.append(arrow, type, count, time);
  const pre = document.createElement("pre");
  details.append(summary, pre);
  item.append(details);
  list.append(item);
  const entry = { key, count: 1, latest: event, countEl: count, timeEl: time, details, pre };
  if (repeats(event.type)) runs.set(key, entry);
  details.addEventListener("toggle", () => {
    if (details.open) pre.textContent = JSON.stringify(entry.latest, null, 2);
  });
  lastEntry = entry;
  while (list.children.length > MAX_EVENTS) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// --- the conversation -------------------------------------------------------------------

function turn(role, id) {
  const conversation = $("rt-conversation");
  $("rt-empty")?.remove();
  let bubble = conversation.querySelector(`[data-turn="${CSS.escape(id)}"]`);
  if (!bubble) {
    bubble = document.createElement("div");
    bubble.className = `rt-turn rt-${role}`;
    bubble.dataset.turn = id;
    const who = document.createElement("span");
    who.className = "rt-who";
    who.textContent = role === "user" ? "You" : "Model";
    const text = document.createElement("p");
    text.className = "rt-text";
    bubble.append(who, text);
    conversation.append(bubble);
  }
  conversation.scrollTop = conversation.scrollHeight;
  return bubble.querySelector(".rt-text");
}

// --- sending ----------------------------------------------------------------------------

function send(event) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify(event));
  log("out", event);
}

function sessionUpdate() {
  const session = {
    input_audio_format: "pcm16",
    output_audio_format: "pcm16",
    turn_detection: state.mode === "vad" ? { type: "server_vad", silence_duration_ms: 500 } : null,
  };
  const voice = $("rt-voice").value;
  if (voice) session.voice = voice;
  const instructions = $("rt-instructions").value.trim();
  if (instructions) session.instructions = instructions;
  send({ type: "session.update", session });
}

// --- the microphone ---------------------------------------------------------------------

async function startMicrophone() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  const context = new AudioContext();
  await context.audioWorklet.addModule(page.dataset.worklet);
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "pcm16-capture", {
    processorOptions: { targetRate: rate() },
  });
  const silent = context.createGain();
  silent.gain.value = 0;
  source.connect(node).connect(silent).connect(context.destination);
  node.port.onmessage = ({ data }) => onFrame(data);
  state.mic = { context, stream, node };
}

function stopMicrophone() {
  const mic = state.mic;
  state.mic = null;
  if (!mic) return;
  mic.node.port.onmessage = null;
  mic.stream.getTracks().forEach((track) => track.stop());
  mic.context.close().catch(() => {});
}

function drawLevel(level) {
  const canvas = $("rt-meter");
  const context = canvas.getContext("2d");
  const styles = getComputedStyle(canvas);
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = styles.getPropertyValue("--meter-fill").trim() || "#5b4cf0";
  const width = Math.min(1, level * 4) * canvas.width;
  context.fillRect(0, 0, width, canvas.height);
  canvas.dataset.level = level.toFixed(3);
}

function onFrame({ pcm, level }) {
  drawLevel(level);
  // The socket can be closing before its close event has marked the page disconnected.
  if (!state.connected || state.ws?.readyState !== WebSocket.OPEN) return;
  if (state.mode === "ptt" && !state.talking) return;
  state.ws.send(pcm);
  state.bytesIn += pcm.byteLength;
  state.turnBytes += pcm.byteLength;
  const run = runs.get("out input_audio_buffer.append");
  const bytes = (run?.latest.bytes || 0) + pcm.byteLength;
  log("out", { type: "input_audio_buffer.append", bytes, note: "binary frames of PCM16 at 24 kHz" });
}

// --- playback and barge-in --------------------------------------------------------------

function play(buffer) {
  const player = state.player;
  if (!player) return;
  const samples = new Int16Array(buffer);
  const audio = player.createBuffer(1, samples.length, rate());
  const channel = audio.getChannelData(0);
  for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 0x8000;
  const source = player.createBufferSource();
  source.buffer = audio;
  source.connect(player.destination);
  const at = Math.max(state.playHead, player.currentTime + 0.02);
  source.start(at);
  state.playHead = at + audio.duration;
  state.sources.add(source);
  page.dataset.playing = "true";
  source.onended = () => {
    state.sources.delete(source);
    if (!state.sources.size) page.dataset.playing = "false";
  };
}

function bargeIn() {
  const playing = state.sources.size > 0;
  for (const source of state.sources) {
    source.onended = null;
    try {
      source.stop();
    } catch {}
  }
  state.sources.clear();
  state.playHead = 0;
  page.dataset.playing = "false";
  if (state.response) state.dropped.add(state.response);
  if (playing) {
    state.bargeIns += 1;
    page.dataset.bargeIns = String(state.bargeIns);
    const bubble = document.querySelector(`[data-turn="${CSS.escape(state.response || "")}"]`);
    bubble?.classList.add("is-interrupted");
  }
}

function onAudio(buffer) {
  const meta = state.pendingAudio;
  state.pendingAudio = null;
  state.bytesOut += buffer.byteLength;
  const out = $("rt-audio-out");
  out.dataset.bytes = String(state.bytesOut);
  out.textContent = `${(state.bytesOut / (rate() * 2)).toFixed(1)} s`;
  if (meta && state.dropped.has(meta.response_id)) return;
  if (state.speechEnded !== null) {
    $("rt-latency").textContent = `${Math.round(performance.now() - state.speechEnded)} ms`;
    state.speechEnded = null;
  }
  play(buffer);
}

// --- events from the session ------------------------------------------------------------

function onEvent(event) {
  log("in", event);
  switch (event.type) {
    case "session.created":
      setState("connected", `Connected · ${event.session?.model || ""}`);
      sessionUpdate();
      break;
    case "input_audio_buffer.speech_started":
      bargeIn();
      break;
    case "input_audio_buffer.speech_stopped":
      state.speechEnded = performance.now();
      break;
    case "conversation.item.input_audio_transcription.delta": {
      const text = turn("user", event.item_id);
      text.textContent += event.delta || "";
      break;
    }
    case "conversation.item.input_audio_transcription.completed":
      turn("user", event.item_id).textContent = event.transcript || "";
      break;
    case "response.created":
      state.response = event.response?.id || null;
      break;
    case "response.audio_transcript.delta":
      if (!state.dropped.has(event.response_id)) {
        turn("assistant", event.response_id).textContent += event.delta || "";
      }
      break;
    case "response.audio.delta":
      state.pendingAudio = event;
      break;
    case "response.done":
      if (event.response?.status === "cancelled") {
        document.querySelector(`[data-turn="${CSS.escape(event.response.id || "")}"]`)?.classList.add("is-interrupted");
      }
      break;
    case "console.meter":
      $("rt-cost").textContent = event.cost_text;
      $("rt-audio-in").textContent = `${Number(event.audio_in_seconds).toFixed(1)} s`;
      break;
    case "error":
      showError(event.error?.message || "The session reported an error.");
      break;
  }
}

// --- connecting -------------------------------------------------------------------------

async function connect() {
  showError("");
  setState("connecting", "Connecting…");
  state.started = performance.now();
  state.player = new AudioContext({ sampleRate: rate() });
  try {
    await startMicrophone();
  } catch (exc) {
    setState("idle", "Not connected");
    showError(`The microphone could not be opened: ${exc.message}`);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const model = encodeURIComponent($("rt-model").value || "mira");
  const ws = new WebSocket(`${scheme}//${location.host}${page.dataset.socket}?model=${model}`, ["mira-realtime.v1"]);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onopen = () => {
    state.connected = true;
  };
  ws.onmessage = ({ data }) => {
    if (typeof data === "string") onEvent(JSON.parse(data));
    else onAudio(data);
  };
  ws.onclose = ({ code, reason }) => {
    const expected = state.closing;
    teardown();
    if (!expected && code !== 1000 && $("rt-error").hidden) {
      showError(reason || `The session closed (${code}).`);
    }
    setState("idle", code === 1000 || expected ? "Session ended" : `Closed (${code})`);
  };
}

function teardown() {
  state.connected = false;
  state.talking = false;
  state.ws = null;
  state.closing = false;
  bargeIn();
  stopMicrophone();
  state.player?.close().catch(() => {});
  state.player = null;
  $("rt-talk").setAttribute("aria-pressed", "false");
}

function disconnect() {
  if (!state.ws) return;
  state.closing = true;
  state.ws.close(1000, "Disconnected");
}

// --- push to talk -----------------------------------------------------------------------

function talkStart() {
  if (!state.connected || state.mode !== "ptt" || state.talking) return;
  bargeIn();
  state.talking = true;
  state.turnBytes = 0;
  $("rt-talk").setAttribute("aria-pressed", "true");
  $("rt-talk-label").textContent = "Listening… release to send";
}

function talkEnd() {
  if (!state.talking) return;
  state.talking = false;
  $("rt-talk").setAttribute("aria-pressed", "false");
  $("rt-talk-label").textContent = "Hold to talk";
  if (state.turnBytes < MIN_TURN_BYTES) {
    send({ type: "input_audio_buffer.clear" });
    return;
  }
  state.speechEnded = performance.now();
  send({ type: "input_audio_buffer.commit" });
  send({ type: "response.create" });
}

function setMode(mode) {
  state.mode = mode;
  $("rt-mode-help").textContent =
    mode === "ptt"
      ? "Hold the button (or the space bar) while you speak; let go to get the answer."
      : "Just speak: the model answers when you pause, and speaking again interrupts it.";
  $("rt-talk").disabled = !(state.connected && mode === "ptt");
  if (state.connected) {
    talkEnd();
    sessionUpdate();
  }
}

$("rt-connect").addEventListener("click", connect);
$("rt-disconnect").addEventListener("click", disconnect);
$("rt-events-clear").addEventListener("click", () => {
  $("rt-events").replaceChildren();
  lastEntry = null;
  runs.clear();
  eventCount = 0;
  $("rt-event-count").textContent = "0 events";
});
const talk = $("rt-talk");
talk.addEventListener("pointerdown", (event) => {
  talk.setPointerCapture?.(event.pointerId);
  talkStart();
});
talk.addEventListener("pointerup", talkEnd);
talk.addEventListener("pointercancel", talkEnd);
document.addEventListener("keydown", (event) => {
  if (event.code !== "Space" || event.repeat) return;
  if (event.target.closest?.("input, textarea, select")) return;
  if (!state.connected || state.mode !== "ptt") return;
  event.preventDefault();
  talkStart();
});
document.addEventListener("keyup", (event) => {
  if (event.code === "Space") talkEnd();
});
for (const radio of document.querySelectorAll('input[name="rt-mode"]')) {
  radio.addEventListener("change", () => radio.checked && setMode(radio.value));
}
$("rt-voice").addEventListener("change", () => state.connected && sessionUpdate());
$("rt-instructions").addEventListener("change", () => state.connected && sessionUpdate());
window.addEventListener("pagehide", disconnect);
page.dataset.playing = "false";
page.dataset.bargeIns = "0";
