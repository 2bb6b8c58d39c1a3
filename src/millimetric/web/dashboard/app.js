// The Millimetric dashboard: a client of the admin API (/admin/*) and the read API (/v1/*).
// Every number on screen is one the read API returned for the range shown; nothing is computed
// from raw rows except the classifier rules and event properties, which are labelled as samples.

const TOKEN_KEY = "millimetric.token";
const KEY_PATTERN = /^(pk|sk|rk|ak)_[a-z0-9]+_[0-9a-f]{8}_/;
const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const RANGES = [
  ["today", "Today"],
  ["7d", "Last 7 days"],
  ["30d", "Last 30 days"],
  ["12mo", "Last 12 months"],
  ["custom", "Custom range…"],
];
// Group-by columns the read API can also filter by, and the parameter that filters them.
const FILTER_OF = { source: "source", medium: "medium", country: "country", event_name: "event" };
const FILTER_LABEL = { source: "Source", medium: "Medium", country: "Country", event: "Event" };
const PAGEVIEW = "$pageview";
const LIVE_REFRESH_MS = 15000;
const RULE_SAMPLE = 500; // raw rows read to name the classifier rule behind each source
const ROUTES = ["/v1/track", "/v1/batch", "/v1/identify"];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  mode: null, // "user" (a JWT: admin API and every project) or "key" (one project, read only)
  me: null,
  projects: [],
  generation: 0,
  liveTimer: null,
};

// ---------------------------------------------------------------------------------------------
// Small helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, value);
  for (const child of children) el.append(child instanceof Node ? child : String(child));
  return el;
}

const $ = (selector, root = document) => root.querySelector(selector);
const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const pad = (n) => String(Math.trunc(n)).padStart(2, "0");

function iso(d) {
  const offset = -d.getTimezoneOffset();
  const sign = offset >= 0 ? "+" : "-";
  const a = Math.abs(offset);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
    `T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${sign}${pad(a / 60)}:${pad(a % 60)}`
  );
}
const ymd = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
const day = (d, n = 0) => new Date(d.getFullYear(), d.getMonth(), d.getDate() + n);
function parseDay(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || "");
  return m ? new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : null;
}

class ApiFailure extends Error {
  constructor(status, body) {
    const detail = body && body.details ? ` (${Object.values(body.details).flat().join(", ")})` : "";
    super(`${(body && body.error) || `HTTP ${status}`}${detail}`);
    this.status = status;
    this.code = body && body.error;
    this.body = body;
  }
}

async function api(path, { method = "GET", params = null, body = undefined, token = state.token } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const failure = new ApiFailure(response.status, data);
    if (response.status === 401 && state.mode && token === state.token) {
      signOut("Your session has ended. Sign in again.");
    }
    throw failure;
  }
  return data;
}

// ---------------------------------------------------------------------------------------------
// Where we are: the URL fragment holds the view, project, range, comparison and filters, so that
// a view can be bookmarked and the back button undoes a filter.

function route() {
  const [view, query] = location.hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const filters = {};
  for (const name of Object.values(FILTER_OF)) if (params.get(name)) filters[name] = params.get(name);
  return {
    view: ["overview", "live", "settings"].includes(view) ? view : "overview",
    project: params.get("project"),
    range: RANGES.some(([key]) => key === params.get("range")) ? params.get("range") : "7d",
    from: params.get("from"),
    to: params.get("to"),
    compare: params.get("compare") === "1",
    metric: ["visitors", "pageviews", "sessions"].includes(params.get("metric")) ? params.get("metric") : "visitors",
    filters,
  };
}

function go(changes) {
  const next = { ...route(), ...changes };
  const params = new URLSearchParams();
  if (next.project) params.set("project", next.project);
  params.set("range", next.range);
  if (next.range === "custom") {
    params.set("from", next.from || "");
    params.set("to", next.to || "");
  }
  if (next.compare) params.set("compare", "1");
  if (next.metric !== "visitors") params.set("metric", next.metric);
  for (const [name, value] of Object.entries(next.filters)) params.set(name, value);
  location.hash = `${next.view}?${params}`;
}

function period(where) {
  const now = new Date();
  const today = day(now);
  let from;
  let to;
  let interval = "day";
  if (where.range === "today") {
    [from, to, interval] = [today, day(today, 1), "hour"];
  } else if (where.range === "30d") {
    [from, to] = [day(today, -29), day(today, 1)];
  } else if (where.range === "12mo") {
    from = new Date(now.getFullYear(), now.getMonth() - 11, 1);
    to = new Date(now.getFullYear(), now.getMonth() + 1, 1);
    interval = "month";
  } else if (where.range === "custom" && parseDay(where.from) && parseDay(where.to) && where.from <= where.to) {
    from = parseDay(where.from);
    to = day(parseDay(where.to), 1);
    const days = Math.round((to - from) / 864e5);
    interval = days <= 2 ? "hour" : days <= 92 ? "day" : "month";
  } else {
    [from, to] = [day(today, -6), day(today, 1)];
  }
  let previous;
  if (interval === "month") {
    const months = (to.getFullYear() - from.getFullYear()) * 12 + to.getMonth() - from.getMonth();
    previous = { from: new Date(from.getFullYear(), from.getMonth() - months, 1), to: from };
  } else {
    const days = Math.round((to - from) / 864e5);
    previous = { from: day(from, -days), to: from };
  }
  return { from, to, interval, previous };
}

function buckets(from, to, interval) {
  const out = [];
  let d = new Date(from);
  while (d < to && out.length < 1000) {
    out.push(d);
    if (interval === "hour") d = new Date(d.getTime() + 36e5);
    else if (interval === "month") d = new Date(d.getFullYear(), d.getMonth() + 1, 1);
    else d = day(d, 1);
  }
  return out;
}

function describeRange(from, to, interval) {
  const last = new Date(to.getTime() - 1);
  const opts = { day: "numeric", month: "short" };
  if (interval === "month") {
    const m = { month: "short", year: "numeric" };
    return `${from.toLocaleDateString("en-GB", m)} – ${last.toLocaleDateString("en-GB", m)}`;
  }
  if (ymd(from) === ymd(last)) return from.toLocaleDateString("en-GB", { ...opts, year: "numeric" });
  return `${from.toLocaleDateString("en-GB", opts)} – ${last.toLocaleDateString("en-GB", { ...opts, year: "numeric" })}`;
}

// ---------------------------------------------------------------------------------------------
// Reading: one place that adds the project and the filters to every read-API call.

function currentProject() {
  const wanted = route().project;
  return state.projects.find((p) => p.id === wanted) || state.projects[0] || null;
}

function read(path, params, filters = route().filters) {
  const project = currentProject();
  const scoped = state.mode === "user" ? { project_id: project && project.id } : {};
  return api(path, { params: { ...filters, ...params, ...scoped } });
}

function stat(range, params, filters) {
  return read("/v1/stats", { from: iso(range.from), to: iso(range.to), ...params }, filters);
}

const total = (answer) => (answer.rows.length ? answer.rows[0].value : 0);

// Visitors, pageviews and sessions as the read API defines them. With an event filter, the
// "pageviews" figure counts that event instead (the filter and the pageview event share `event`).
function metricParams(metric, filters) {
  if (metric === "visitors") return { metric: "uniques" };
  if (metric === "sessions") return { metric: "sessions" };
  return { metric: "count", event: filters.event || PAGEVIEW };
}

// ---------------------------------------------------------------------------------------------
// Sign-in

function showSignIn(message) {
  $("#top").hidden = true;
  $("#view").hidden = true;
  $("#signin").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token-error").textContent = "";
  $("#email").focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.mode = null;
  state.generation++;
  stopLive();
  showSignIn(message);
}

async function startSession(token) {
  const previous = state.token;
  state.token = token;
  try {
    if (KEY_PATTERN.test(token)) {
      if (!/^(rk|sk)_/.test(token)) throw new Error("Use a read key (rk_) or a secret key (sk_), or sign in.");
      const day0 = day(new Date());
      await api("/v1/stats", { params: { from: iso(day0), to: iso(day(day0, 1)) }, token });
      const prefix = token.split("_")[2];
      state.mode = "key";
      state.me = null;
      state.projects = [{ id: prefix, name: `Project of key ${prefix}`, key_only: true }];
    } else {
      state.mode = "user";
      state.me = await api("/admin/me", { token });
      state.projects = (await api("/admin/projects", { token })).projects || [];
    }
  } catch (error) {
    state.token = previous;
    throw error;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  return true;
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("#login-form button");
  button.disabled = true;
  $("#login-error").textContent = "";
  try {
    const answer = await api("/admin/login", {
      method: "POST",
      body: { email: $("#email").value, password: $("#password").value },
      token: null,
    });
    await startSession(answer.access_token);
    $("#password").value = "";
    enter();
  } catch (error) {
    $("#login-error").textContent =
      error.code === "invalid_credentials"
        ? "Wrong email or password."
        : error.code === "rate_limited"
          ? "Too many attempts. Wait a minute and try again."
          : `Could not sign in: ${error.message}`;
  } finally {
    button.disabled = false;
  }
});

$("#token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#token-error").textContent = "";
  try {
    await startSession($("#token").value.trim());
    $("#token").value = "";
    enter();
  } catch (error) {
    $("#token-error").textContent =
      error instanceof ApiFailure ? `That token was refused: ${error.message}` : error.message;
  }
});

$("#signout").addEventListener("click", () => signOut(""));

// ---------------------------------------------------------------------------------------------
// The frame: project switcher, tabs, and the view

function enter() {
  $("#signin").hidden = true;
  $("#top").hidden = false;
  $("#view").hidden = false;
  render();
}

function renderFrame(where) {
  const select = $("#project");
  select.replaceChildren(
    ...state.projects.map((p) => h("option", { value: p.id, selected: p.id === (currentProject() || {}).id }, p.name)),
  );
  select.disabled = state.projects.length < 2;
  for (const link of document.querySelectorAll(".tabs a")) {
    const view = link.dataset.view;
    const query = location.hash.split("?")[1] || "";
    link.href = `#${view}?${query}`;
    if (view === where.view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("#signout").title = state.me && state.me.user ? `Signed in as ${state.me.user.email || state.me.user.id}` : "";
}

$("#project").addEventListener("change", (event) => go({ project: event.target.value, filters: {} }));

function render() {
  if (!state.token || !state.mode) return;
  const where = route();
  state.generation++;
  stopLive();
  renderFrame(where);
  const view = $("#view");
  if (!state.projects.length) {
    view.replaceChildren(noProjects());
    return;
  }
  if (where.view === "live") renderLive(view);
  else if (where.view === "settings") renderSettings(view);
  else renderOverview(view, where);
}

function noProjects() {
  return h(
    "div",
    { class: "card" },
    h("h1", {}, "No projects yet"),
    h("p", {}, "Create your first project under Settings, then send events with its keys."),
    h("a", { href: "#settings" }, "Open settings"),
  );
}

window.addEventListener("hashchange", render);

// ---------------------------------------------------------------------------------------------
// Overview

function controls(where) {
  const range = h(
    "select",
    { id: "range", "aria-label": "Date range" },
    RANGES.map(([key, label]) => h("option", { value: key, selected: key === where.range }, label)),
  );
  const today = ymd(new Date());
  const fromInput = h("input", { type: "date", id: "custom-from", "aria-label": "From", value: where.from || ymd(day(new Date(), -6)), max: today });
  const toInput = h("input", { type: "date", id: "custom-to", "aria-label": "To (inclusive)", value: where.to || today, max: today });
  const custom = h(
    "form",
    { class: "custom", hidden: where.range !== "custom" },
    fromInput,
    h("span", { "aria-hidden": "true" }, "–"),
    toInput,
    h("button", { type: "submit" }, "Apply"),
  );
  custom.addEventListener("submit", (event) => {
    event.preventDefault();
    if (fromInput.value && toInput.value && fromInput.value <= toInput.value) {
      go({ range: "custom", from: fromInput.value, to: toInput.value });
    }
  });
  range.addEventListener("change", () => {
    if (range.value === "custom") {
      custom.hidden = false;
      fromInput.focus();
    } else go({ range: range.value });
  });
  const compare = h("input", { type: "checkbox", id: "compare", checked: where.compare });
  compare.addEventListener("change", () => go({ compare: compare.checked }));
  const p = period(where);
  return h(
    "div",
    { class: "controls" },
    range,
    custom,
    h("label", { class: "check", for: "compare" }, compare, "Compare with previous period"),
    h(
      "span",
      { class: "range-text", id: "range-text", "data-from": iso(p.from), "data-to": iso(p.to), "data-interval": p.interval },
      describeRange(p.from, p.to, p.interval),
    ),
  );
}

function filterBar(where) {
  const names = Object.keys(where.filters);
  if (!names.length) return null;
  return h(
    "div",
    { class: "filters", role: "group", "aria-label": "Active filters" },
    names.map((name) =>
      h(
        "button",
        {
          type: "button",
          class: "chip",
          "aria-label": `Remove filter ${FILTER_LABEL[name]} is ${where.filters[name]}`,
          onclick: () => {
            const filters = { ...where.filters };
            delete filters[name];
            go({ filters });
          },
        },
        `${FILTER_LABEL[name]} is ${where.filters[name]} ×`,
      ),
    ),
    names.length > 1
      ? h("button", { type: "button", class: "ghost", onclick: () => go({ filters: {} }) }, "Clear all")
      : null,
  );
}

function guard(generation, fn) {
  return (value) => {
    if (generation === state.generation) fn(value);
  };
}

function failed(target, error) {
  target.replaceChildren(h("p", { class: "error" }, `Could not load: ${error.message}`));
}

function renderOverview(view, where) {
  const generation = state.generation;
  const p = period(where);
  const kpiBox = h("div", { class: "card kpis", role: "group", "aria-label": "Totals" });
  const chartBox = h("div", { class: "card chart" }, h("p", { class: "muted" }, "Loading…"));
  const panels = h("div", { class: "grid2" });
  view.replaceChildren(
    ...[h("h1", { class: "sr" }, "Overview"), controls(where), filterBar(where), kpiBox, chartBox, panels].filter(Boolean),
  );

  const metrics = [
    ["visitors", "Unique visitors"],
    ["pageviews", where.filters.event ? `Events: ${where.filters.event}` : "Pageviews"],
    ["sessions", "Sessions"],
  ];
  const kpis = {};
  for (const [key, label] of metrics) {
    kpis[key] = h(
      "button",
      {
        type: "button",
        class: "kpi",
        id: `kpi-${key}`,
        "aria-pressed": String(key === where.metric),
        onclick: () => go({ metric: key }),
      },
      h("span", { class: "label" }, label),
      h("span", { class: "value" }, "…"),
      h("span", { class: "delta" }),
    );
    kpiBox.append(kpis[key]);
  }
  const unavailable = "Needs session-level aggregates that the read API does not offer yet.";
  for (const label of ["Bounce rate", "Visit duration"]) {
    kpiBox.append(
      h("div", { class: "kpi na", title: unavailable }, h("span", { class: "label" }, label), h("span", { class: "value" }, "not available")),
    );
  }

  for (const [key] of metrics) {
    const params = metricParams(key, where.filters);
    const current = stat(p, params);
    const previous = where.compare ? stat(p.previous, params) : Promise.resolve(null);
    Promise.all([current, previous]).then(
      guard(generation, ([now, before]) => {
        const value = total(now);
        $(".value", kpis[key]).textContent = fmt(value);
        kpis[key].dataset.value = value;
        const delta = $(".delta", kpis[key]);
        if (before) {
          const old = total(before);
          const change = old ? Math.round(((value - old) / old) * 100) : null;
          delta.textContent = change === null ? `new vs ${fmt(old)}` : `${change >= 0 ? "▲" : "▼"} ${Math.abs(change)}% vs ${fmt(old)}`;
          delta.className = `delta ${change === null || change >= 0 ? "up" : "down"}`;
        }
      }),
      guard(generation, (error) => {
        $(".value", kpis[key]).textContent = "error";
        kpis[key].title = error.message;
      }),
    );
  }

  const series = { metric: where.metric, ...metricParams(where.metric, where.filters), interval: p.interval, limit: 1000 };
  if (TZ !== "UTC") series.tz = TZ;
  Promise.all([stat(p, series), where.compare ? stat(p.previous, series) : null]).then(
    guard(generation, ([now, before]) => {
      const label = metrics.find((m) => m[0] === where.metric)[1];
      chartBox.replaceChildren(chart(p, now, before, label, chartBox.clientWidth - 32));
    }),
    guard(generation, (error) => failed(chartBox, error)),
  );

  panels.append(
    panel(generation, where, p, "Top pages", [["Pages", loadPages]], "The read API cannot filter by page yet."),
    panel(generation, where, p, "Top sources", [
      ["Sources", loadSources],
      ["Mediums", (g, w, r) => loadGrouped(g, w, r, "medium")],
      ["Campaigns", (g, w, r) => loadGrouped(g, w, r, "campaign")],
    ]),
    panel(generation, where, p, "Countries", [["Countries", (g, w, r) => loadGrouped(g, w, r, "country")]]),
    panel(generation, where, p, "Devices", [
      ["Device", (g, w, r) => loadGrouped(g, w, r, "device_type")],
      ["Browser", (g, w, r) => loadGrouped(g, w, r, "browser")],
      ["OS", (g, w, r) => loadGrouped(g, w, r, "os")],
    ]),
    panel(generation, where, p, "Events", [["Events", loadEvents]]),
  );
  const missing = h(
    "p",
    { class: "note" },
    "Not shown: bounce rate, visit duration, and entry and exit pages. They need per-session aggregates the read API does not compute yet, and this dashboard shows only what the read API answers.",
  );
  view.append(missing);
}

function panel(generation, where, p, title, tabs, note) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const seg = h("div", { class: "seg", role: "group", "aria-label": `${title} breakdown` });
  const box = h(
    "section",
    { class: "card panel", "aria-label": title, "data-panel": title },
    h("div", { class: "panel-head" }, h("h2", {}, title), tabs.length > 1 ? seg : null),
    body,
    note ? h("p", { class: "note" }, note) : null,
  );
  const show = (index) => {
    for (const [i, button] of [...seg.children].entries()) button.setAttribute("aria-pressed", String(i === index));
    body.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    tabs[index][1](generation, where, p).then(
      guard(generation, (content) => body.replaceChildren(content)),
      guard(generation, (error) => failed(body, error)),
    );
  };
  tabs.forEach(([label], index) => seg.append(h("button", { type: "button", onclick: () => show(index) }, label)));
  show(0);
  return box;
}

// A table of rows {name, values: [...], sub?}; the first value sizes the bar. Rows of a column
// the read API can filter by are buttons that add that filter.
function table(headers, rows, column, where) {
  if (!rows.length) return h("p", { class: "empty" }, "No data for this range.");
  const max = Math.max(...rows.map((r) => r.values[0] || 0), 1);
  const param = FILTER_OF[column];
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headers.map((text, i) => h("th", { class: i ? "num" : null, scope: "col" }, text)))),
    h(
      "tbody",
      {},
      rows.map((row) => {
        const label = row.name === null || row.name === "" ? "(unknown)" : String(row.name);
        const bar = h("span", { class: "barfill" });
        bar.style.width = `${Math.max(1, Math.round(((row.values[0] || 0) / max) * 100))}%`;
        const canFilter = param && row.name !== null && row.name !== "" && where.filters[param] !== row.name;
        const text = canFilter
          ? h(
              "button",
              {
                type: "button",
                class: "text rowlink",
                title: `Filter by ${FILTER_LABEL[param].toLowerCase()} ${label}`,
                onclick: () => go({ filters: { ...route().filters, [param]: row.name } }),
              },
              label,
            )
          : h("span", { class: "text" }, label);
        return h(
          "tr",
          { class: canFilter ? "filterable" : null },
          h("td", { class: "name", title: label }, bar, text, row.sub === undefined ? null : h("span", { class: "sub" }, row.sub)),
          row.values.map((v) => h("td", { class: "num" }, typeof v === "string" ? v : fmt(v))),
        );
      }),
    ),
  );
}

async function loadGrouped(generation, where, p, column) {
  const answer = await stat(p, { metric: "uniques", group_by: column, limit: 10 });
  return table(
    [column.replace("_type", "").replace(/^./, (c) => c.toUpperCase()), "Visitors"],
    answer.rows.map((r) => ({ name: r[column], values: [r.value] })),
    column,
    where,
  );
}

async function loadPages(generation, where, p) {
  const event = where.filters.event || PAGEVIEW;
  const [visitors, views] = await Promise.all([
    stat(p, { metric: "uniques", group_by: "path", event, limit: 10 }),
    stat(p, { metric: "count", group_by: "path", event, limit: 100 }),
  ]);
  const counts = new Map(views.rows.map((r) => [r.path, r.value]));
  return table(
    ["Page", "Visitors", where.filters.event ? "Events" : "Pageviews"],
    visitors.rows.map((r) => ({ name: r.path, values: [r.value, counts.has(r.path) ? counts.get(r.path) : "–"] })),
    "path",
    where,
  );
}

// /v1/sources gives the paid share but takes no filters; with filters, the same figures come
// from /v1/stats (visitors by source, and events by source and medium, paid = medium "paid").
async function loadSources(generation, where, p) {
  const range = { from: iso(p.from), to: iso(p.to) };
  let rows;
  if (!Object.keys(where.filters).length) {
    const answer = await read("/v1/sources", { ...range, breakdown: "source", limit: 10 });
    rows = answer.rows.map((r) => ({ name: r.source, visitors: r.uniques, events: r.events, paid: r.paid_share }));
  } else {
    const [visitors, byMedium] = await Promise.all([
      stat(p, { metric: "uniques", group_by: "source", limit: 10 }),
      stat(p, { metric: "count", group_by: "source,medium", limit: 1000 }),
    ]);
    const events = new Map();
    const paid = new Map();
    for (const r of byMedium.rows) {
      events.set(r.source, (events.get(r.source) || 0) + r.value);
      if (r.medium === "paid") paid.set(r.source, (paid.get(r.source) || 0) + r.value);
    }
    rows = visitors.rows.map((r) => ({
      name: r.source,
      visitors: r.value,
      events: events.get(r.source) || 0,
      paid: events.get(r.source) ? (paid.get(r.source) || 0) / events.get(r.source) : 0,
    }));
  }
  const content = h(
    "div",
    {},
    table(
      ["Source", "Visitors", "Events", "Paid"],
      rows.map((r) => ({ name: r.name, sub: "", values: [r.visitors, r.events, `${Math.round(r.paid * 100)}%`] })),
      "source",
      where,
    ),
    rows.length
      ? h("p", { class: "note" }, `Rule: the classifier rule that attributed most of the latest ${fmt(RULE_SAMPLE)} events from that source.`)
      : null,
  );
  // The rules come from a sample of raw rows, read once the figures are in; the table does not wait.
  read("/v1/query", { ...range, limit: RULE_SAMPLE }).then(
    guard(generation, (latest) => {
      const rules = new Map();
      for (const event of (latest && latest.rows) || []) {
        const seen = rules.get(event.source) || new Map();
        seen.set(event.source_rule_id, (seen.get(event.source_rule_id) || 0) + 1);
        rules.set(event.source, seen);
      }
      rows.forEach((r, i) => {
        const seen = rules.get(r.name);
        const cell = content.querySelectorAll("tbody .sub")[i];
        if (!seen || !cell) return;
        const top = [...seen.entries()].sort((a, b) => b[1] - a[1])[0][0];
        cell.textContent = `rule ${top}${seen.size > 1 ? ` +${seen.size - 1}` : ""}`;
      });
    }),
    () => {}, // the table stands without its rules
  );
  return content;
}

async function loadEvents(generation, where, p) {
  const [counts, visitors] = await Promise.all([
    stat(p, { metric: "count", group_by: "event_name", limit: 20 }),
    stat(p, { metric: "uniques", group_by: "event_name", limit: 100 }),
  ]);
  const uniques = new Map(visitors.rows.map((r) => [r.event_name, r.value]));
  const content = h(
    "div",
    {},
    table(
      ["Event", "Visitors", "Events"],
      counts.rows.map((r) => ({ name: r.event_name, values: [uniques.get(r.event_name) ?? "–", r.value] })),
      "event_name",
      where,
    ),
  );
  if (where.filters.event) content.append(await eventProperties(where, p));
  return content;
}

async function eventProperties(where, p) {
  const answer = await read("/v1/query", { from: iso(p.from), to: iso(p.to), limit: 200 });
  const tally = new Map();
  for (const row of answer.rows) {
    let props = {};
    try {
      props = JSON.parse(row.properties || "{}") || {};
    } catch {
      props = {};
    }
    for (const [key, value] of Object.entries(props)) {
      const text = `${key} = ${typeof value === "object" ? JSON.stringify(value) : value}`;
      tally.set(text, (tally.get(text) || 0) + 1);
    }
  }
  const top = [...tally.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10);
  return h(
    "div",
    { class: "props" },
    h("h2", {}, `Properties of ${where.filters.event}`),
    top.length
      ? h("ul", {}, top.map(([text, n]) => h("li", {}, `${text} (${fmt(n)})`)))
      : h("p", {}, "No properties on these events."),
    h("p", { class: "note" }, `From the latest ${fmt(answer.rows.length)} events in the range.`),
  );
}

// Drawn at the box's own width, so that its text keeps its size on a phone.
function chart(p, now, before, label, width) {
  const list = buckets(p.from, p.to, p.interval);
  const values = new Map(now.rows.map((r) => [new Date(r.bucket).getTime(), r.value]));
  const current = list.map((b) => values.get(b.getTime()) || 0);
  let previous = null;
  if (before) {
    const old = buckets(p.previous.from, p.previous.to, p.interval);
    const map = new Map(before.rows.map((r) => [new Date(r.bucket).getTime(), r.value]));
    previous = list.map((_, i) => (old[i] ? map.get(old[i].getTime()) || 0 : 0));
  }
  const W = Math.max(280, Math.min(1100, width || 1000));
  const H = W < 600 ? 200 : 260;
  const left = 48;
  const bottom = 28;
  const top = 12;
  const max = Math.max(1, ...current, ...(previous || []));
  const step = niceStep(max);
  const ceiling = Math.ceil(max / step) * step;
  const x = (i) => left + (list.length < 2 ? (W - left) / 2 : (i * (W - left - 10)) / (list.length - 1));
  const y = (v) => top + (H - top - bottom) * (1 - v / ceiling);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${label} per ${p.interval}` });
  for (let v = 0; v <= ceiling; v += step) {
    svg.append(s("line", { class: "grid", x1: left, x2: W, y1: y(v), y2: y(v) }));
    svg.append(s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  const every = Math.max(1, Math.ceil(list.length / Math.max(3, Math.floor(W / 110))));
  list.forEach((b, i) => {
    if (i % every) return;
    const text =
      p.interval === "hour"
        ? `${pad(b.getHours())}:00`
        : p.interval === "month"
          ? b.toLocaleDateString("en-GB", { month: "short" })
          : b.toLocaleDateString("en-GB", { day: "numeric", month: "short" });
    svg.append(s("text", { x: x(i), y: H - 8, "text-anchor": "middle" }, text));
  });
  const path = (data) => data.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
  if (previous) svg.append(s("path", { class: "prev", d: path(previous) }));
  svg.append(s("path", { class: "area", d: `${path(current)}L${x(list.length - 1)},${y(0)}L${x(0)},${y(0)}Z` }));
  svg.append(s("path", { class: "line", d: path(current) }));
  current.forEach((v, i) => {
    const when = p.interval === "hour" ? list[i].toLocaleString("en-GB") : list[i].toLocaleDateString("en-GB");
    svg.append(s("circle", { class: "dot", cx: x(i), cy: y(v), r: list.length > 40 ? 2 : 3.5 }, s("title", {}, `${when}: ${fmt(v)}`)));
  });
  return h(
    "div",
    {},
    h("div", { class: "legend" }, h("span", {}, `${label} per ${p.interval}`), previous ? h("span", {}, "dashed: previous period") : null),
    svg,
  );
}

function niceStep(max) {
  const raw = max / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return Math.max(1, m * power);
  return Math.max(1, 10 * power);
}

// ---------------------------------------------------------------------------------------------
// Live: the last 30 minutes, refreshed while the view is open

function stopLive() {
  if (state.liveTimer) clearInterval(state.liveTimer);
  state.liveTimer = null;
}

function renderLive(view) {
  const generation = state.generation;
  const numbers = h("div", { class: "card kpis", role: "group", "aria-label": "Last 30 minutes" });
  const pages = h("section", { class: "card panel", "aria-label": "Pages in the last 30 minutes" });
  const feed = h("section", { class: "card panel feed", "aria-label": "Latest events" });
  const updated = h("span", { class: "muted", "aria-live": "polite" });
  view.replaceChildren(
    h("h1", {}, h("span", { class: "live-dot", "aria-hidden": "true" }), "Live: the last 30 minutes ", updated),
    numbers,
    h("div", { class: "grid2" }, pages, feed),
  );
  const refresh = async () => {
    const p = { from: new Date(Date.now() - 30 * 60e3), to: new Date(Date.now() + 60e3) };
    const range = { from: iso(p.from), to: iso(p.to) };
    try {
      const [visitors, views, events, top, latest] = await Promise.all([
        stat(p, { metric: "uniques" }, {}),
        stat(p, { metric: "count", event: PAGEVIEW }, {}),
        stat(p, { metric: "count" }, {}),
        stat(p, { metric: "uniques", group_by: "path", event: PAGEVIEW, limit: 10 }, {}),
        read("/v1/query", { ...range, limit: 20 }, {}),
      ]);
      if (generation !== state.generation) return;
      numbers.replaceChildren(
        ...[
          ["live-visitors", "Visitors", total(visitors)],
          ["live-pageviews", "Pageviews", total(views)],
          ["live-events", "Events", total(events)],
        ].map(([id, label, value]) =>
          h("div", { class: "kpi", id, "data-value": value }, h("span", { class: "label" }, label), h("span", { class: "value" }, fmt(value))),
        ),
      );
      pages.replaceChildren(
        h("h2", {}, "Pages"),
        table(["Page", "Visitors"], top.rows.map((r) => ({ name: r.path, values: [r.value] })), "path", { filters: {} }),
      );
      feed.replaceChildren(
        h("h2", {}, "Latest events"),
        latest.rows.length
          ? h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["Time", "Event", "Page", "Source"].map((t) => h("th", { scope: "col" }, t)))),
              h(
                "tbody",
                {},
                latest.rows.map((r) =>
                  h(
                    "tr",
                    {},
                    h("td", {}, new Date(r.timestamp).toLocaleTimeString("en-GB")),
                    h("td", { class: "name" }, r.event_name),
                    h("td", { class: "name" }, r.path || "–"),
                    h("td", { class: "name" }, r.source || "–"),
                  ),
                ),
              ),
            )
          : h("p", { class: "empty" }, "Nothing in the last 30 minutes."),
      );
      updated.textContent = `(updated ${new Date().toLocaleTimeString("en-GB")})`;
    } catch (error) {
      if (generation === state.generation) failed(numbers, error);
    }
  };
  refresh();
  state.liveTimer = setInterval(refresh, LIVE_REFRESH_MS);
}

// ---------------------------------------------------------------------------------------------
// Settings, through the admin API

function section(title, ...children) {
  return h("section", { class: "card", "aria-label": title }, h("h2", {}, title), ...children);
}

function statusLine() {
  return h("p", { class: "status", role: "status" });
}

async function patchProject(project, changes, status) {
  status.className = "status";
  status.textContent = "Saving…";
  try {
    const answer = await api(`/admin/projects/${project.id}`, { method: "PATCH", body: changes });
    const updated = answer.project || answer;
    Object.assign(project, updated);
    status.textContent = "Saved.";
  } catch (error) {
    status.className = "status error";
    status.textContent = `Not saved: ${error.message}`;
  }
}

function renderSettings(view) {
  if (state.mode !== "user") {
    view.replaceChildren(
      section(
        "Settings",
        h("p", {}, "Settings are managed through the admin API, which needs a signed-in user. A project key can read statistics only."),
        h("button", { type: "button", onclick: () => signOut("") }, "Sign in as a user"),
      ),
    );
    return;
  }
  const project = currentProject();
  const generation = state.generation;
  view.replaceChildren(
    h("h1", {}, project ? `Settings: ${project.name}` : "Settings"),
    h(
      "div",
      { class: "settings" },
      project ? keysSection(project, generation) : null,
      project ? originsSection(project) : null,
      project ? limitsSection(project) : null,
      project ? retentionSection(project) : null,
      newProjectSection(),
    ),
  );
}

function keysSection(project, generation) {
  const list = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
  const shown = h("div", { "aria-live": "polite" });
  const status = statusLine();
  const load = () =>
    api(`/admin/projects/${project.id}/keys`).then(
      guard(generation, (answer) => {
        list.replaceChildren(keysTable(answer.keys || [], load, status));
        // A key shown once and revoked since is of no use: stop showing it.
        const secret = $("#new-key-secret", shown);
        const revoked = (answer.keys || []).some((k) => k.revoked_at && secret && secret.value.split("_")[2] === k.prefix);
        if (revoked) shown.replaceChildren();
      }),
      guard(generation, (error) => failed(list, error)),
    );
  const kind = h("select", { id: "new-key-kind", name: "kind" }, [
    h("option", { value: "rk" }, "rk (read only)"),
    h("option", { value: "pk" }, "pk (browser ingest)"),
    h("option", { value: "sk" }, "sk (server: ingest, read, forget)"),
  ]);
  const env = h("select", { id: "new-key-env", name: "env" }, [h("option", { value: "live" }, "live"), h("option", { value: "test" }, "test")]);
  const name = h("input", { id: "new-key-name", name: "name", maxlength: "100", placeholder: "e.g. Grafana" });
  const form = h(
    "form",
    { "aria-label": "Mint a key" },
    h("label", { for: "new-key-kind" }, "Kind", kind),
    h("label", { for: "new-key-env" }, "Environment", env),
    h("label", { for: "new-key-name" }, "Name", name),
    h("button", { type: "submit" }, "Mint key"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.className = "status";
    status.textContent = "";
    try {
      const body = { kind: kind.value, env: env.value };
      if (name.value.trim()) body.name = name.value.trim();
      const answer = await api(`/admin/projects/${project.id}/keys`, { method: "POST", body });
      const secret = h("input", { readonly: true, value: answer.key, id: "new-key-secret", "aria-label": "The new key" });
      shown.replaceChildren(
        h(
          "div",
          { class: "secret" },
          h("strong", {}, "Copy this key now; it is not shown again."),
          secret,
          h(
            "button",
            {
              type: "button",
              onclick: () => {
                secret.select();
                navigator.clipboard?.writeText(answer.key).then(
                  () => (status.textContent = "Copied."),
                  () => (status.textContent = "Select the key and copy it."),
                );
              },
            },
            "Copy",
          ),
        ),
      );
      name.value = "";
      secret.focus();
      secret.select();
      load();
    } catch (error) {
      status.className = "status error";
      status.textContent = `Not minted: ${error.message}`;
    }
  });
  load();
  return section("API keys", list, form, shown, status);
}

function keysTable(keys, reload, status) {
  if (!keys.length) return h("p", { class: "empty" }, "No keys.");
  const when = (value) => (value ? new Date(value).toLocaleString("en-GB") : "never");
  return h(
    "table",
    { class: "keys panel" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Key"),
        h("th", { scope: "col" }, "Name"),
        h("th", { scope: "col", class: "hide-phone" }, "Created"),
        h("th", { scope: "col", class: "hide-phone" }, "Last used"),
        h("th", { scope: "col" }, "Status"),
      ),
    ),
    h(
      "tbody",
      {},
      keys.map((k) =>
        h(
          "tr",
          { "data-prefix": k.prefix },
          h("td", {}, h("code", {}, `${k.kind}_${k.env}_${k.prefix}_…`)),
          h("td", {}, k.name || "–"),
          h("td", { class: "hide-phone" }, when(k.created_at)),
          h("td", { class: "hide-phone" }, when(k.last_used_at)),
          h(
            "td",
            {},
            k.revoked_at
              ? h("span", { class: "muted" }, "revoked")
              : h(
                  "button",
                  {
                    type: "button",
                    class: "danger",
                    "aria-label": `Revoke ${k.kind}_${k.env}_${k.prefix}`,
                    onclick: async () => {
                      if (!confirm(`Revoke ${k.kind}_${k.env}_${k.prefix}? Clients using it stop working.`)) return;
                      try {
                        await api(`/admin/keys/${k.prefix}`, { method: "DELETE" });
                        status.className = "status";
                        status.textContent = `Revoked ${k.prefix}.`;
                        reload();
                      } catch (error) {
                        status.className = "status error";
                        status.textContent = `Not revoked: ${error.message}`;
                      }
                    },
                  },
                  "Revoke",
                ),
          ),
        ),
      ),
    ),
  );
}

function originsSection(project) {
  const status = statusLine();
  const box = h("textarea", { id: "origins", rows: "4", spellcheck: "false" }, (project.allowed_origins || []).join("\n"));
  const form = h(
    "form",
    {},
    h("label", { for: "origins", class: "wide" }, "Origins allowed to send events with the browser key, one per line", box),
    h("button", { type: "submit" }, "Save origins"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const origins = box.value.split(/\s+/).filter(Boolean);
    patchProject(project, { allowed_origins: origins }, status);
  });
  return section("Allowed origins", form, status);
}

function limitsSection(project) {
  const status = statusLine();
  const limits = project.rate_limits || {};
  const rows = ROUTES.map((routeName) => {
    const current = limits[routeName];
    const mode = h("select", { "aria-label": `${routeName} limit` }, [
      h("option", { value: "default", selected: current === undefined || current === null }, "default"),
      h("option", { value: "custom", selected: typeof current === "object" && current !== null }, "custom"),
      h("option", { value: "off", selected: current === "off" }, "unlimited"),
    ]);
    const rate = h("input", { type: "number", min: "0.1", step: "any", "aria-label": `${routeName} events per second`, value: current && current.rate });
    const burst = h("input", { type: "number", min: "1", step: "1", "aria-label": `${routeName} burst`, value: current && current.burst });
    const sync = () => {
      rate.disabled = burst.disabled = mode.value !== "custom";
    };
    mode.addEventListener("change", sync);
    sync();
    return { routeName, mode, rate, burst, row: h("tr", {}, h("td", {}, h("code", {}, routeName)), h("td", {}, mode), h("td", {}, rate), h("td", {}, burst)) };
  });
  const form = h(
    "form",
    {},
    h(
      "div",
      { class: "table-wrap wide" },
      h(
        "table",
        { class: "keys panel" },
        h("thead", {}, h("tr", {}, ["Route", "Limit", "Per second", "Burst"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows.map((r) => r.row)),
      ),
    ),
    h("button", { type: "submit" }, "Save limits"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const changes = {};
    for (const r of rows) {
      changes[r.routeName] =
        r.mode.value === "off" ? "off" : r.mode.value === "custom" ? { rate: Number(r.rate.value), burst: Number(r.burst.value) } : null;
    }
    patchProject(project, { rate_limits: changes }, status);
  });
  return section(
    "Rate limits",
    h("p", { class: "note" }, "Per project and route. Default: /v1/track 50/s with a burst of 200, /v1/batch 5/s with a burst of 20."),
    form,
    status,
  );
}

function retentionSection(project) {
  const status = statusLine();
  const days = h("input", { id: "retention", type: "number", min: "1", step: "1", value: project.retention_days ?? "", placeholder: "forever" });
  const bots = h("input", { id: "keep-bots", type: "checkbox", checked: Boolean(project.keep_bots) });
  const form = h(
    "form",
    {},
    h("label", { for: "retention" }, "Keep events for (days; empty keeps them forever)", days),
    h("label", { for: "keep-bots", class: "check" }, bots, "Keep events from bots (flagged, not dropped)"),
    h("button", { type: "submit" }, "Save"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    patchProject(project, { retention_days: days.value ? Number(days.value) : null, keep_bots: bots.checked }, status);
  });
  return section("Retention and bots", form, status);
}

function newProjectSection() {
  const status = statusLine();
  const name = h("input", { id: "new-project-name", required: true, maxlength: "100" });
  const origin = h("input", { id: "new-project-origin", placeholder: "https://example.com" });
  const shown = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { "aria-label": "Create a project" },
    h("label", { for: "new-project-name" }, "Name", name),
    h("label", { for: "new-project-origin" }, "Site origin (optional)", origin),
    h("button", { type: "submit" }, "Create project"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const body = { name: name.value.trim() };
      if (origin.value.trim()) body.allowed_origins = [origin.value.trim()];
      const answer = await api("/admin/projects", { method: "POST", body });
      state.projects.push(answer.project);
      shown.replaceChildren(
        h(
          "div",
          { class: "secret" },
          h("strong", {}, `Created ${answer.project.name}. Copy its keys now; they are not shown again.`),
          ...Object.entries(answer.keys || {}).map(([kind, key]) => h("input", { readonly: true, value: key, "aria-label": `${kind} key` })),
          h("button", { type: "button", onclick: () => go({ project: answer.project.id, view: "overview", filters: {} }) }, "Open it"),
        ),
      );
      name.value = origin.value = "";
      renderFrame(route());
    } catch (error) {
      status.className = "status error";
      status.textContent = `Not created: ${error.message}`;
    }
  });
  return section("New project", form, shown, status);
}

// ---------------------------------------------------------------------------------------------
// Start

(async () => {
  if (!state.token) {
    showSignIn("");
    return;
  }
  try {
    await startSession(state.token);
    enter();
  } catch {
    signOut("");
  }
})();
