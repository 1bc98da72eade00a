// The chat playground: settings, the conversation over a websocket, attachments, compare, code.
//
// The server renders every message (Markdown sanitized, user text escaped) and sends it as
// HTML; this module only places those fragments, and builds its own controls with the DOM.

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const MAX_IMAGE_BYTES = 4 * 1024 * 1024;
const MAX_IMAGES = 4;
const LABELS = "ABC";
const MAX_COLUMNS = 3;

function start(root) {
  const state = JSON.parse(document.getElementById("pg-settings").textContent);
  let conversation = root.dataset.conversation ? Number(root.dataset.conversation) : null;
  let socket = null;
  let retries = 0;
  const waiting = []; // sent while the socket was still connecting: sent once it opens
  let pending = false; // a request that starts replies was sent, no answer yet
  const streaming = new Set(); // ids of replies being written
  let attachments = [];
  let lastDraft = null;
  let saveTimer = null;

  const columnsEl = document.getElementById("pg-columns");
  const input = document.getElementById("pg-input");
  const sendButton = document.getElementById("pg-send");
  const stopButton = document.getElementById("pg-stop");
  const errorEl = document.getElementById("pg-composer-error");
  const statusEl = document.getElementById("pg-status");
  const fileInput = document.getElementById("pg-file");
  const main = root.querySelector(".pg-main");

  const fields = {
    model: document.getElementById("pg-model"),
    system: document.getElementById("pg-system"),
    temperature: document.getElementById("pg-temperature"),
    top_p: document.getElementById("pg-top-p"),
    max_tokens: document.getElementById("pg-max-tokens"),
    stop: document.getElementById("pg-stop-seqs"),
    format: document.getElementById("pg-format"),
    schema: document.getElementById("pg-schema"),
  };

  if (/Mac|iPhone|iPad/.test(navigator.platform)) {
    for (const key of root.querySelectorAll("[data-mod]")) key.textContent = "⌘";
  }

  // ---------- the websocket ----------

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${root.dataset.socket}`);
    socket.addEventListener("open", () => {
      const reconnected = retries > 0;
      retries = 0;
      setStatus("");
      if (reconnected) refreshColumns();
      while (waiting.length) socket.send(JSON.stringify(waiting.shift()));
    });
    socket.addEventListener("message", (event) => receive(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      // The server stops this page's replies when the socket closes.
      waiting.length = 0;
      pending = false;
      streaming.clear();
      updateBusy();
      if (event.code === 4401) {
        setStatus("You are signed out. Reload the page to sign in again.", true);
        return;
      }
      if (event.code === 4403) {
        setStatus("You may not use the playground in this workspace.", true);
        return;
      }
      setStatus("Reconnecting…", true);
      setTimeout(connect, Math.min(8000, 400 * 2 ** retries++));
    });
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.CONNECTING) {
      waiting.push(message); // a message typed as the page opens is not lost
      return true;
    }
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("Not connected to the console. Retrying…");
      return false;
    }
    socket.send(JSON.stringify(message));
    return true;
  }

  function receive(message) {
    switch (message.type) {
      case "conversation":
        conversation = message.id;
        root.dataset.conversation = String(message.id);
        history.replaceState(null, "", message.url);
        document.getElementById("pg-title").textContent = message.title;
        refreshHistory();
        break;
      case "column":
        showColumn(message.column, message.leaf, message.html);
        pending = false;
        lastDraft = null;
        break;
      case "delta":
        showDelta(message);
        break;
      case "message":
        replaceMessage(message.id, message.html);
        streaming.delete(message.id);
        break;
      case "totals":
        replaceElement(document.getElementById("pg-totals"), message.html);
        break;
      case "idle":
        streaming.clear();
        pending = false;
        countSoon();
        break;
      case "problem":
        pending = false;
        showError(message.message);
        if (lastDraft && !input.value) restoreDraft();
        break;
    }
    updateBusy();
  }

  function refreshColumns() {
    if (conversation === null) return;
    state.columns.forEach((column, index) => {
      send({ type: "show", conversation, column: index, leaf: column.leaf });
    });
  }

  // ---------- what the page shows ----------

  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html; // rendered and sanitized by the server
    return template.content;
  }

  function replaceElement(element, html) {
    if (element) element.replaceWith(fragment(html));
  }

  function columnEl(index) {
    return columnsEl.querySelector(`.pg-column[data-column="${index}"]`);
  }

  function showColumn(index, leaf, html) {
    const column = columnEl(index);
    if (!column || !state.columns[index]) return;
    state.columns[index].leaf = leaf;
    const thread = column.querySelector(".pg-thread");
    thread.replaceChildren(fragment(html));
    for (const reply of thread.querySelectorAll(".pg-msg.is-streaming")) {
      streaming.add(Number(reply.dataset.id));
    }
    decorate(thread);
    follow(thread, true);
  }

  function showDelta(message) {
    const article = document.getElementById(`msg-${message.id}`);
    if (!article) return;
    const thread = article.closest(".pg-thread");
    const stick = thread.dataset.follow !== "0";
    article.querySelector(".pg-body").replaceChildren(fragment(message.html));
    let live = article.querySelector(".pg-live");
    if (!live) {
      live = document.createElement("div");
      live.className = "pg-live";
      article.append(live);
    }
    live.textContent = `${message.tokens} token${message.tokens === 1 ? "" : "s"}…`;
    decorate(article);
    if (stick) scrollDown(thread);
  }

  function replaceMessage(id, html) {
    const article = document.getElementById(`msg-${id}`);
    if (!article) return;
    const thread = article.closest(".pg-thread");
    const stick = thread.dataset.follow !== "0";
    const replacement = fragment(html);
    const fresh = replacement.firstElementChild;
    article.replaceWith(replacement);
    if (fresh) decorate(fresh);
    if (stick) scrollDown(thread);
  }

  // Code blocks in replies get a bar with their language and a copy button; long questions fold.
  function decorate(container) {
    for (const body of container.querySelectorAll(".pg-user .pg-body:not([data-folded])")) {
      body.dataset.folded = "1";
      if (body.scrollHeight <= 170) continue;
      body.classList.add("is-clamped");
      const more = document.createElement("button");
      more.type = "button";
      more.className = "pg-more";
      more.textContent = "Show more";
      more.addEventListener("click", () => {
        const clamped = body.classList.toggle("is-clamped");
        more.textContent = clamped ? "Show more" : "Show less";
      });
      body.after(more);
    }
    for (const block of container.querySelectorAll(".pg-md .pg-code")) {
      if (block.querySelector(".pg-code-bar")) continue;
      const bar = document.createElement("div");
      bar.className = "pg-code-bar";
      const language = document.createElement("span");
      language.textContent = block.dataset.lang || "text";
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "pg-copy";
      copy.dataset.action = "copy-code";
      copy.textContent = "Copy";
      bar.append(language, copy);
      block.prepend(bar);
    }
  }

  // ---------- scrolling: follow the reply unless the member scrolled up ----------

  function scrollDown(thread) {
    thread.scrollTop = thread.scrollHeight;
  }

  function follow(thread, on) {
    thread.dataset.follow = on ? "1" : "0";
    if (on) scrollDown(thread);
    const jump = thread.parentElement.querySelector(".pg-jump");
    if (jump) jump.hidden = on;
  }

  function watchScrolling(thread) {
    if (thread.dataset.watched) return;
    thread.dataset.watched = "1";
    thread.addEventListener("scroll", () => {
      const atBottom = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 48;
      thread.dataset.follow = atBottom ? "1" : "0";
      const jump = thread.parentElement.querySelector(".pg-jump");
      if (jump) jump.hidden = atBottom || !thread.querySelector(".pg-msg");
    }, { passive: true });
  }

  // ---------- busy state and messages ----------

  function updateBusy() {
    const busy = pending || streaming.size > 0;
    root.classList.toggle("is-busy", busy);
    sendButton.disabled = busy;
    stopButton.hidden = streaming.size === 0;
    sendButton.hidden = streaming.size > 0;
    if (!busy && document.activeElement === document.body) input.focus();
  }

  function isBusy() {
    return pending || streaming.size > 0;
  }

  function setStatus(text, warn = false) {
    statusEl.textContent = text;
    statusEl.classList.toggle("is-warn", warn);
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = !text;
  }

  function restoreDraft() {
    input.value = lastDraft.text;
    attachments = lastDraft.attachments;
    renderAttachments();
    autosize();
    countSoon();
  }

  // ---------- settings ----------

  function active() {
    return state.columns[state.active] || state.columns[0];
  }

  function snapshot() {
    return JSON.parse(JSON.stringify(state));
  }

  function fillSettings() {
    const column = active();
    fields.model.value = column.model;
    if (fields.model.value !== column.model) {
      const option = document.createElement("option");
      option.value = option.textContent = column.model;
      fields.model.append(option);
      fields.model.value = column.model;
    }
    fields.system.value = state.system || "";
    setRange("temperature", column.temperature, 1);
    setRange("top_p", column.top_p, 1);
    fields.max_tokens.value = column.max_tokens ?? "";
    fields.stop.value = (state.stop || []).join("\n");
    fields.format.value = state.response_format || "text";
    fields.schema.value = state.json_schema || "";
    fields.schema.hidden = fields.format.value !== "json_schema";
    for (const info of root.querySelectorAll("[data-model-info]")) {
      info.hidden = info.dataset.modelInfo !== column.model;
    }
    const several = state.columns.length > 1;
    const chip = document.getElementById("pg-settings-column");
    chip.hidden = !several;
    chip.textContent = `Column ${LABELS[state.active]}`;
    for (const el of columnsEl.querySelectorAll(".pg-column")) {
      el.classList.toggle("is-active", several && Number(el.dataset.column) === state.active);
    }
  }

  function setRange(name, value, fallback) {
    const field = fields[name];
    const output = document.getElementById(`${field.id}-value`);
    field.value = value ?? fallback;
    output.textContent = value == null ? "default" : Number(value).toFixed(2);
    output.classList.toggle("is-default", value == null);
    root.querySelector(`[data-reset="${name}"]`).hidden = value == null;
  }

  function readSettings(event) {
    const column = active();
    const target = event.target;
    if (target === fields.model) {
      column.model = fields.model.value;
      const select = columnEl(state.active)?.querySelector(".pg-column-model");
      if (select) select.value = column.model;
    } else if (target === fields.system) {
      state.system = fields.system.value;
    } else if (target === fields.temperature) {
      column.temperature = Number(fields.temperature.value);
    } else if (target === fields.top_p) {
      column.top_p = Number(fields.top_p.value);
    } else if (target === fields.max_tokens) {
      const value = parseInt(fields.max_tokens.value, 10);
      column.max_tokens = Number.isFinite(value) && value > 0 ? value : null;
    } else if (target === fields.stop) {
      state.stop = fields.stop.value.split("\n").filter((s) => s.length).slice(0, 4);
    } else if (target === fields.format) {
      state.response_format = fields.format.value;
    } else if (target === fields.schema) {
      state.json_schema = fields.schema.value;
    } else {
      return;
    }
    fillSettingsLight();
    saveSoon();
  }

  // Refresh what follows from a value without rewriting the field being typed in.
  function fillSettingsLight() {
    const column = active();
    setRange("temperature", column.temperature, 1);
    setRange("top_p", column.top_p, 1);
    fields.schema.hidden = fields.format.value !== "json_schema";
    for (const info of root.querySelectorAll("[data-model-info]")) {
      info.hidden = info.dataset.modelInfo !== column.model;
    }
  }

  function saveSoon() {
    countSoon();
    if (conversation === null) return;
    clearTimeout(saveTimer);
    saveTimer = setTimeout(() => send({ type: "save", conversation, settings: snapshot() }), 700);
  }

  root.querySelector(".pg-settings").addEventListener("input", readSettings);
  root.querySelector(".pg-settings").addEventListener("change", readSettings);

  // ---------- columns: chat and compare ----------

  function setMode(mode) {
    if (mode === "compare" && state.columns.length === 1) addColumn();
    if (mode === "chat") {
      while (state.columns.length > 1) removeColumn(state.columns.length - 1);
    }
  }

  function syncColumns() {
    const count = state.columns.length;
    columnsEl.dataset.count = String(count);
    for (const button of root.querySelectorAll("[data-mode]")) {
      const compare = button.dataset.mode === "compare";
      button.setAttribute("aria-pressed", String(compare === count > 1));
    }
    root.querySelector(".pg-add-column").hidden = count === 1 || count >= MAX_COLUMNS;
    if (state.active >= count) state.active = 0;
    fillSettings();
  }

  function addColumn() {
    if (state.columns.length >= MAX_COLUMNS || isBusy()) return;
    const index = state.columns.length;
    const used = state.columns.map((c) => c.model);
    const models = [...fields.model.options].map((o) => o.value);
    const model = models.find((m) => !used.includes(m)) || state.columns[0].model;
    const source = state.columns[0];
    state.columns.push({
      model,
      temperature: source.temperature,
      top_p: source.top_p,
      max_tokens: source.max_tokens,
      leaf: source.leaf,
    });
    const shell = document.getElementById("pg-column-template").content.firstElementChild.cloneNode(true);
    labelColumn(shell, index);
    shell.querySelector(".pg-column-model").value = model;
    columnsEl.append(shell);
    watchScrolling(shell.querySelector(".pg-thread"));
    state.active = index;
    syncColumns();
    send({ type: "show", conversation, column: index, leaf: source.leaf });
    saveSoon();
  }

  function labelColumn(element, index) {
    element.dataset.column = String(index);
    element.setAttribute("aria-label", `Column ${LABELS[index]}`);
    element.querySelector(".pg-column-label").textContent = LABELS[index];
    element.querySelector(".pg-column-model").setAttribute("aria-label", `Model for column ${LABELS[index]}`);
    element.querySelector("[data-action='tune']").setAttribute("aria-label", `Parameters for column ${LABELS[index]}`);
    element.querySelector("[data-action='remove-column']").setAttribute("aria-label", `Remove column ${LABELS[index]}`);
  }

  function removeColumn(index) {
    if (index === 0 || isBusy()) return;
    columnEl(index)?.remove();
    state.columns.splice(index, 1);
    if (state.active >= state.columns.length) state.active = state.columns.length - 1;
    syncColumns();
    saveSoon();
  }

  columnsEl.addEventListener("change", (event) => {
    const select = event.target.closest(".pg-column-model");
    if (!select) return;
    const index = Number(select.closest(".pg-column").dataset.column);
    state.columns[index].model = select.value;
    if (index === state.active) fillSettings();
    saveSoon();
  });

  // ---------- sending, stopping, editing ----------

  function sendMessage() {
    if (isBusy()) return;
    const text = input.value;
    if (!text.trim() && attachments.length === 0) {
      showError("Write a message or attach an image first.");
      input.focus();
      return;
    }
    const sent = send({
      type: "send",
      conversation,
      text,
      images: attachments.map((a) => a.uri),
      settings: snapshot(),
    });
    if (!sent) return;
    showError("");
    lastDraft = { text, attachments };
    input.value = "";
    attachments = [];
    renderAttachments();
    autosize();
    pending = true;
    updateBusy();
    for (const thread of columnsEl.querySelectorAll(".pg-thread")) follow(thread, true);
  }

  function stop() {
    if (streaming.size === 0) return;
    send({ type: "stop" });
    setStatus("Stopping…");
    setTimeout(() => setStatus(""), 800);
  }

  function messageContext(element) {
    const article = element.closest(".pg-msg");
    const column = Number(element.closest(".pg-column").dataset.column);
    return { article, column, id: Number(article.dataset.id) };
  }

  function startEdit(article, column) {
    if (article.classList.contains("is-editing")) return;
    article.classList.add("is-editing");
    const editor = document.createElement("div");
    editor.className = "pg-editor";
    const area = document.createElement("textarea");
    area.value = article.dataset.text;
    area.setAttribute("aria-label", "Edit the message");
    const bar = document.createElement("div");
    bar.className = "pg-editor-bar";
    const hint = document.createElement("span");
    hint.className = "muted";
    const isUser = article.dataset.role === "user";
    hint.textContent = isUser
      ? "Sends the edited message as a new branch; the original stays."
      : "Saves your version as a new branch; the model's reply stays.";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "btn sm";
    cancel.textContent = "Cancel";
    const save = document.createElement("button");
    save.type = "button";
    save.className = "btn sm primary";
    save.textContent = isUser ? "Save and send" : "Save";
    bar.append(hint, cancel, save);
    editor.append(area, bar);
    article.querySelector(".pg-body").after(editor);
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);

    const close = () => {
      editor.remove();
      article.classList.remove("is-editing");
    };
    const submit = () => {
      if (isBusy()) return;
      const sent = send({
        type: "edit",
        conversation,
        column,
        message: Number(article.dataset.id),
        text: area.value,
        settings: snapshot(),
      });
      if (sent) {
        pending = isUser;
        updateBusy();
      }
    };
    cancel.addEventListener("click", close);
    save.addEventListener("click", submit);
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        submit();
      } else if (event.key === "Escape") {
        event.stopPropagation();
        close();
      }
    });
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      return;
    }
    button.classList.add("is-done");
    const label = button.classList.contains("pg-copy") ? button : null;
    if (label) label.textContent = "Copied";
    setTimeout(() => {
      button.classList.remove("is-done");
      if (label) label.textContent = "Copy";
    }, 1400);
  }

  root.addEventListener("click", (event) => {
    const target = event.target;
    const mode = target.closest("[data-mode]");
    if (mode) return setMode(mode.dataset.mode);
    const suggest = target.closest("[data-suggest]");
    if (suggest) {
      input.value = suggest.dataset.suggest;
      autosize();
      countSoon();
      input.focus();
      return;
    }
    const switcher = target.closest("[data-switch]");
    if (switcher && switcher.dataset.switch && !isBusy()) {
      const { column } = messageContext(switcher);
      send({ type: "switch", conversation, column, message: Number(switcher.dataset.switch), settings: snapshot() });
      return;
    }
    const copyRequest = target.closest("[data-copy-text]");
    if (copyRequest) return copyText(copyRequest.dataset.copyText, copyRequest);
    const action = target.closest("[data-action]");
    if (!action) return;
    switch (action.dataset.action) {
      case "copy-code":
        return copyText(action.closest(".pg-code").querySelector("pre").textContent, action);
      case "copy-message":
        return copyText(action.closest(".pg-msg").dataset.text, action);
      case "edit": {
        const { article, column } = messageContext(action);
        return startEdit(article, column);
      }
      case "regenerate": {
        if (isBusy()) return;
        const { column, id } = messageContext(action);
        if (send({ type: "regenerate", conversation, column, message: id, settings: snapshot() })) {
          pending = true;
          updateBusy();
        }
        return;
      }
      case "tune": {
        state.active = Number(action.closest(".pg-column").dataset.column);
        fillSettings();
        openSettings();
        fields.temperature.focus();
        return;
      }
      case "add-column":
        return addColumn();
      case "remove-column":
        return removeColumn(Number(action.closest(".pg-column").dataset.column));
      case "jump": {
        const thread = action.parentElement.querySelector(".pg-thread");
        return follow(thread, true);
      }
      case "code":
        return viewCode();
      case "toggle-settings":
        return toggleSettings();
    }
  });

  root.querySelector("[data-reset='temperature']").addEventListener("click", () => {
    active().temperature = null;
    fillSettingsLight();
    saveSoon();
  });
  root.querySelector("[data-reset='top_p']").addEventListener("click", () => {
    active().top_p = null;
    fillSettingsLight();
    saveSoon();
  });

  function narrow() {
    return window.matchMedia("(max-width: 1180px)").matches;
  }

  function openSettings() {
    root.classList.remove("settings-hidden");
    if (narrow()) root.classList.add("settings-open");
  }

  function toggleSettings() {
    const button = root.querySelector("[data-action='toggle-settings']");
    if (narrow()) {
      const open = root.classList.toggle("settings-open");
      root.classList.remove("settings-hidden");
      button.setAttribute("aria-expanded", String(open));
    } else {
      const hidden = root.classList.toggle("settings-hidden");
      button.setAttribute("aria-expanded", String(!hidden));
    }
  }

  document.getElementById("pg-composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  stopButton.addEventListener("click", stop);

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      sendMessage();
    }
  });
  input.addEventListener("input", () => {
    autosize();
    countSoon();
    if (!errorEl.hidden) showError("");
  });

  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || streaming.size === 0) return;
    if (document.querySelector("dialog[open], :popover-open")) return;
    event.preventDefault();
    stop();
  });

  function autosize() {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight + 2, 240)}px`;
  }

  // ---------- image attachments: pick, paste or drop ----------

  function readFile(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  async function addFiles(files) {
    const problems = [];
    for (const file of files) {
      const name = file.name || "The pasted file";
      if (!IMAGE_TYPES.includes(file.type)) {
        problems.push(`${name} is not a PNG, JPEG, GIF or WebP image.`);
        continue;
      }
      if (file.size > MAX_IMAGE_BYTES) {
        const size = (file.size / 1024 / 1024).toFixed(1);
        problems.push(`${name} is ${size} MB; an image may be at most 4 MB.`);
        continue;
      }
      if (attachments.length >= MAX_IMAGES) {
        problems.push(`Attach at most ${MAX_IMAGES} images to one message.`);
        break;
      }
      try {
        attachments.push({ name, uri: await readFile(file) });
      } catch {
        problems.push(`${name} could not be read.`);
      }
    }
    showError(problems.join(" "));
    renderAttachments();
  }

  function renderAttachments() {
    countSoon();
    const list = document.getElementById("pg-attachments");
    list.replaceChildren(...attachments.map((attachment, index) => {
      const thumb = document.createElement("div");
      thumb.className = "pg-thumb";
      const image = document.createElement("img");
      image.src = attachment.uri;
      image.alt = attachment.name;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.setAttribute("aria-label", `Remove ${attachment.name}`);
      remove.textContent = "×";
      remove.addEventListener("click", () => {
        attachments.splice(index, 1);
        renderAttachments();
      });
      thumb.append(image, remove);
      return thumb;
    }));
  }

  fileInput.addEventListener("change", () => {
    addFiles([...fileInput.files]);
    fileInput.value = "";
  });
  input.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });
  main.addEventListener("dragover", (event) => {
    if (![...(event.dataTransfer?.types || [])].includes("Files")) return;
    event.preventDefault();
    main.classList.add("is-dragging");
  });
  main.addEventListener("dragleave", (event) => {
    if (!main.contains(event.relatedTarget)) main.classList.remove("is-dragging");
  });
  main.addEventListener("drop", (event) => {
    if (!event.dataTransfer?.files?.length) return;
    event.preventDefault();
    main.classList.remove("is-dragging");
    addFiles([...event.dataTransfer.files]);
  });

  // ---------- View code ----------

  // The live token count: the request the next send would make (as "View code" shows it),
  // counted by the console a moment after the member stops typing or changes a setting.
  let countTimer;
  function countSoon() {
    const counter = document.getElementById("pg-tokens");
    if (!counter) return;
    clearTimeout(countTimer);
    countTimer = setTimeout(() => {
      const request = {
        conversation,
        settings: snapshot(),
        column: state.active,
        draft: input.value,
        images: attachments.length,
      };
      window.htmx.ajax("POST", counter.dataset.url, {
        source: counter,
        target: counter,
        swap: "innerHTML",
        values: { kind: "chat", state: JSON.stringify(request) },
      });
    }, 300);
  }

  function viewCode() {
    const dialog = document.getElementById("pg-code");
    const body = document.getElementById("pg-code-body");
    const loading = document.createElement("p");
    loading.className = "muted";
    loading.textContent = "Loading…";
    body.replaceChildren(loading);
    dialog.showModal();
    const request = { conversation, settings: snapshot(), column: state.active, draft: input.value };
    window.htmx.ajax("POST", root.dataset.codeUrl, {
      source: body,
      target: body,
      swap: "innerHTML",
      values: { state: JSON.stringify(request) },
    });
  }

  document.getElementById("pg-code").addEventListener("click", (event) => {
    const tab = event.target.closest("[data-tab]");
    if (!tab) return;
    for (const other of event.currentTarget.querySelectorAll("[data-tab]")) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      document.getElementById(`pg-panel-${other.dataset.tab}`).hidden = !selected;
    }
  });

  // ---------- history and presets ----------

  function refreshHistory() {
    window.htmx.ajax("GET", `${root.dataset.page}?c=${conversation}`, {
      target: "#pg-history",
      swap: "outerHTML",
    });
  }

  function presets() {
    const data = document.getElementById("pg-preset-data");
    return data ? JSON.parse(data.textContent) : [];
  }

  function showPresetControls() {
    const select = document.getElementById("pg-preset");
    const preset = presets().find((p) => String(p.id) === select.value);
    const remove = root.querySelector(".pg-preset-delete");
    remove.hidden = !(preset && preset.mine);
    remove.querySelector("[name=preset]").value = preset ? preset.id : "";
    const name = document.querySelector("#pg-preset-save [name=name]");
    if (name && preset && preset.mine && !name.value) name.value = preset.name;
    const shared = document.querySelector("#pg-preset-save [name=shared]");
    if (shared && preset && preset.mine) shared.checked = preset.shared;
  }

  function applyPreset(preset) {
    const values = preset.settings;
    state.system = values.system ?? "";
    state.stop = values.stop ?? [];
    state.response_format = values.response_format ?? "text";
    state.json_schema = values.json_schema ?? "";
    const column = active();
    if (values.model) column.model = values.model;
    column.temperature = values.temperature ?? null;
    column.top_p = values.top_p ?? null;
    column.max_tokens = values.max_tokens ?? null;
    const select = columnEl(state.active)?.querySelector(".pg-column-model");
    if (select && values.model) select.value = values.model;
    fillSettings();
    saveSoon();
  }

  root.addEventListener("change", (event) => {
    if (event.target.id !== "pg-preset") return;
    const preset = presets().find((p) => String(p.id) === event.target.value);
    if (preset) applyPreset(preset);
    showPresetControls();
  });

  document.body.addEventListener("htmx:configRequest", (event) => {
    if (event.detail.elt.closest?.("#pg-preset-save")) {
      event.detail.parameters.settings = JSON.stringify(snapshot());
    }
  });

  document.body.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target.id === "pg-presets" || event.target.id === "pg-presets") {
      const reopen = document.querySelector("[data-reopen]");
      if (reopen) document.getElementById(reopen.dataset.reopen)?.showPopover();
      showPresetControls();
    }
  });

  // ---------- start ----------

  for (const thread of columnsEl.querySelectorAll(".pg-thread")) {
    watchScrolling(thread);
    decorate(thread);
    follow(thread, true);
    for (const reply of thread.querySelectorAll(".pg-msg.is-streaming")) {
      // Left over from a page that closed mid-reply: it was stopped then.
      reply.classList.remove("is-streaming");
    }
  }
  syncColumns();
  showPresetControls();
  autosize();
  countSoon();
  connect();
  input.focus();
}

const root = document.getElementById("pg");
if (root) start(root);
