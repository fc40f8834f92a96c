// The wall board's only script (no library, served by the app, CSP script-src 'self').
// 1. /board/open: exchange the link's token (in the URL fragment, which no server or log sees)
//    for the board's HttpOnly cookie, then go to the board.
// 2. /board: listen to /board/stream (Server-Sent Events) and, when the figures changed,
//    re-fetch each panel's server-rendered HTML and swap it in; no reload.
(function () {
  "use strict";

  function openWithLink() {
    var match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (!match) return;
    var token = decodeURIComponent(match[1]);
    history.replaceState(null, "", location.pathname + location.search);
    var opening = document.getElementById("opening");
    if (opening) opening.hidden = false;
    fetch("/board/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token }),
    }).then(function (response) {
      if (response.ok) {
        location.replace("/board" + location.search);
      } else {
        if (opening) opening.hidden = true;
        document.getElementById("open-failed").hidden = false;
      }
    });
  }

  function live(main) {
    var status = document.getElementById("live");
    var text = document.getElementById("live-text");
    var query = main.dataset.query || "";
    var panels = Array.prototype.slice.call(document.querySelectorAll("[data-panel]"));
    var timer = null;
    var running = false;
    var again = false;

    function stamp() {
      var now = new Date();
      var time = document.createElement("time");
      time.id = "updated";
      time.dateTime = now.toISOString();
      time.textContent = now.toTimeString().slice(0, 8);
      text.textContent = status.dataset.updated + " ";
      text.appendChild(time);
    }

    function refresh() {
      if (running) { again = true; return; }
      running = true;
      Promise.all(panels.map(function (panel) {
        return fetch(main.dataset.panels + panel.dataset.panel + query, { credentials: "same-origin" })
          .then(function (response) {
            if (response.status === 401) { location.replace("/board/open"); }
            return response.ok ? response.text() : null;
          })
          .then(function (html) {
            if (html === null) return;
            var open = panel.querySelector("details[open]");
            if (!open) panel.innerHTML = html;  // a reader's open table stays until closed
          });
      })).then(function () {
        stamp();
        document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
      }).finally(function () {
        running = false;
        if (again) { again = false; schedule(); }
      });
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(refresh, 250);
    }

    var source = new EventSource(main.dataset.stream);
    source.addEventListener("open", function () { status.className = "live on"; });
    source.addEventListener("error", function () { status.className = "live off"; });
    source.addEventListener("changed", schedule);
    source.addEventListener("revoked", function () { source.close(); location.replace("/board/open"); });
    setInterval(schedule, 60000);  // deadlines pass without events: refresh each minute anyway
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (document.body.classList.contains("open-page")) openWithLink();
    var main = document.querySelector("main[data-stream]");
    if (main) live(main);
  });
})();
