// pushpool dashboard: live refresh of the parts of a page that change, relative times, confirmations.
// The page polls its own URL every REFRESH_MS for its fragment (X-Pushpool-Live: the content of <main> only),
// with If-None-Match: an unchanged page answers 304 with no body.
// Each element marked data-live is swapped for its new version, unless the user is typing in it.
"use strict";
(function () {
  var REFRESH_MS = 2000;
  var etag = null;
  var indicator = document.getElementById("live");

  function ago(el) {
    var t = Date.parse(el.getAttribute("datetime"));
    if (isNaN(t)) { return; }
    var s = Math.max(0, Math.round((Date.now() - t) / 1000));
    var text = s < 60 ? s + " s ago" : s < 3600 ? Math.floor(s / 60) + " min ago" :
      s < 86400 ? Math.floor(s / 3600) + " h ago" : Math.floor(s / 86400) + " d ago";
    if (!el.title) { el.title = el.textContent; }
    el.textContent = text;
  }

  function refreshTimes(root) {
    (root || document).querySelectorAll("time[data-ago]").forEach(ago);
  }

  function swap(html) {
    var next = new DOMParser().parseFromString(html, "text/html");
    next.querySelectorAll("[data-live]").forEach(function (fresh) {
      var current = document.getElementById(fresh.id);
      if (!current || current.contains(document.activeElement)) { return; }
      if (current.innerHTML !== fresh.innerHTML) {
        current.replaceWith(fresh);
        refreshTimes(fresh);
      }
    });
  }

  function poll() {
    if (document.hidden) { return schedule(); }
    var headers = { "X-Pushpool-Live": "1" };
    if (etag) { headers["If-None-Match"] = etag; }
    fetch(location.href, { headers: headers, cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (response.redirected || response.status === 401) {  // signed out (expired or elsewhere)
          if (indicator) { indicator.textContent = "signed out"; indicator.classList.add("off"); }
          return null;
        }
        if (indicator) { indicator.classList.remove("off"); indicator.classList.toggle("beat"); }
        if (response.status === 304) { return schedule(); }
        etag = response.headers.get("ETag");
        return response.text().then(function (html) { swap(html); schedule(); });
      })
      .catch(function () {
        if (indicator) { indicator.classList.add("off"); }
        schedule();
      });
  }

  function schedule() { window.setTimeout(poll, REFRESH_MS); }

  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var question = button && button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    refreshTimes();
    window.setInterval(refreshTimes, 1000);
    if (document.querySelector("[data-live]")) {
      if (indicator) { indicator.hidden = false; }
      schedule();
    }
  });
})();
