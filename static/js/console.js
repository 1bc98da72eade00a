// Console shell behaviour: theme choice, the phone menu, dropdowns, copy buttons.
const root = document.documentElement;

function applyTheme(choice) {
  if (choice === "light" || choice === "dark") {
    root.dataset.theme = choice;
  } else {
    delete root.dataset.theme;
  }
  for (const button of document.querySelectorAll("[data-theme-choice]")) {
    button.setAttribute("aria-pressed", String(button.dataset.themeChoice === (choice || "system")));
  }
}

applyTheme(localStorage.getItem("theme"));

document.addEventListener("click", (event) => {
  const themeButton = event.target.closest("[data-theme-choice]");
  if (themeButton) {
    const choice = themeButton.dataset.themeChoice;
    if (choice === "system") localStorage.removeItem("theme");
    else localStorage.setItem("theme", choice);
    applyTheme(choice);
    return;
  }

  if (event.target.closest("[data-nav-toggle]")) {
    document.querySelector(".shell")?.classList.toggle("nav-open");
    return;
  }

  const copyButton = event.target.closest("[data-copy]");
  if (copyButton) {
    const source = document.getElementById(copyButton.dataset.copy);
    if (source) {
      navigator.clipboard?.writeText(source.textContent.trim());
      const label = copyButton.querySelector("[data-copy-label]");
      if (label) {
        const before = label.textContent;
        label.textContent = "Copied";
        setTimeout(() => { label.textContent = before; }, 1500);
      }
    }
    return;
  }

  // A click outside an open dropdown closes it.
  for (const open of document.querySelectorAll("details.dropdown[open]")) {
    if (!open.contains(event.target)) open.removeAttribute("open");
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    for (const open of document.querySelectorAll("details.dropdown[open]")) open.removeAttribute("open");
    document.querySelector(".shell")?.classList.remove("nav-open");
  }
});

// The playground's tab strip scrolls sideways on a narrow screen: keep the page's own tab
// in sight.
const currentProduct = document.querySelector(".pg-products [aria-current='page']");
if (currentProduct) {
  const strip = currentProduct.parentElement;
  if (strip.scrollWidth > strip.clientWidth) {
    strip.scrollLeft = currentProduct.offsetLeft - (strip.clientWidth - currentProduct.offsetWidth) / 2;
  }
}
