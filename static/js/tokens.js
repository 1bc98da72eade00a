// The live token count beside a prompt. A form with `data-token-count` (the id of its
// counter, which carries the count's URL in `data-url`) and `data-token-kind` is counted a
// moment after the member stops typing or changes a field, when the page opens, and when
// htmx puts the form back after a run; the counter shows "N tokens · ≈ $X", or what is wrong.

const DELAY_MS = 300;
const timers = new WeakMap();
const tickets = new WeakMap();

function csrfToken() {
  try {
    return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || "";
  } catch {
    return "";
  }
}

async function count(form) {
  const counter = document.getElementById(form.dataset.tokenCount);
  if (!counter) return;
  const body = new FormData(form);
  body.set("kind", form.dataset.tokenKind);
  // Only the latest answer is shown, whatever order the answers come back in.
  const ticket = (tickets.get(counter) || 0) + 1;
  tickets.set(counter, ticket);
  let response;
  try {
    response = await fetch(counter.dataset.url, {
      method: "POST",
      body,
      headers: { "X-CSRFToken": csrfToken() },
      credentials: "same-origin",
    });
  } catch {
    return;
  }
  if (tickets.get(counter) !== ticket || !(response.ok || response.status === 400)) return;
  counter.innerHTML = await response.text();
}

function countSoon(form) {
  clearTimeout(timers.get(form));
  timers.set(form, setTimeout(() => count(form), DELAY_MS));
}

function formOf(target) {
  return target?.closest?.("form[data-token-count]");
}

for (const kind of ["input", "change"]) {
  document.addEventListener(kind, (event) => {
    const form = formOf(event.target);
    if (form) countSoon(form);
  });
}

document.addEventListener("htmx:load", (event) => {
  const element = event.target;
  const forms = element.matches?.("form[data-token-count]")
    ? [element]
    : [...(element.querySelectorAll?.("form[data-token-count]") || [])];
  for (const form of forms) count(form);
});

for (const form of document.querySelectorAll("form[data-token-count]")) count(form);
