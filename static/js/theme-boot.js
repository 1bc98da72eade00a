// Runs before the first paint so a chosen theme does not flash.
const savedTheme = localStorage.getItem("theme");
if (savedTheme === "light" || savedTheme === "dark") document.documentElement.dataset.theme = savedTheme;
