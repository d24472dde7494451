// Loaded right after the CDN's htmx: when the CDN is unreachable (staging
// networks without internet), load the vendored copy named by data-src, in
// place and synchronously, so htmx starts exactly as it would have.
(function () {
  "use strict";
  var me = document.currentScript;
  if (!window.htmx && me && me.dataset.src) {
    document.write('<script src="' + me.dataset.src + '"><\/script>');
  }
})();
