// The job centre's live side. On the Music and Video pages a websocket brings each
// change of the member's jobs as the card's new HTML; where the socket cannot open, the
// unfinished cards ask for themselves every few seconds (htmx, "job-poll"). On the
// console's other pages the same socket is opened only while the member has unfinished
// jobs, to tell them when one finishes, and closed once none is left.

const root = document.querySelector("[data-job-socket]");
const toasts = document.getElementById("job-toasts");
const page = document.getElementById("job-page");
const live = document.querySelector("[data-live-label]");
const POLL_MS = 2500;
const STATUS_WORDS = { succeeded: "is ready", failed: "failed", cancelled: "was cancelled" };

let socket = null;
let retries = 0;
let poller = null;
let done = false;
// On other pages: the jobs still to hear about.
const pending = new Set((root?.dataset.watch || "").split(",").filter(Boolean));

function setLive(text, state) {
  if (!live) return;
  live.textContent = text;
  live.dataset.state = state;
}

function pollCards() {
  for (const card of document.querySelectorAll(".job-card[data-unfinished]")) {
    window.htmx?.trigger(card, "job-poll");
  }
}

function startPolling() {
  if (page && !poller) poller = setInterval(pollCards, POLL_MS);
}

function stopPolling() {
  clearInterval(poller);
  poller = null;
}

function toast(message) {
  if (!toasts) return;
  const box = document.createElement("div");
  box.className = `job-toast is-${message.status}`;
  box.setAttribute("role", "status");
  const title = document.createElement("strong");
  title.textContent = `Your ${message.kind} job ${STATUS_WORDS[message.status] || "ended"}`;
  const prompt = document.createElement("span");
  prompt.textContent = message.prompt;
  const open = document.createElement("a");
  open.href = message.url;
  open.className = "btn sm";
  open.textContent = "Open";
  const close = document.createElement("button");
  close.type = "button";
  close.className = "btn ghost sm";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "×";
  close.addEventListener("click", () => box.remove());
  box.append(title, prompt, open, close);
  toasts.append(box);
}

function update(message) {
  const card = document.getElementById(`job-${message.id}`);
  if (card) {
    const holder = document.createElement("template");
    holder.innerHTML = message.html.trim();
    const fresh = holder.content.firstElementChild;
    card.replaceWith(fresh);
    window.htmx?.process(fresh);
  } else if (page && message.kind === page.dataset.kind && !message.finished) {
    // Started elsewhere (another tab): it joins the list.
    document.getElementById("job-list")?.insertAdjacentHTML("afterbegin", message.html);
    window.htmx?.process(document.getElementById(`job-${message.id}`));
  } else if (message.finished) {
    toast(message);
  }
  if (message.finished) pending.delete(message.id);
  if (!page && pending.size === 0) {
    done = true;
    socket?.close(1000);
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let url = `${scheme}://${location.host}${root.dataset.jobSocket}`;
  if (pending.size) url += `?watch=${encodeURIComponent([...pending].join(","))}`;
  socket = new WebSocket(url);
  socket.addEventListener("open", () => {
    retries = 0;
    stopPolling();
    setLive("Live", "live");
  });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "job") update(message);
  });
  socket.addEventListener("close", (event) => {
    socket = null;
    if (done || event.code === 4401 || event.code === 4403) {
      setLive("Not live", "off");
      return;
    }
    setLive("Checking every few seconds", "polling");
    startPolling();
    retries += 1;
    setTimeout(connect, Math.min(30_000, 1000 * 2 ** retries));
  });
}

// Elapsed time of the unfinished jobs, every second.
function tick() {
  for (const clock of document.querySelectorAll("[data-started]")) {
    const seconds = Math.max(0, Math.round((Date.now() - Number(clock.dataset.started)) / 1000));
    clock.textContent = `${seconds} s`;
  }
}

document.addEventListener("click", (event) => {
  const clear = event.target.closest("[data-clear-frame]");
  if (clear) {
    const form = clear.closest("form");
    for (const radio of form.querySelectorAll("input[name=image]")) radio.checked = false;
    const upload = form.querySelector("input[name=upload]");
    if (upload) upload.value = "";
    return;
  }
  const copy = event.target.closest(".job-card [data-copy-link]");
  if (copy) {
    const link = new URL(copy.dataset.copyLink, window.location.href).href;
    navigator.clipboard?.writeText(link).then(() => copy.classList.add("is-done"));
  }
});

// Ctrl or Cmd+Enter in the prompt starts the job.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
  const form = event.target.closest?.("#job-form");
  if (form) {
    event.preventDefault();
    form.requestSubmit();
  }
});

if (root && (page || pending.size)) connect();
if (page) setInterval(tick, 1000);
