// Machinery dashboard: progressive behaviour only; every page and action works without it.
(function () {
  "use strict";

  // Forms with data-confirm ask before they post.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // Pages reload themselves every <meta name="machinery-refresh"> milliseconds, unless the
  // tab is hidden, the user is typing or selecting, or the pause box is ticked.
  var meta = document.querySelector('meta[name="machinery-refresh"]');
  // At most an hour: browsers fire a timer of more than 2^31 ms at once.
  var every = meta ? Math.min(parseInt(meta.getAttribute("content"), 10), 3600000) : 0;
  if (!(every > 0)) {
    return;
  }
  var paused = window.sessionStorage.getItem("machinery-paused") === "1";
  var header = document.querySelector("header.top");
  if (header) {
    var label = document.createElement("label");
    label.className = "live";
    var box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !paused;
    box.addEventListener("change", function () {
      paused = !box.checked;
      window.sessionStorage.setItem("machinery-paused", paused ? "1" : "0");
    });
    label.appendChild(box);
    label.appendChild(document.createTextNode(" live"));
    header.appendChild(label);
  }
  function busy() {
    var active = document.activeElement;
    var typing = active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA" ||
      active.tagName === "SELECT") && active.type !== "checkbox";
    var selection = window.getSelection && String(window.getSelection()).length > 0;
    return paused || document.hidden || typing || selection;
  }
  window.setInterval(function () {
    if (!busy()) {
      window.location.replace(window.location.href.replace(/([?&])flash=[^&#]*&?/, "$1").replace(/[?&]$/, ""));
    }
  }, every);
})();
