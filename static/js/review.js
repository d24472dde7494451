/* The request page's decision: Approve stays disabled until every revision
   is ticked Viewed (the review progress says so) or "approve without
   viewing" is checked. The server enforces the same rule. */
(function () {
  "use strict";
  function update() {
    var approve = document.getElementById("approve");
    var without = document.getElementById("without-viewing");
    var progress = document.getElementById("review-progress");
    if (!approve || !without) { return; }
    var all = progress && progress.dataset.allViewed === "true";
    approve.disabled = !(all || without.checked);
    var hint = document.getElementById("approve-hint");
    if (hint) { hint.hidden = !approve.disabled; }
  }
  document.addEventListener("change", function (event) {
    if (event.target.id === "without-viewing") { update(); }
  });
  document.addEventListener("htmx:afterSettle", update);
  document.addEventListener("DOMContentLoaded", update);
})();
