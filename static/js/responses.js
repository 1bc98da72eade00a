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
