// Live update by polling: every data-poll milliseconds, fetch this page
// again and swap its <main> and the "updated" stamp. Without JavaScript
// the pages work as they are (reload to refresh).
(function () {
  "use strict";
  var ms = parseInt(document.body.dataset.poll, 10) || 2000;
  function tick() {
    fetch(location.href, { cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var main = doc.getElementById("main"), live = doc.getElementById("live");
        if (main) { document.getElementById("main").replaceWith(main); }
        if (live) { document.getElementById("live").replaceWith(live); }
      })
      .catch(function () {
        var live = document.getElementById("live");
        if (live) { live.textContent = "offline · retrying"; }
      })
      .finally(function () { setTimeout(tick, ms); });
  }
  setTimeout(tick, ms);
})();
