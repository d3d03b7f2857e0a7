// nimbus console: the little the pages do in the browser. Everything works without it; with
// it, the event editor says whether its JSON parses and a log's live tail streams in.
"use strict";
document.documentElement.classList.add("js");

document.addEventListener("DOMContentLoaded", function () {
  var payload = document.getElementById("payload");
  var status = document.getElementById("payload-status");
  if (payload && status) {
    var check = function () {
      try {
        JSON.parse(payload.value);
        status.textContent = "Valid JSON.";
        payload.removeAttribute("aria-invalid");
      } catch (e) {
        status.textContent = "Not valid JSON: " + e.message;
        payload.setAttribute("aria-invalid", "true");
      }
    };
    payload.addEventListener("input", check);
    check();
  }

  var tail = document.getElementById("tail");
  var toggle = document.getElementById("tail-toggle");
  if (tail && toggle) {
    var after = tail.getAttribute("data-after");
    var src = tail.getAttribute("data-src");
    var running = false;
    var timer = null;
    // At most this many entries stay in the list; older ones go first.
    var keep = 1000;
    var poll = function () {
      var url = src + "?after=" + encodeURIComponent(after);
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (body) {
          if (body.error) {
            stop();
            toggle.textContent = "Live tail stopped: " + body.error;
            return;
          }
          (body.entries || []).forEach(function (e) {
            var li = document.createElement("li");
            var meta = document.createElement("p");
            meta.className = "meta";
            meta.textContent = e.time + " · " + e.request_id;
            var pre = document.createElement("pre");
            pre.textContent = e.text;
            li.appendChild(meta);
            li.appendChild(pre);
            tail.appendChild(li);
          });
          while (tail.children.length > keep) { tail.removeChild(tail.firstChild); }
          if (body.next) { after = body.next; }
        })
        .catch(function () { /* the next poll tries again */ })
        .then(function () {
          // The next poll starts two seconds after this one ended, so polls never overlap.
          if (running) { timer = setTimeout(poll, 2000); }
        });
    };
    var stop = function () {
      running = false;
      if (timer) { clearTimeout(timer); timer = null; }
      toggle.textContent = "Start live tail";
    };
    toggle.addEventListener("click", function () {
      if (running) { stop(); return; }
      running = true;
      toggle.textContent = "Stop live tail";
      poll();
    });
  }
});
