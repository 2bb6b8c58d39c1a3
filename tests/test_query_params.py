"""Parameter edges of GET /v1/query, /v1/stats and /v1/sources (SPEC section 5): every bound,
every enum value and a bad one, the exact instants of `from` (inclusive) and `to` (exclusive)."""

import pytest
import sqlalchemy as sa

from millimetric.store.schema import projects

from conftest import bearer, create_project

RANGE = {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"}
ENDPOINTS = ("/v1/query", "/v1/stats", "/v1/sources")


def get(client, path, token, **params):
    return client.get(path, params=params, headers=bearer(token))


def assert_invalid(response, param):
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_params" and body["details"]["param"] == param
    assert body["details"]["reason"]


def send(client, sk, *events):
    r = client.post("/v1/batch", json={"events": list(events)}, headers=bearer(sk))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("path", ENDPOINTS)
def test_from_and_to_are_required_and_iso_8601(client, keys, path):
    assert_invalid(get(client, path, keys.rk, to=RANGE["to"]), "from")
    assert_invalid(get(client, path, keys.rk, **{"from": RANGE["from"]}), "to")
    assert_invalid(get(client, path, keys.rk, **{"from": "yesterday", "to": RANGE["to"]}), "from")
    assert_invalid(get(client, path, keys.rk, **{"from": RANGE["from"], "to": "2024-13-01"}), "to")
    assert_invalid(get(client, path, keys.rk, **{"from": "", "to": RANGE["to"]}), "from")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_instants_at_the_ends_of_the_calendar(client, keys, path):
    assert_invalid(get(client, path, keys.rk, **{"from": "0001-01-01T00:00:00+01:00", "to": RANGE["to"]}), "from")
    assert_invalid(get(client, path, keys.rk, **{"from": RANGE["from"], "to": "9999-12-31T23:59:59-01:00"}), "to")
    wide = get(client, path, keys.rk, **{"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59.999999Z"})
    assert wide.status_code == 200, wide.text


@pytest.mark.parametrize("path", ENDPOINTS)
def test_from_must_be_before_to(client, keys, path):
    assert_invalid(get(client, path, keys.rk, **{"from": RANGE["from"], "to": RANGE["from"]}), "to")
    assert_invalid(get(client, path, keys.rk, **{"from": RANGE["to"], "to": RANGE["from"]}), "to")
    # the same instant written with two offsets is still empty
    assert_invalid(
        get(client, path, keys.rk, **{"from": "2024-01-01T01:00:00+01:00", "to": "2024-01-01T00:00:00Z"}), "to"
    )
    assert get(client, path, keys.rk, **RANGE).status_code == 200


def test_from_is_inclusive_and_to_exclusive_at_the_exact_instant(client, keys):
    send(
        client,
        keys.sk,
        {"event": "edge", "timestamp": "2024-01-01T00:00:00Z"},
        {"event": "edge", "timestamp": "2024-01-01T00:00:00.000001Z"},
        {"event": "edge", "timestamp": "2024-01-01T11:59:59.999999Z"},
        {"event": "edge", "timestamp": "2024-01-01T12:00:00Z"},
    )

    def count(frm, to):
        stats = get(client, "/v1/stats", keys.rk, **{"from": frm, "to": to}).json()["rows"][0]["value"]
        rows = get(client, "/v1/query", keys.rk, **{"from": frm, "to": to}).json()["rows"]
        sources = sum(
            r["events"] for r in get(client, "/v1/sources", keys.rk, **{"from": frm, "to": to}).json()["rows"]
        )
        assert stats == len(rows) == sources
        return stats

    assert count("2024-01-01T00:00:00Z", "2024-01-01T12:00:00Z") == 3  # from hits, to misses
    assert count("2024-01-01T00:00:00.000001Z", "2024-01-01T12:00:00.000001Z") == 3
    assert count("2024-01-01T00:00:00Z", "2024-01-01T00:00:00.000001Z") == 1
    # naive means UTC; offsets are honoured
    assert count("2024-01-01T00:00:00", "2024-01-01T12:00:00") == 3
    assert count("2024-01-01T01:00:00+01:00", "2024-01-01T07:00:00-05:00") == 3  # = 00:00Z to 12:00Z
    assert count("2024-01-01T01:00:00+01:00", "2024-01-01T07:00:00.000001-05:00") == 4
    assert count("2023-12-31T19:00:00-05:00", "2024-01-01T00:00:00.000001+00:00") == 1


@pytest.mark.parametrize(
    ("path", "high", "default"), [("/v1/query", 1000, 100), ("/v1/stats", 1000, 100), ("/v1/sources", 200, 50)]
)
def test_limit_bounds(client, keys, path, high, default):
    for ok in ("1", str(high)):
        assert get(client, path, keys.rk, **RANGE, limit=ok).status_code == 200
    for bad in ("0", str(high + 1), "-1", "ten", "1.5", "", "1e3"):
        assert_invalid(get(client, path, keys.rk, **RANGE, limit=bad), "limit")


def test_default_limits_apply(client, keys):
    send(client, keys.sk, *({"event": f"e{i}", "timestamp": f"2024-01-02T00:00:{i % 60:02d}Z"} for i in range(120)))
    assert len(get(client, "/v1/query", keys.rk, **RANGE).json()["rows"]) == 100
    assert len(get(client, "/v1/stats", keys.rk, **RANGE, group_by="event_name").json()["rows"]) == 100


@pytest.mark.parametrize("metric", ["count", "uniques", "sessions", "users"])
def test_every_metric(client, keys, metric):
    body = get(client, "/v1/stats", keys.rk, **RANGE, metric=metric).json()
    assert body == {"metric": metric, "approximate": False, "rows": [{"value": 0}]}


@pytest.mark.parametrize("interval", ["hour", "day", "week", "month"])
def test_every_interval(client, keys, interval):
    send(client, keys.sk, {"event": "x", "timestamp": "2024-01-10T10:30:00Z"})
    rows = get(client, "/v1/stats", keys.rk, **RANGE, interval=interval).json()["rows"]
    expected = {
        "hour": "2024-01-10T10:00:00Z",
        "day": "2024-01-10T00:00:00Z",
        "week": "2024-01-08T00:00:00Z",
        "month": "2024-01-01T00:00:00Z",
    }[interval]
    assert rows == [{"bucket": expected, "value": 1}]


@pytest.mark.parametrize(
    "column",
    ["event_name", "source", "medium", "campaign", "country", "device_type", "browser", "os", "path", "referrer_host"],
)
def test_every_group_by_column(client, keys, column):
    send(
        client,
        keys.sk,
        {
            "event": "x",
            "timestamp": "2024-01-10T10:30:00Z",
            "path": "/a",
            "url": "https://shop.example.com/a?utm_source=news&utm_medium=email&utm_campaign=jan",
            "referrer": "https://Mail.Example.org:8443/inbox?x=1",
        },
    )
    rows = get(client, "/v1/stats", keys.rk, **RANGE, group_by=column).json()["rows"]
    assert len(rows) == 1 and set(rows[0]) == {column, "value"} and rows[0]["value"] == 1
    if column == "referrer_host":
        assert rows[0]["referrer_host"] == "mail.example.org"


@pytest.mark.parametrize(
    "bad", ["ip_hash", "event_name,user_id", "properties", "EVENT_NAME", "source;drop table events"]
)
def test_group_by_outside_the_allow_list(client, keys, bad):
    r = get(client, "/v1/stats", keys.rk, **RANGE, group_by=bad)
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "invalid_group_by"
    assert body["details"]["allowed"] == [
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


@pytest.mark.parametrize(
    ("param", "bad"),
    [
        ("metric", "median"),
        ("metric", "COUNT"),
        ("interval", "minute"),
        ("interval", "year"),
        ("tz", "Mars/Olympus"),
        ("tz", "localtime"),
        ("tz", "../../etc/passwd"),
        ("tz", "+01:00"),
    ],
)
def test_bad_stats_enums(client, keys, param, bad):
    assert_invalid(get(client, "/v1/stats", keys.rk, **{**RANGE, "interval": "day", param: bad}), param)


@pytest.mark.parametrize("breakdown", ["source_medium", "source"])
def test_every_breakdown(client, keys, breakdown):
    assert get(client, "/v1/sources", keys.rk, **RANGE, breakdown=breakdown).json() == {
        "breakdown": breakdown,
        "rows": [],
    }


def test_bad_breakdown(client, keys):
    assert_invalid(get(client, "/v1/sources", keys.rk, **RANGE, breakdown="medium"), "breakdown")


@pytest.mark.parametrize("name", ["event", "source", "medium", "user_id", "anonymous_id", "country", "session_id"])
def test_filters_must_not_be_empty_or_huge(client, keys, name):
    for path in ("/v1/query", "/v1/stats"):
        assert_invalid(get(client, path, keys.rk, **RANGE, **{name: ""}), name)
        assert_invalid(get(client, path, keys.rk, **RANGE, **{name: "x" * 2049}), name)
        assert get(client, path, keys.rk, **RANGE, **{name: "x"}).status_code == 200


def test_range_may_not_exceed_the_projects_retention(client):
    keys = create_project(client, "short")
    with client.app.state.services.control.engine.begin() as conn:
        conn.execute(sa.update(projects).where(projects.c.id == keys.project_id).values(retention_days=30))
    for path in ENDPOINTS:
        ok = get(client, path, keys.rk, **{"from": "2024-01-01T00:00:00Z", "to": "2024-01-31T00:00:00Z"})
        assert ok.status_code == 200
        assert_invalid(
            get(client, path, keys.rk, **{"from": "2024-01-01T00:00:00Z", "to": "2024-01-31T00:00:01Z"}), "from"
        )
