// The Fetch page: switch the result between the rendered Markdown and the raw text.

document.addEventListener("click", (event) => {
  const button = event.target.closest?.("[data-fetch-view]");
  if (!button) return;
  const result = button.closest(".fetch-result");
  const view = button.dataset.fetchView;
  for (const other of result.querySelectorAll("[data-fetch-view]")) {
    other.setAttribute("aria-pressed", String(other === button));
  }
  for (const pane of result.querySelectorAll("[data-fetch-pane]")) {
    pane.hidden = pane.dataset.fetchPane !== view;
  }
});
