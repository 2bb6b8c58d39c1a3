"""The dashboard in headless Chromium against a real server seeded with known events.

One server and one browser serve the module; each test opens its own page, signs in through the
form, and compares what the page shows with what the read API answers for the same range (the
range the page used is on `#range-text` as `data-from` / `data-to`). Screenshots go to
tests/results/.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from conftest import CHROMIUM, CHROMIUM_ARGS, ServerProcess, bearer

pytestmark = pytest.mark.slow  # a server process and a browser

RESULTS = Path(__file__).parent / "results"
EMAIL = "owner@example.com"
PASSWORD = "correct horse battery staple"
WAIT_MS = 30_000  # generous: two cores shared by many processes


class Site(NamedTuple):
    server: ServerProcess
    project_id: str
    sk: str
    token: str  # the user's session, for the test's own admin calls (sign-in attempts are limited)
    browser: Browser


def _events(now: dt.datetime) -> list[dict[str, Any]]:
    """Today, three days ago and twenty days ago, so today, 7 days and 30 days all differ."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = midnight + (now - midnight) / 2  # today, and not in the future, whatever the hour
    events: list[dict[str, Any]] = []

    def add(when: dt.datetime, visitor: str, path: str, query: str = "", referrer: str | None = None) -> None:
        events.append(
            {
                "event": "$pageview",
                "anonymous_id": visitor,
                "timestamp": when.isoformat(),
                "url": f"https://shop.example.com{path}{query}",
                "path": path,
                "referrer": referrer,
            }
        )

    for i in range(3):
        add(today, f"t{i}", "/", "?utm_source=google&utm_medium=cpc", None)
        add(today, f"t{i}", "/pricing", referrer="https://shop.example.com/")
    for i in range(5):
        add(
            midnight - dt.timedelta(days=3) + dt.timedelta(hours=i),
            f"w{i}",
            "/blog/launch",
            referrer="https://news.ycombinator.com/",
        )
    for i in range(2):
        add(midnight - dt.timedelta(days=3), f"x{i}", "/docs", referrer="https://www.google.com/search?q=millimetric")
    for i in range(4):
        add(midnight - dt.timedelta(days=20), f"m{i}", "/", referrer="https://t.co/abc")
    events.append(
        {"event": "signup", "anonymous_id": "t0", "timestamp": today.isoformat(), "properties": {"plan": "pro"}}
    )
    return events


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    data_dir.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "millimetric",
            "users",
            "create",
            EMAIL,
            "--password-stdin",
            "--data-dir",
            str(data_dir),
        ],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    )
    server = ServerProcess(data_dir).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            token = client.post("/admin/login", json={"email": EMAIL, "password": PASSWORD}).json()["access_token"]
            created = client.post(
                "/admin/projects",
                json={"name": "Shop", "allowed_origins": ["https://shop.example.com"]},
                headers=bearer(token),
            )
            assert created.status_code == 201, created.text
            project_id, sk = created.json()["project"]["id"], created.json()["keys"]["sk"]
            sent = client.post(
                "/v1/batch", json={"events": _events(dt.datetime.now(dt.timezone.utc))}, headers=bearer(sk)
            )
            assert sent.status_code == 202, sent.text
        if not Path(CHROMIUM).exists():
            pytest.fail(f"the dashboard tests need Chromium at {CHROMIUM} (Debian: apt-get install -y chromium)")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield Site(server, project_id, sk, token, browser)
            finally:
                browser.close()
    finally:
        server.kill()


@pytest.fixture
def page(site: Site, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page in UTC (so the page's days are the API's days); fails the test on any
    console error or uncaught exception."""
    context = site.browser.new_context(timezone_id="UTC", locale="en-GB", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(WAIT_MS)
    try:
        yield page
    finally:
        RESULTS.mkdir(exist_ok=True)
        page.screenshot(path=str(RESULTS / f"dashboard-{request.node.name}.png"), full_page=True)
        context.close()
    assert errors == [], f"console errors: {errors}"


def sign_in(page: Page, site: Site) -> None:
    """Through the form, on the seeded project (the local user also owns the `default` one)."""
    page.goto(f"{site.server.url}/#overview?project={site.project_id}")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    wait_for_numbers(page)


def wait_for_numbers(page: Page) -> None:
    for key in ("visitors", "pageviews", "sessions"):
        page.wait_for_selector(f"#kpi-{key}[data-value]")


# Functions, not expressions: the page's Content-Security-Policy forbids evaluating strings.
def wait_hash(page: Page, text: str, present: bool = True) -> None:
    page.wait_for_function("([t, p]) => location.hash.includes(t) === p", arg=[text, present])


def wait_visitors(page: Page, value: int) -> None:
    page.wait_for_function("v => document.querySelector('#kpi-visitors')?.dataset.value === v", arg=str(value))


def api_total(site: Site, page: Page, **params: str) -> int:
    """What /v1/stats answers for the range the page shows."""
    text = page.locator("#range-text")
    window = {"from": text.get_attribute("data-from"), "to": text.get_attribute("data-to")}
    answer = httpx.get(f"{site.server.url}/v1/stats", params={**window, **params}, headers=bearer(site.sk), timeout=30)
    assert answer.status_code == 200, answer.text
    rows = answer.json()["rows"]
    return rows[0]["value"] if rows else 0


def shown(page: Page, key: str) -> int:
    return int(page.locator(f"#kpi-{key}").get_attribute("data-value") or "-1")


def shown_text(page: Page, key: str) -> int:
    return int(page.locator(f"#kpi-{key} .value").inner_text().replace(",", ""))


def poll(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_sign_in_shows_the_read_apis_numbers(site: Site, page: Page) -> None:
    sign_in(page, site)
    assert page.locator("#range").input_value() == "7d"
    expected = {
        "visitors": api_total(site, page, metric="uniques"),
        "pageviews": api_total(site, page, metric="count", event="$pageview"),
        "sessions": api_total(site, page, metric="sessions"),
    }
    assert expected["visitors"] == 3 + 5 + 2  # the seeded visitors of the last 7 days
    assert expected["pageviews"] == 6 + 5 + 2
    for key, value in expected.items():
        assert shown(page, key) == value
        assert shown_text(page, key) == value
    # Top pages and sources, as the read API ranks them.
    pages = page.locator("[data-panel='Top pages'] tbody tr")
    pages.first.wait_for()
    assert pages.first.locator("td.name").inner_text().startswith("/blog/launch")
    assert pages.first.locator("td.num").first.inner_text() == "5"
    sources = page.locator("[data-panel='Top sources'] tbody tr")
    sources.first.wait_for()
    window = {
        "from": page.locator("#range-text").get_attribute("data-from"),
        "to": page.locator("#range-text").get_attribute("data-to"),
    }
    answer = httpx.get(
        f"{site.server.url}/v1/sources",
        params={**window, "breakdown": "source", "limit": "10"},
        headers=bearer(site.sk),
    ).json()["rows"]
    assert {r["source"] for r in answer} >= {"hackernews", "google", "internal"}
    table = [[cell.inner_text() for cell in row.locator(".rowlink, .text, td.num").all()] for row in sources.all()]
    assert table == [
        [r["source"], str(r["uniques"]), str(r["events"]), f"{round(r['paid_share'] * 100)}%"] for r in answer
    ]
    # The classifier rule behind each source (from the newest raw rows).
    page.locator("[data-panel='Top sources'] .sub", has_text="rule utm_paid_medium").first.wait_for()


def test_date_range_picker_changes_the_numbers(site: Site, page: Page) -> None:
    sign_in(page, site)
    week = shown(page, "visitors")
    for choice, visitors in (("today", 3), ("30d", 3 + 5 + 2 + 4)):
        page.select_option("#range", choice)
        wait_hash(page, f"range={choice}")
        wait_for_numbers(page)
        page.wait_for_function(
            "([key, old]) => document.querySelector('#kpi-visitors').dataset.value !== String(old)",
            arg=["visitors", week],
        )
        assert shown(page, "visitors") == api_total(site, page, metric="uniques") == visitors
        assert shown(page, "pageviews") == api_total(site, page, metric="count", event="$pageview")
    # Custom: exactly the day twenty days ago.
    twenty = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=20)).date().isoformat()
    page.select_option("#range", "custom")
    page.fill("#custom-from", twenty)
    page.fill("#custom-to", twenty)
    page.click(".custom button[type=submit]")
    wait_visitors(page, 4)
    assert shown(page, "visitors") == api_total(site, page, metric="uniques") == 4
    # Comparison with the previous period: the delta names the previous figure.
    page.select_option("#range", "7d")
    page.check("#compare")
    page.wait_for_function("() => document.querySelector('#kpi-visitors .delta').textContent.includes('vs')")
    page.locator(".chart .prev").wait_for(state="attached")  # the previous period, dashed


def test_clicking_a_row_filters_the_page(site: Site, page: Page) -> None:
    sign_in(page, site)
    row = page.locator("[data-panel='Top sources'] tbody tr", has_text="hackernews").locator(".rowlink")
    row.click()
    wait_hash(page, "source=hackernews")
    wait_visitors(page, 5)
    assert shown(page, "visitors") == api_total(site, page, metric="uniques", source="hackernews") == 5
    assert shown(page, "pageviews") == api_total(site, page, metric="count", event="$pageview", source="hackernews")
    assert page.locator(".chip", has_text="Source is hackernews").is_visible()
    pages = page.locator("[data-panel='Top pages'] tbody tr")
    pages.first.wait_for()
    assert pages.count() == 1 and pages.first.inner_text().startswith("/blog/launch")
    page.click(".chip")
    wait_hash(page, "source=", present=False)
    wait_visitors(page, 10)
    # A custom event: filtering by it lists its properties.
    page.locator("[data-panel='Events'] .rowlink", has_text="signup").click()
    wait_hash(page, "event=signup")
    page.locator("[data-panel='Events'] .props li", has_text="plan = pro (1)").wait_for()
    wait_for_numbers(page)
    assert shown(page, "pageviews") == api_total(site, page, metric="count", event="signup") == 1


def test_minting_and_revoking_a_key(site: Site, page: Page) -> None:
    sign_in(page, site)
    page.click(".tabs a[data-view=settings]")
    page.select_option("#new-key-kind", "rk")
    page.fill("#new-key-name", "browser test")
    page.click("form[aria-label='Mint a key'] button[type=submit]")
    secret = page.locator("#new-key-secret").input_value()
    assert secret.startswith("rk_live_")
    prefix = secret.split("_")[2]
    window = {"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}

    def status() -> int:
        return httpx.get(f"{site.server.url}/v1/stats", params=window, headers=bearer(secret), timeout=30).status_code

    assert status() == 200
    row = page.locator(f"tr[data-prefix='{prefix}']")
    row.wait_for()
    assert "browser test" in row.inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    page.locator(f"tr[data-prefix='{prefix}']", has_text="revoked").wait_for()
    page.locator("#new-key-secret").wait_for(state="detached")  # a revoked key is no longer shown
    assert poll(lambda: status() == 401)


def test_a_phone_has_no_horizontal_scroll(site: Site) -> None:
    context = site.browser.new_context(
        timezone_id="UTC", viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        wide = "document.documentElement.scrollWidth > document.documentElement.clientWidth"
        page.goto(site.server.url)
        page.locator("#email").wait_for()
        assert page.evaluate(wide) is False
        sign_in(page, site)
        page.locator("[data-panel='Top sources'] tbody tr").first.wait_for()
        RESULTS.mkdir(exist_ok=True)
        page.screenshot(path=str(RESULTS / "dashboard-phone-overview.png"), full_page=True)
        assert page.evaluate(wide) is False
        page.click(".tabs a[data-view=settings]")
        page.locator("tr[data-prefix]").first.wait_for()
        page.screenshot(path=str(RESULTS / "dashboard-phone-settings.png"), full_page=True)
        assert page.evaluate(wide) is False
    finally:
        context.close()


# Everything a person can operate on the overview: each must take keyboard focus.
CONTROLS = "a[href], button:not([disabled]), select:not([disabled]), input:not([disabled]), textarea"


def _tab_through(page: Page) -> set[str]:
    """Press Tab until focus wraps around; the ids given to the visible controls reached."""
    page.evaluate(
        f"""() => document.querySelectorAll('{CONTROLS}').forEach((el, i) => {{
            if (el.offsetParent !== null) el.dataset.kb = String(i);
        }})"""
    )
    reached: set[str] = set()
    page.locator("body").focus()
    for _ in range(300):
        page.keyboard.press("Tab")
        kb = page.evaluate("document.activeElement && document.activeElement.dataset.kb")
        if kb is None:
            continue
        if kb in reached:
            break
        reached.add(kb)
    return reached


def _visible_controls(page: Page) -> set[str]:
    return set(page.evaluate("[...document.querySelectorAll('[data-kb]')].map(el => el.dataset.kb)"))


def test_keyboard_reaches_every_control(site: Site, page: Page) -> None:
    sign_in(page, site)
    page.locator("[data-panel='Top sources'] tbody tr").first.wait_for()
    page.locator("[data-panel='Events'] tbody tr").first.wait_for()
    reached = _tab_through(page)
    assert reached == _visible_controls(page) and len(reached) > 15
    # A filter applied from the keyboard alone.
    page.locator("[data-panel='Top sources'] .rowlink", has_text="google").focus()
    page.keyboard.press("Enter")
    wait_hash(page, "source=google")
    # The settings page too.
    page.locator(".tabs a[data-view=settings]").focus()
    page.keyboard.press("Enter")
    page.locator("tr[data-prefix]").first.wait_for()
    reached = _tab_through(page)
    assert reached == _visible_controls(page) and len(reached) > 10


def test_a_read_key_is_enough_to_see_the_numbers(site: Site, page: Page) -> None:
    """Pasting a key (no user) shows that key's project, read only."""
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        rk = client.post(f"/admin/projects/{site.project_id}/keys", json={"kind": "rk"}, headers=bearer(site.token))
    page.goto(site.server.url)
    page.click("details summary")
    page.fill("#token", rk.json()["key"])
    page.click("#token-form button[type=submit]")
    wait_for_numbers(page)
    assert shown(page, "visitors") == api_total(site, page, metric="uniques") == 10
    page.click(".tabs a[data-view=settings]")
    page.get_by_text("needs a signed-in user").wait_for()


def test_settings_change_origins_limits_retention_and_bots(site: Site, page: Page) -> None:
    sign_in(page, site)
    page.click(".tabs a[data-view=settings]")
    page.fill("#origins", "https://shop.example.com\nhttps://www.shop.example.com")
    page.click("section[aria-label='Allowed origins'] button[type=submit]")
    page.locator("section[aria-label='Allowed origins'] .status", has_text="Saved.").wait_for()
    limits = page.locator("section[aria-label='Rate limits']")
    limits.get_by_label("/v1/track limit").select_option("custom")
    limits.get_by_label("/v1/track events per second").fill("20")
    limits.get_by_label("/v1/track burst").fill("40")
    limits.get_by_label("/v1/batch limit").select_option("off")
    limits.get_by_role("button", name="Save limits").click()
    limits.locator(".status", has_text="Saved.").wait_for()
    page.fill("#retention", "400")
    page.check("#keep-bots")
    page.click("section[aria-label='Retention and bots'] button[type=submit]")
    page.locator("section[aria-label='Retention and bots'] .status", has_text="Saved.").wait_for()
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        token = site.token
        project = client.get(f"/admin/projects/{site.project_id}", headers=bearer(token)).json()["project"]
        # Back to what the other tests expect (retention bounds the ranges they read).
        client.patch(
            f"/admin/projects/{site.project_id}",
            json={"retention_days": None, "keep_bots": False, "rate_limits": {"/v1/track": None, "/v1/batch": None}},
            headers=bearer(token),
        )
    assert project["allowed_origins"] == ["https://shop.example.com", "https://www.shop.example.com"]
    assert project["rate_limits"] == {"/v1/track": {"rate": 20.0, "burst": 40}, "/v1/batch": "off"}
    assert project["retention_days"] == 400 and project["keep_bots"] is True


def test_live_view_counts_the_last_30_minutes(site: Site, page: Page) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    events = [
        {
            "event": "$pageview",
            "anonymous_id": f"live{i}",
            "timestamp": now.isoformat(),
            "path": "/live",
            "url": "https://shop.example.com/live",
        }
        for i in range(2)
    ]
    assert (
        httpx.post(
            f"{site.server.url}/v1/batch", json={"events": events}, headers=bearer(site.sk), timeout=30
        ).status_code
        == 202
    )
    sign_in(page, site)
    page.click(".tabs a[data-view=live]")
    page.locator("#live-visitors[data-value]").wait_for()

    def agrees() -> bool:
        window = {
            "from": (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30)).isoformat(),
            "to": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)).isoformat(),
            "metric": "uniques",
        }
        expected = httpx.get(f"{site.server.url}/v1/stats", params=window, headers=bearer(site.sk), timeout=30).json()
        shown_now = page.locator("#live-visitors").get_attribute("data-value")
        return shown_now == str(expected["rows"][0]["value"] if expected["rows"] else 0)

    assert poll(agrees)
    assert int(page.locator("#live-visitors").get_attribute("data-value") or 0) >= 2
    page.locator("section[aria-label='Latest events'] td", has_text="/live").first.wait_for()
