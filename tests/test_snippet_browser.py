"""The `a.js` snippet in headless Chromium (Debian's build, driven by Playwright), against a real
server process, on a page served from an allowed origin by a tiny HTTP server in the test. Events
are read back through GET /v1/query."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import re
import threading
import time
from typing import Callable, Iterator

import httpx
import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS, ServerProcess, cli_project, free_port

pytestmark = pytest.mark.slow
playwright_sync = pytest.importorskip("playwright.sync_api")

# Headless Chromium announces itself as "HeadlessChrome", which the server drops as a bot.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
STUB = (
    "window.mm = window.mm || []; window.mm.q = window.mm; ['track','identify','page','flush',"
    "'getAnonymousId','setAnonymousId'].forEach(function (m) { window.mm[m] = window.mm[m] ||"
    " function () { window.mm.push([m].concat([].slice.call(arguments))); }; });"
)


class Site:
    """Pages on their own origin: `/plain` has no snippet, `/stub/...` calls `mm` before the
    snippet loads, every other path embeds the snippet."""

    def __init__(self, api: str, key: str) -> None:
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = site.page(self.path).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.api, self.key = api, key
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def page(self, path: str) -> str:
        if path.startswith("/plain"):
            return "<!doctype html><title>plain</title><p>no snippet here"
        early = ""
        if path.startswith("/stub"):
            early = f"<script>{STUB} mm.track('early', {{n: 1}}); mm.track('early', {{n: 2}});</script>"
        tag = f'<script async src="{self.api}/v1/a.js" data-key="{self.key}" data-host="{self.api}"></script>'
        return f"<!doctype html><title>shop</title>{early}{tag}<p>hello"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Site, str]]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (scripts/setup --dev installs it)")
    data_dir = tmp_path_factory.mktemp("snippet") / "data"
    port = free_port()
    server = ServerProcess(data_dir, port=port)
    site = Site(server.url, "")
    keys = cli_project(data_dir, origin=site.origin)
    site.key = keys.pk
    server.start()
    try:
        yield server, site, keys.rk
    finally:
        site.server.shutdown()
        server.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_sync.sync_playwright() as p:
        # The flag too: requests a page leaves behind (keepalive) do not carry a context's override.
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--user-agent={USER_AGENT}"], headless=True
        )
        yield b
        b.close()


@pytest.fixture
def open_page(browser, setup) -> Iterator[Callable[..., object]]:
    """A page in a fresh context (empty storage); page errors are collected and must stay empty."""
    contexts, errors, batches = [], [], []

    def opener(init_script: str | None = None):
        context = browser.new_context(user_agent=USER_AGENT)
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: batches.append(r) if r.url.endswith("/v1/batch") else None)
        page.batches = batches
        return page

    yield opener
    for context in contexts:
        context.close()
    assert errors == [], f"page errors: {errors}"


def events_of(setup, anonymous_id: str, count: int, timeout: float = 30.0) -> list[dict]:
    """Polls /v1/query until `count` events of the visitor are stored (oldest first)."""
    server, _site, rk = setup
    now = dt.datetime.now(dt.timezone.utc)
    params = {
        "from": (now - dt.timedelta(hours=1)).isoformat(),
        "to": (now + dt.timedelta(hours=1)).isoformat(),
        "anonymous_id": anonymous_id,
    }
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        r = httpx.get(f"{server.url}/v1/query", params=params, headers={"Authorization": f"Bearer {rk}"})
        assert r.status_code == 200, r.text
        rows = r.json()["rows"]
        if len(rows) >= count:
            return sorted(rows, key=lambda row: row["timestamp"])
        time.sleep(0.2)
    raise AssertionError(f"expected {count} events for {anonymous_id}, got {rows}")


def loaded(page, site: Site, path: str) -> str:
    """Opens `path` and waits for the snippet to have replaced the stub; the visitor's id."""
    page.goto(site.origin + path)
    page.wait_for_function("window.mm && !window.mm.q && typeof mm.getAnonymousId() === 'string'")
    return page.evaluate("mm.getAnonymousId()")


def test_pageview_on_load_carries_url_and_path(open_page, setup):
    _server, site, _rk = setup
    page = open_page()
    aid = loaded(page, site, "/pricing?utm_source=newsletter")
    [row] = events_of(setup, aid, 1)
    assert row["event_name"] == "$pageview"
    assert row["url"] == site.origin + "/pricing?utm_source=newsletter"
    assert row["path"] == "/pricing"
    assert row["source"] == "newsletter"
    properties = json.loads(row["properties"])
    assert properties["viewport"] and properties["language"] and properties["timezone"]


def test_push_state_sends_a_second_pageview_and_back_a_third(open_page, setup):
    _server, site, _rk = setup
    page = open_page()
    aid = loaded(page, site, "/app")
    page.evaluate("history.pushState({}, '', '/app/settings')")
    page.evaluate("history.replaceState({}, '', '/app/settings')")  # same URL: no pageview
    events_of(setup, aid, 2)
    page.go_back()  # popstate
    rows = events_of(setup, aid, 3)
    time.sleep(2.5)  # one batch timer more: a fourth pageview would have been sent by now
    rows = events_of(setup, aid, 3)
    assert len(rows) == 3
    assert [(r["event_name"], r["path"]) for r in rows] == [
        ("$pageview", "/app"),
        ("$pageview", "/app/settings"),
        ("$pageview", "/app"),
    ]


def test_track_with_properties_and_identify(open_page, setup):
    _server, site, _rk = setup
    page = open_page()
    aid = loaded(page, site, "/cart")
    page.evaluate("mm.track('checkout', {plan: 'pro', seats: 3}); mm.identify('user-7', {tier: 'gold'})")
    page.evaluate("mm.track('paid'); mm.flush()")
    rows = events_of(setup, aid, 4)
    by_name = {r["event_name"]: r for r in rows}
    assert json.loads(by_name["checkout"]["properties"]) == {"plan": "pro", "seats": 3}
    assert by_name["checkout"]["path"] == "/cart" and by_name["checkout"]["user_id"] is None
    assert json.loads(by_name["$identify"]["properties"]) == {"tier": "gold"}
    assert by_name["$identify"]["user_id"] == by_name["paid"]["user_id"] == "user-7"


def test_calls_made_before_load_are_replayed_in_order(open_page, setup):
    _server, site, _rk = setup
    page = open_page()
    aid = loaded(page, site, "/stub")
    rows = events_of(setup, aid, 3)
    early = [json.loads(r["properties"])["n"] for r in rows if r["event_name"] == "early"]
    assert sorted(early) == [1, 2]
    assert {r["event_name"] for r in rows} == {"early", "$pageview"}


def test_the_last_event_is_delivered_on_pagehide(open_page, setup):
    _server, site, _rk = setup
    page = open_page()
    aid = loaded(page, site, "/product")
    # Navigating away at once: the 2 s batch timer never fires, only the pagehide flush sends it.
    with page.expect_navigation():
        page.evaluate(f"mm.track('leaving', {{why: 'link'}}); location.href = '{site.origin}/plain'")
    rows = events_of(setup, aid, 2)
    assert "leaving" in {r["event_name"] for r in rows}


@pytest.mark.parametrize(
    "signal",
    [
        "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'})",
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})",
    ],
    ids=["dnt", "gpc"],
)
def test_nothing_is_sent_under_dnt_or_gpc(open_page, setup, signal):
    _server, site, _rk = setup
    page = open_page(signal)
    aid = loaded(page, site, "/private")
    page.evaluate("mm.track('secret', {a: 1}); mm.identify('u1'); history.pushState({}, '', '/private/2'); mm.flush()")
    time.sleep(3)  # longer than the batch timer: anything queued would have been sent
    with page.expect_navigation():
        page.evaluate(f"location.href = '{site.origin}/plain'")  # and the pagehide flush
    assert page.batches == []
    assert page.evaluate("localStorage.getItem('mm_aid')") is None
    server, _site, rk = setup
    now = dt.datetime.now(dt.timezone.utc)
    r = httpx.get(
        f"{server.url}/v1/query",
        params={"from": (now - dt.timedelta(hours=1)).isoformat(), "to": now.isoformat(), "anonymous_id": aid},
        headers={"Authorization": f"Bearer {rk}"},
    )
    assert r.json()["rows"] == []


def test_the_anonymous_id_survives_reloads(open_page, setup):
    _server, site, _rk = setup
    page = open_page()
    aid = loaded(page, site, "/home")
    assert page.evaluate("localStorage.getItem('mm_aid')") == aid
    page.reload()
    page.wait_for_function("window.mm && !window.mm.q")
    assert page.evaluate("mm.getAnonymousId()") == aid
    rows = events_of(setup, aid, 2)
    assert [r["event_name"] for r in rows] == ["$pageview", "$pageview"]
    assert len({r["event_id"] for r in rows}) == 2


def test_without_random_uuid_or_local_storage_it_still_sends(open_page, setup):
    """Plain-http pages lack crypto.randomUUID; privacy modes and sandboxes make localStorage throw."""
    _server, site, _rk = setup
    page = open_page(
        "Crypto.prototype.randomUUID = undefined;"
        "Object.defineProperty(window, 'localStorage', {get() { throw new DOMException('denied', 'SecurityError'); }});"
    )
    aid = loaded(page, site, "/sandboxed")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", aid)
    page.evaluate("mm.track('kept in memory'); mm.flush()")
    rows = events_of(setup, aid, 2)
    assert {r["event_name"] for r in rows} == {"$pageview", "kept in memory"}
    assert len({r["event_id"] for r in rows}) == 2
