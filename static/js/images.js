// The Images page: what htmx cannot do. Pasted or dropped pictures become the file
// input's files (htmx uploads them on "change", as when they are picked), a reference
// chip can be removed, and "Copy link" puts a result's full link on the clipboard.

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

function addReferences(files) {
  const input = document.getElementById("img-upload");
  const pictures = [...files].filter((file) => IMAGE_TYPES.includes(file.type));
  if (!input || pictures.length === 0) return false;
  const transfer = new DataTransfer();
  for (const file of pictures) transfer.items.add(file);
  input.files = transfer.files;
  input.dispatchEvent(new Event("change", { bubbles: true }));
  return true;
}

document.addEventListener("paste", (event) => {
  if (!document.getElementById("img-form")) return;
  if (addReferences(event.clipboardData?.files || [])) event.preventDefault();
});

document.addEventListener("dragover", (event) => {
  const zone = event.target.closest?.("#img-form");
  if (!zone || !event.dataTransfer?.types.includes("Files")) return;
  event.preventDefault();
  zone.classList.add("is-dragging");
});

document.addEventListener("dragleave", (event) => {
  const zone = event.target.closest?.("#img-form");
  if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("is-dragging");
});

document.addEventListener("drop", (event) => {
  const zone = event.target.closest?.("#img-form");
  if (!zone) return;
  event.preventDefault();
  zone.classList.remove("is-dragging");
  addReferences(event.dataTransfer?.files || []);
});

// The same picture may be picked again once it has been uploaded (or refused).
document.addEventListener("htmx:afterRequest", (event) => {
  if (event.detail.elt?.id === "img-upload") event.detail.elt.value = "";
});

document.addEventListener("click", (event) => {
  const remove = event.target.closest("[data-remove-reference]");
  if (remove) {
    remove.closest(".media-ref")?.remove();
    const error = document.getElementById("img-ref-error");
    if (error) error.textContent = "";
    return;
  }
  const copy = event.target.closest("[data-copy-link]");
  if (copy) {
    const link = new URL(copy.dataset.copyLink, window.location.href).href;
    navigator.clipboard?.writeText(link).then(() => {
      copy.classList.add("is-done");
      copy.title = "Copied";
      setTimeout(() => {
        copy.classList.remove("is-done");
        copy.title = "Copy link";
      }, 1500);
    });
  }
});

// Ctrl or Cmd+Enter in the prompt generates, as it sends in chat.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
  const form = event.target.closest?.("#img-form");
  if (form) {
    event.preventDefault();
    form.requestSubmit();
  }
});
