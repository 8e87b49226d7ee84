// Small progressive enhancements; every page works without this file.
"use strict";

document.addEventListener("click", (event) => {
  // Buttons with data-confirm ask first (e.g. before a random password is mailed).
  const button = event.target.closest("button[data-confirm]");
  if (button && !button.disabled && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});

document.addEventListener("submit", (event) => {
  // One submission per form: a double click must not mail two passwords.
  const form = event.target;
  if (form.dataset.submitted === "true") {
    event.preventDefault();
    return;
  }
  form.dataset.submitted = "true";
  form.setAttribute("aria-busy", "true");
});

window.addEventListener("pageshow", (event) => {
  // Coming back through the history cache: forms may be sent again.
  if (event.persisted) {
    for (const form of document.querySelectorAll("form[data-submitted]")) {
      delete form.dataset.submitted;
      form.removeAttribute("aria-busy");
    }
  }
});
