/* taskreport dashboard: local times, running clocks, and live updates over Server-Sent Events.
   No framework, no build step: the pages work without it, and it only keeps them current. */
(function () {
  "use strict";
  var body = document.body;
  var page = body.dataset.page || "";

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function localTime(epoch) {
    var d = new Date(epoch * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function duration(seconds) {
    seconds = Math.max(0, seconds);
    if (seconds < 10) { return seconds.toFixed(1) + " s"; }
    var s = Math.floor(seconds), d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    var m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d) { return d + " d " + h + " h"; }
    if (h) { return h + " h " + m + " min"; }
    if (m) { return m + " min " + r + " s"; }
    return r + " s";
  }
  var LABELS = {pending: "Pending", pre_processing: "Pre-processing", processing: "Processing",
    post_processing: "Post-processing", success: "Success", error: "Error", cancelled: "Cancelled", stale: "Stale"};
  /* as the server writes them (taskreport/server/dashboard/_views.py) */
  function percent(t) {
    if (t.value === null || t.value === undefined || !t.value_max) { return null; }
    return Math.min(100, Math.floor(t.value * 100 / t.value_max));
  }
  function progressText(t) {
    if (t.value === null || t.value === undefined) { return "no progress reported"; }
    var p = percent(t);
    return t.value + " / " + t.value_max + (p === null ? "" : " (" + p + "%)");
  }
  /* a changed task as the server sends it: [id, status, value, value_max, updated, start, end, {name, created,
     tags, parent} for a task made a moment ago] (taskreport/server/dashboard/_feed.py) */
  function unpack(a) {
    var t = {id: a[0], status: a[1], value: a[2], value_max: a[3], updated: a[4], start_time: a[5], end_time: a[6]};
    if (a[7]) { t.name = a[7].name; t.created = a[7].created; t.tags = a[7].tags; t.parent = a[7].parent; }
    return t;
  }
  function num(v) { return v === "" || v === undefined || v === null ? null : Number(v); }

  function formatTimes(root) {
    root.querySelectorAll("time[data-epoch]").forEach(function (el) {
      el.textContent = localTime(Number(el.dataset.epoch));
      el.title = el.getAttribute("datetime");
    });
  }
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-field=elapsed]").forEach(function (el) {
      var start = num(el.dataset.start), end = num(el.dataset.end);
      if (start === null) { return; }
      var value = el.querySelector(".elapsed-value");
      value.textContent = duration((end === null ? now : end) - start);
    });
  }

  /* -- applying a change ------------------------------------------------------------------------ */
  function setElapsed(el, t) {
    if (!el) { return; }
    var label, start, end = null;
    if (t.end_time !== null && t.end_time !== undefined) {
      label = "took"; start = t.start_time !== null ? t.start_time : t.created; end = t.end_time;
    } else if (t.start_time !== null && t.start_time !== undefined) {
      label = "running for"; start = t.start_time;
    } else {
      label = "waiting for"; start = t.created !== undefined ? t.created : num(el.dataset.start);
    }
    el.dataset.start = start;
    el.dataset.end = end === null ? "" : end;
    el.querySelector(".elapsed-label").textContent = label;
    el.querySelector(".elapsed-value").textContent = duration((end === null ? Date.now() / 1000 : end) - start);
  }
  function setProgress(el, t) {
    if (!el) { return; }
    var bar = el.querySelector("progress");
    if (t.value === null || t.value === undefined) {
      bar.removeAttribute("value");
    } else {
      bar.max = t.value_max || 100;
      bar.value = Math.max(0, t.value);
    }
    if (t.name) { bar.setAttribute("aria-label", "Progress of " + t.name); }
    el.querySelector("[data-field=progress-text]").textContent = progressText(t);
  }
  function setTags(el, tags) {
    if (!el || !tags) { return; }
    el.textContent = "";
    Object.keys(tags).forEach(function (k) {
      var li = document.createElement("li"), span = document.createElement("span");
      span.className = "tag"; span.textContent = k + ":" + tags[k];
      li.appendChild(span); el.appendChild(li);
    });
  }
  function apply(el, t) {
    var shown = Number(el.dataset.updated || 0);
    if (t.updated !== null && t.updated < shown) { return false; }
    el.dataset.updated = t.updated;
    var badge = el.querySelector("[data-field=status]");
    if (badge) { badge.className = "badge s-" + t.status; badge.textContent = LABELS[t.status] || t.status; }
    setProgress(el.querySelector("[data-field=progress]"), t);
    setElapsed(el.querySelector("[data-field=elapsed]"), t);
    if (t.tags) { setTags(el.querySelector("[data-field=tags]"), t.tags); }
    var name = el.querySelector("a[data-field=name]");
    if (name && t.name && name.textContent !== t.name) { name.textContent = t.name; }
    return true;
  }

  /* -- the task list ---------------------------------------------------------------------------- */
  var statuses = (body.dataset.statuses || "").split(",").filter(Boolean);
  var nameFilter = (body.dataset.name || "").toLowerCase();
  var tagFilter = body.dataset.tag || "";
  function matches(t) {
    if (statuses.length && statuses.indexOf(t.status) < 0) { return false; }
    if (nameFilter && (t.name || "").toLowerCase().indexOf(nameFilter) < 0) { return false; }
    if (tagFilter) {
      var i = tagFilter.indexOf(":"), k = tagFilter.slice(0, i), v = tagFilter.slice(i + 1);
      if (!t.tags || t.tags[k] !== v) { return false; }
    }
    return true;
  }
  function insertRow(t) {
    var table = document.getElementById("tasks"), template = document.querySelector("template.row-template");
    if (!table || !template) { return; }
    var row = template.content.querySelector("tr").cloneNode(true);
    var link = row.querySelector("a[data-field=name]");
    row.dataset.task = t.id;
    row.dataset.updated = 0;
    link.href = body.dataset.base + "tasks/" + t.id + "/";
    link.textContent = t.name;
    apply(row, t);
    var tbody = table.querySelector("tbody");
    tbody.insertBefore(row, tbody.firstChild);
    var empty = document.getElementById("empty");
    if (empty) { empty.hidden = true; }
  }
  function onListChange(rows) {
    rows.forEach(function (t) {
      var el = document.querySelector("tr[data-task='" + t.id + "']");
      if (el) { apply(el, t); return; }
      if (t.name === undefined || !matches(t)) { return; }
      if (body.dataset.firstPage) { insertRow(t); }
      else { document.getElementById("new-tasks").hidden = false; }
    });
  }

  /* -- a task's page and a public page ---------------------------------------------------------- */
  var fetching = false, again = false;
  function refreshSections() {
    var url = body.dataset.live;
    if (!url) { return; }
    if (fetching) { again = true; return; }
    fetching = true;
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (answer) {
        if (!answer) { return; }
        Object.keys(answer.sections).forEach(function (name) {
          var holder = document.querySelector("[data-section='" + name + "']");
          if (!holder) { return; }
          var open = [];
          holder.querySelectorAll("details").forEach(function (d, i) { open[i] = d.open; });
          holder.innerHTML = answer.sections[name];
          holder.querySelectorAll("details").forEach(function (d, i) { if (open[i] === false) { d.open = false; } });
          formatTimes(holder);
        });
      })
      .catch(function () {})
      .then(function () {
        fetching = false;
        if (again) { again = false; refreshSections(); }
      });
  }
  function onTaskChange(rows) {
    var task = body.dataset.task, own = false;
    rows.forEach(function (t) {
      var found = false;
      document.querySelectorAll("[data-task='" + t.id + "']").forEach(function (el) {
        if (el.tagName === "BODY") { return; }
        found = true; apply(el, t);
      });
      if (t.id === task) {
        own = true;
        var cancel = document.getElementById("cancel-task");
        if (cancel && ["success", "error", "cancelled"].indexOf(t.status) >= 0) { cancel.closest("form").hidden = true; }
      } else if (!found) {
        own = true; /* a new child: its row comes with the sections */
      }
    });
    if (own) { refreshSections(); }
  }

  /* -- the stream ------------------------------------------------------------------------------- */
  var state = document.getElementById("live-state");
  function say(text) { if (state) { state.hidden = !text; state.textContent = text; } }
  function resync() {
    if (page === "list") {
      fetch(location.href, {credentials: "same-origin"}).then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var old = document.querySelector("#tasks tbody"), now = fresh.querySelector("#tasks tbody");
          if (old && now) { old.replaceWith(now); formatTimes(now.parentNode); }
        }).catch(function () {});
    } else {
      refreshSections();
    }
  }
  function connect() {
    var url = body.dataset.events;
    if (!url || !window.EventSource) { return; }
    var source = new EventSource(url), opened = 0;
    source.addEventListener("hello", function () {
      opened += 1;
      say("");
      body.dataset.connected = String(opened);
      if (opened > 1) { resync(); } /* what changed while the stream was being reopened */
    });
    source.addEventListener("tasks", function (e) {
      var rows = JSON.parse(e.data).map(unpack);
      if (page === "list") { onListChange(rows); } else { onTaskChange(rows); }
    });
    source.addEventListener("resync", function () { resync(); });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) { say("Live updates stopped: reload the page."); }
      else { say("Reconnecting…"); }
    };
  }

  document.querySelectorAll("input.copy").forEach(function (el) {
    el.addEventListener("focus", function () { el.select(); });
  });
  formatTimes(document);
  tick();
  setInterval(tick, 1000);
  connect();
}());
