// The Responses page: the Output, Request and Response tabs of a result (the result is
// swapped in by htmx, so the clicks are caught on the document).

document.addEventListener("click", (event) => {
  const tab = event.target.closest?.(".tt-tabs [role='tab']");
  if (!tab) return;
  for (const other of tab.parentElement.querySelectorAll("[role='tab']")) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    const panel = document.getElementById(other.getAttribute("aria-controls"));
    if (panel) panel.hidden = !selected;
  }
});

document.addEventListener("keydown", (event) => {
  const tab = event.target.closest?.(".tt-tabs [role='tab']");
  if (!tab || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
  const tabs = [...tab.parentElement.querySelectorAll("[role='tab']")];
  const step = event.key === "ArrowRight" ? 1 : -1;
  const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
  next.focus();
  next.click();
});

// Streaming: with "Stream" ticked, the form goes over the page's websocket instead of
// htmx, and the response is shown as its events come (the text as it is written, every
// event in order); once the run is kept, the server's rendering of it takes their place.

const page = document.getElementById("rsp-page");
let socket = null;
let live = null;

function element(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  return made;
}

function setStreaming(on) {
  const stop = document.getElementById("rsp-stop");
  const submit = document.getElementById("rsp-submit");
  if (stop) stop.hidden = !on;
  if (submit) submit.disabled = on;
}

function showProblem(message) {
  const form = document.getElementById("rsp-form");
  if (!form) return;
  let alert = document.getElementById("rsp-form-error");
  if (!alert) {
    alert = element("div", "alert error");
    alert.id = "rsp-form-error";
    alert.setAttribute("role", "alert");
    form.prepend(alert);
  }
  alert.textContent = message;
}

function startLive() {
  const result = document.getElementById("rsp-result");
  const article = element("article", "tt-run rsp-live");
  const meta = element("div", "media-run-meta");
  meta.append(element("span", "chip", "streaming"));
  const output = element("div", "rsp-text");
  output.id = "rsp-output";
  const tools = element("div");
  const events = element("div", "pg-code rsp-live-events");
  const bar = element("div", "pg-code-bar");
  const count = element("span", "", "0 events");
  bar.append(count);
  const pre = element("pre");
  const code = element("code");
  code.id = "rsp-live-events";
  pre.append(code);
  events.append(bar, pre);
  article.append(meta, output, tools, events);
  result.replaceChildren(article);
  live = { output, tools, code, count, seen: 0 };
}

function showEvent(event) {
  if (!live) startLive();
  live.seen += 1;
  live.count.textContent = `${live.seen} event${live.seen === 1 ? "" : "s"}`;
  live.code.append(document.createTextNode(`${JSON.stringify(event)}\n`));
  if (event.type === "response.output_text.delta") {
    live.output.append(document.createTextNode(event.delta || ""));
  } else if (event.type === "response.output_item.done" && event.item?.type === "function_call") {
    live.tools.append(element("p", "rsp-tool-head", `Called ${event.item.name}`));
  }
}

function connect() {
  if (socket && socket.readyState <= WebSocket.OPEN) return socket;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}${page.dataset.socket}`);
  socket.addEventListener("message", (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "event") {
      showEvent(data.event);
    } else if (data.type === "done") {
      live = null;
      setStreaming(false);
      const result = document.getElementById("rsp-result");
      result.innerHTML = data.html;
      window.htmx.process(result);
      const history = document.getElementById("rsp-history");
      if (history) {
        history.outerHTML = data.history;
        window.htmx.process(document.getElementById("rsp-history"));
      }
    } else if (data.type === "stopped") {
      setStreaming(false);
      const chip = document.querySelector(".rsp-live .chip");
      if (chip) chip.textContent = "stopped";
      live = null;
    } else if (data.type === "problem") {
      setStreaming(false);
      showProblem(data.message);
    }
  });
  socket.addEventListener("close", () => {
    setStreaming(false);
    socket = null;
  });
  return socket;
}

function sendStreamed(form) {
  const fields = {};
  for (const [name, value] of new FormData(form)) {
    if (typeof value === "string") fields[name] = value;
  }
  document.getElementById("rsp-form-error")?.remove();
  const open = connect();
  const message = JSON.stringify({ type: "send", fields });
  live = null;
  setStreaming(true);
  if (open.readyState === WebSocket.OPEN) open.send(message);
  else open.addEventListener("open", () => open.send(message), { once: true });
}

if (page) {
  // Caught before htmx sees the submission (this listener runs first, on the way down).
  document.addEventListener(
    "submit",
    (event) => {
      const form = event.target;
      if (form.id !== "rsp-form" || !form.querySelector("#id_stream")?.checked) return;
      event.preventDefault();
      event.stopPropagation();
      sendStreamed(form);
    },
    true,
  );
  document.addEventListener("click", (event) => {
    if (!event.target.closest?.("#rsp-stop")) return;
    socket?.send(JSON.stringify({ type: "stop" }));
  });
}
