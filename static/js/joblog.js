/* Job page: keep the live log at its newest line unless the reader scrolled up.
   The server appends only new output to #job-log (htmx out-of-band swap, beforeend). */
(function () {
  "use strict";
  var SLACK = 24; // px from the bottom that still counts as "at the end"

  function log() { return document.getElementById("job-log"); }

  function atEnd(el) { return el.scrollHeight - el.scrollTop - el.clientHeight <= SLACK; }

  var follow = true;

  function note() {
    var el = document.getElementById("follow-note");
    if (el) {
      el.textContent = follow ? "following the newest lines; scroll up to stop"
                              : "paused at your position; scroll to the end to follow again";
      el.dataset.follow = follow ? "true" : "false";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var el = log();
    if (!el) { return; }
    el.scrollTop = el.scrollHeight;
    el.addEventListener("scroll", function () {
      var now = atEnd(el);
      if (now !== follow) { follow = now; note(); }
    });
    note();
  });

  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var el = log();
    if (el && follow && event.detail && event.detail.target === el) {
      el.scrollTop = el.scrollHeight;
    }
  });
})();
