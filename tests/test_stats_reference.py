"""GET /v1/stats against a plain-Python reference: a few thousand generated events, every metric x
group_by x interval (in UTC and Europe/Berlin, across a DST change and month ends): equal answers."""

import datetime as dt
import random
import zoneinfo
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from millimetric.api.app import create_app

from conftest import bearer, create_project, make_settings, stored_events

RANGE = {"from": "2024-03-01T00:00:00Z", "to": "2024-04-15T00:00:00Z"}
START = dt.datetime(2024, 2, 28)  # a few events fall outside the range on both sides
SPAN_S = 50 * 86400
GROUP_COLUMNS = [
    "event_name",
    "source",
    "medium",
    "campaign",
    "country",
    "device_type",
    "browser",
    "os",
    "path",
    "referrer_host",
]
GROUPINGS = [()] + [(c,) for c in GROUP_COLUMNS] + [("source", "medium"), ("event_name", "country", "device_type")]
METRICS = ["count", "uniques", "sessions", "users"]
INTERVALS = [None, "hour", "day", "week", "month"]
URLS = [
    "https://shop.example.com/",
    "https://shop.example.com/a?utm_source=newsletter&utm_medium=email&utm_campaign=m1",
    "https://shop.example.com/b?gclid=1",
    "https://shop.example.com/c?fbclid=2&utm_source=instagram",
    "https://shop.example.com/d?utm_source=partner&utm_medium=referral&utm_campaign=m2",
]
REFERRERS = [
    None,
    None,
    "https://www.google.com/search",
    "https://l.facebook.com/",
    "https://news.ycombinator.com/",
    "https://shop.example.com/a",
    "https://blog.example.org/post/1",
    "https://T.CO/x",
]
IPS = ["8.8.8.8", "81.2.69.142", "2.16.0.1", "1.1.1.1", "203.0.113.9", "91.198.174.192"]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "curl/8.5.0",
]


def generated_events(n: int, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        when = START + dt.timedelta(seconds=rng.randrange(SPAN_S), microseconds=rng.choice([0, 250_000, 999_999]))
        anon = f"a{rng.randrange(400)}"
        event = {
            "event": rng.choice(["$pageview", "$pageview", "click", "signup", "purchase", "search"]),
            "timestamp": when.isoformat() + rng.choice(["Z", "+00:00", ""]),
            "anonymous_id": anon,
            "url": rng.choice(URLS),
            "path": rng.choice(["/", "/a", "/b", "/pricing", "/p/1", "/p/2", "/p/3"]),
            "context": {"ip": rng.choice(IPS), "user_agent": rng.choice(USER_AGENTS)},
        }
        referrer = rng.choice(REFERRERS)
        if referrer:
            event["referrer"] = referrer
        if rng.random() < 0.3:
            event["user_id"] = f"u{int(anon[1:]) % 40}"
        if rng.random() < 0.2:
            event["session_id"] = f"s{rng.randrange(200)}"
        events.append(event)
    return events


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """(client, rk key, stored rows) for 3,000 events sent through POST /v1/batch."""
    settings = make_settings(tmp_path_factory.mktemp("stats") / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        keys = create_project(client)
        events = generated_events(3000)
        for i in range(0, len(events), 1000):
            r = client.post("/v1/batch", json={"events": events[i : i + 1000]}, headers=bearer(keys.sk))
            assert r.status_code == 202, r.text
        for anon, user in (("a1", "u1"), ("a2", "u1"), ("a3", "u9")):
            client.post("/v1/identify", json={"anonymous_id": anon, "user_id": user}, headers=bearer(keys.sk))
        rows = stored_events(client, "project_id = ?", (keys.project_id,))
        assert len(rows) == 3003
        for column in ("source", "country", "device_type", "browser", "referrer"):  # the data is varied
            assert len({row[column] for row in rows}) >= 3, column
        yield client, keys.rk, rows


def referrer_host(referrer: str | None) -> str | None:
    return (urlsplit(referrer).hostname or None) if referrer else None


def bucket_start(timestamp: dt.datetime, interval: str, tz: str) -> dt.datetime:
    local = timestamp.replace(tzinfo=dt.timezone.utc).astimezone(zoneinfo.ZoneInfo(tz))
    zone = zoneinfo.ZoneInfo(tz)
    if interval == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    if interval == "week":
        day -= dt.timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    return dt.datetime(day.year, day.month, day.day, tzinfo=zone)


def label(start: dt.datetime, tz: str) -> str:
    text = start.isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if tz == "UTC" else text


def expected(
    rows: list[dict], metric: str, group_by: tuple, interval: str | None, tz: str, limit: int, keep=lambda row: True
) -> list[dict]:
    lo, hi = dt.datetime(2024, 3, 1), dt.datetime(2024, 4, 15)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if not (lo <= row["timestamp"] < hi and keep(row)):
            continue
        values = tuple(referrer_host(row["referrer"]) if c == "referrer_host" else row[c] for c in group_by)
        bucket = bucket_start(row["timestamp"], interval, tz) if interval else None
        groups.setdefault((bucket, values), []).append(row)
    if not groups and not interval and not group_by:
        groups[(None, ())] = []

    def value(members: list[dict]) -> int:
        if metric == "count":
            return len(members)
        column = {"uniques": "anonymous_id", "sessions": "session_id", "users": "user_id"}[metric]
        return len({m[column] for m in members if m[column] is not None})

    answer = []
    for (bucket, values), members in groups.items():
        item = dict(zip(group_by, values))
        if interval:
            item["bucket"] = bucket
        item["value"] = value(members)
        answer.append(item)
    answer.sort(
        key=lambda r: (
            r["bucket"].timestamp() if interval else 0,
            -r["value"],
            *((r[c] is not None, r[c] or "") for c in group_by),
        )
    )
    for item in answer:
        if interval:
            item["bucket"] = label(item["bucket"], tz)
    return answer[:limit]


def stats(client, rk, **params):
    r = client.get("/v1/stats", params={**RANGE, **params}, headers=bearer(rk))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["approximate"] is False
    return body


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    ("interval", "tz"), [(None, "UTC")] + [(i, tz) for i in INTERVALS[1:] for tz in ("UTC", "Europe/Berlin")]
)
def test_every_metric_group_by_and_interval_matches_the_reference(loaded, metric, interval, tz):
    client, rk, rows = loaded
    for group_by in GROUPINGS:
        params = {"metric": metric, "limit": "1000", "tz": tz}
        if group_by:
            params["group_by"] = ",".join(group_by)
        if interval:
            params["interval"] = interval
        body = stats(client, rk, **params)
        assert body["metric"] == metric
        assert body["rows"] == expected(rows, metric, group_by, interval, tz, 1000), (group_by, interval, tz)


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"event": "signup"}, lambda r: r["event_name"] == "signup"),
        ({"source": "google"}, lambda r: r["source"] == "google"),
        ({"medium": "email"}, lambda r: r["medium"] == "email"),
        ({"country": "US"}, lambda r: r["country"] == "US"),
        ({"anonymous_id": "a7"}, lambda r: r["anonymous_id"] == "a7"),
        ({"session_id": "s3"}, lambda r: r["session_id"] == "s3"),
        (
            {"event": "$pageview", "source": "direct"},
            lambda r: r["event_name"] == "$pageview" and r["source"] == "direct",
        ),
        # user_id stitches: u1's own events plus everything of a1 and a2, which an identify linked to u1
        ({"user_id": "u1"}, lambda r: r["user_id"] == "u1" or r["anonymous_id"] in ("a1", "a2")),
        (
            {"user_id": "u1", "event": "click"},
            lambda r: (r["user_id"] == "u1" or r["anonymous_id"] in ("a1", "a2")) and r["event_name"] == "click",
        ),
    ],
)
@pytest.mark.parametrize("metric", METRICS)
def test_filters_match_the_reference(loaded, params, keep, metric):
    client, rk, rows = loaded
    for group_by, interval in (((), None), (("path",), "day"), (("browser", "os"), "week")):
        query = {"metric": metric, "limit": "1000", **params}
        if group_by:
            query["group_by"] = ",".join(group_by)
        if interval:
            query["interval"] = interval
        assert stats(client, rk, **query)["rows"] == expected(rows, metric, group_by, interval, "UTC", 1000, keep)


def test_limit_cuts_the_sorted_rows(loaded):
    client, rk, rows = loaded
    body = stats(client, rk, group_by="path,event_name", interval="day", limit="7")
    assert body["rows"] == expected(rows, "count", ("path", "event_name"), "day", "UTC", 7)
