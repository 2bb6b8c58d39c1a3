/* millimetric browser snippet, served as-is by GET /v1/a.js: see docs/snippet.md */
(function (w, d) {
  "use strict";
  var nav = navigator;
  var script = d.currentScript || d.querySelector("script[data-key]");
  var data = (script && script.dataset) || {};
  var key = data.key;
  var host = (data.host || (script && script.src ? new URL(script.src).origin : "")).replace(/\/+$/, "");
  if (w.mm && w.mm.getAnonymousId && !w.mm.q) return; // loaded twice
  var queued = w.mm && w.mm.q ? w.mm.q.slice() : [];
  var optedOut =
    data.respectDnt !== "false" &&
    (nav.doNotTrack == "1" || w.doNotTrack == "1" || nav.globalPrivacyControl === true);
  var events = [];
  var timer = 0;
  var memoryId = "";
  var userId = null;
  var lastUrl = "";

  function uuid() {
    if (w.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "10000000-1000-4000-8000-100000000000".replace(/[018]/g, function (c) {
      return (c ^ ((Math.random() * 16) >> (c / 4))).toString(16);
    });
  }

  // localStorage can be missing or throw (privacy modes, sandboxed frames): then memory only.
  function stored(value) {
    try {
      if (value) localStorage.setItem("mm_aid", value);
      return localStorage.getItem("mm_aid") || "";
    } catch (e) {
      return "";
    }
  }

  function anonymousId() {
    if (!memoryId) {
      memoryId = stored() || uuid();
      if (!optedOut) stored(memoryId);
    }
    return memoryId;
  }

  function send(batch, leaving) {
    var body = JSON.stringify({ events: batch });
    function retry() {
      // Kept for the next flush, oldest first; bounded so an unreachable host cannot grow memory.
      events = batch.concat(events).slice(0, 100);
      if (!leaving) schedule();
    }
    try {
      fetch(host + "/v1/batch", {
        method: "POST",
        // The 64 KiB in-flight limit of keepalive requests: a bigger body goes without it.
        keepalive: body.length < 60000,
        headers: { Authorization: "Bearer " + key, "Content-Type": "application/json" },
        body: body,
      }).then(function (r) {
        if (r.status > 499 || r.status == 429) retry();
        // A clock far off fails validation: the server's time of arrival beats losing the batch.
        else if (r.status == 400 && batch[0].timestamp) {
          batch.forEach(function (e) {
            delete e.timestamp;
          });
          send(batch, leaving);
        }
      }, retry);
    } catch (e) {}
  }

  function flush(leaving) {
    clearTimeout(timer);
    timer = 0;
    while (events.length) send(events.splice(0, 20), leaving);
  }

  function schedule() {
    if (!timer) timer = setTimeout(flush, 2000);
  }

  function add(name, properties, extra) {
    if (optedOut || !key) return;
    var e = {
      event: String(name),
      event_id: uuid(),
      timestamp: new Date().toISOString(),
      anonymous_id: anonymousId(),
      url: location.href,
      path: location.pathname,
      properties: properties || {},
    };
    if (userId) e.user_id = userId;
    if (d.referrer) e.referrer = d.referrer;
    for (var k in extra) e[k] = extra[k];
    events.push(e);
    events.length < 20 ? schedule() : flush();
  }

  function page(properties) {
    lastUrl = location.href;
    var p = {
      viewport: innerWidth + "x" + innerHeight,
      language: nav.language,
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
      title: d.title,
    };
    for (var k in properties) p[k] = properties[k];
    add("$pageview", p);
  }

  function navigated() {
    if (location.href != lastUrl) page();
  }

  var api = {
    track: function (name, properties) {
      add(name, properties);
    },
    identify: function (id, traits) {
      userId = String(id);
      add("$identify", traits, { user_id: userId });
    },
    page: page,
    flush: function () {
      flush();
    },
    getAnonymousId: anonymousId,
    setAnonymousId: function (id) {
      memoryId = String(id);
      if (!optedOut) stored(memoryId);
    },
  };

  // Every call is guarded: the snippet never throws into the page.
  var mm = {};
  Object.keys(api).forEach(function (name) {
    mm[name] = function () {
      try {
        return api[name].apply(null, arguments);
      } catch (e) {}
    };
  });
  w.mm = mm;
  queued.forEach(function (call) {
    if (mm[call[0]]) mm[call[0]].apply(null, call.slice(1));
  });

  if (optedOut) return;
  ["pushState", "replaceState"].forEach(function (name) {
    var original = history[name];
    history[name] = function () {
      var result = original.apply(this, arguments);
      try {
        navigated();
      } catch (e) {}
      return result;
    };
  });
  w.addEventListener("popstate", navigated);
  w.addEventListener("pagehide", function () {
    flush(true);
  });
  mm.page();
})(window, document);
