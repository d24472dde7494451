/* Site-wide behaviour without inline handlers (the Content-Security-Policy
   allows scripts from this origin only):
   - a form or submit button with data-confirm asks before submitting;
   - a form with data-once disables its buttons once submitted (no double runs). */
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var message = (button && button.dataset.confirm) || form.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
      return;
    }
    if (form.hasAttribute("data-once")) {
      window.setTimeout(function () {
        form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      }, 0);
    }
  });
})();

/* Links and GET forms with data-busy (e.g. "Show plan": the target's env.py
   computes it, which can take many seconds) show a progress banner until the
   next page arrives. */
(function () {
  "use strict";
  function busy(text) {
    var banner = document.getElementById("busy");
    if (!banner) { return; }
    document.getElementById("busy-text").textContent = text;
    banner.hidden = false;
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-busy]");
    if (link && !event.defaultPrevented && event.button === 0 && !event.ctrlKey &&
        !event.metaKey && !event.shiftKey) {
      busy(link.dataset.busy);
    }
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.busy && !event.defaultPrevented) { busy(form.dataset.busy); }
  });
  // back/forward cache: a page shown again must not keep its banner
  window.addEventListener("pageshow", function () {
    var banner = document.getElementById("busy");
    if (banner) { banner.hidden = true; }
  });
})();

/* Buttons with data-details="open|close" open or close every <details> of
   their section (per-revision SQL); the plan form's button turns red when a
   dangerous command (downgrade, stamp) is chosen. */
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-details]");
    if (!button) { return; }
    var scope = button.closest(".sql-sections") || document;
    scope.querySelectorAll("details").forEach(function (d) {
      d.open = button.dataset.details === "open";
    });
  });
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (select.name !== "command" || !select.form) { return; }
    var submit = select.form.querySelector("button[type=submit]");
    if (submit) { submit.classList.toggle("danger", select.value !== "upgrade"); }
  });
})();
