"""GET /v1/sources: the documented facebook paid-vs-social example, sorting, limit, uniques."""

from conftest import bearer

RANGE = {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"}


def send(client, sk, events):
    r = client.post("/v1/batch", json={"events": events}, headers=bearer(sk))
    assert r.status_code == 202, r.text


def sources(client, rk, **params):
    r = client.get("/v1/sources", params={**RANGE, **params}, headers=bearer(rk))
    assert r.status_code == 200, r.text
    return r.json()


def test_the_documented_facebook_example(client, keys):
    paid = [
        {
            "event": "$pageview",
            "timestamp": "2024-01-05T10:00:00Z",
            "anonymous_id": f"p{i}",
            "url": "https://shop.example.com/?fbclid=IwAR&utm_source=facebook&utm_medium=paid",
        }
        for i in range(6)
    ]
    social = [
        {
            "event": "$pageview",
            "timestamp": "2024-01-05T11:00:00Z",
            "anonymous_id": f"s{i}",
            "url": "https://shop.example.com/",
            "referrer": "https://l.facebook.com/",
        }
        for i in range(3)
    ]
    send(client, keys.sk, paid + social)
    assert sources(client, keys.rk) == {
        "breakdown": "source_medium",
        "rows": [
            {"source": "facebook", "medium": "paid", "events": 6, "uniques": 6, "paid_share": 1.0},
            {"source": "facebook", "medium": "social", "events": 3, "uniques": 3, "paid_share": 0.0},
        ],
    }
    assert sources(client, keys.rk, breakdown="source") == {
        "breakdown": "source",
        "rows": [
            {"source": "facebook", "events": 9, "uniques": 9, "paid_share": 6 / 9},
        ],
    }


def test_rows_sort_by_events_and_limit_cuts_them(client, keys):
    events = []
    for n, url in (
        (3, "https://shop.example.com/?utm_source=newsletter&utm_medium=email"),
        (5, "https://shop.example.com/?gclid=x"),
        (1, "https://shop.example.com/"),
    ):
        events += [{"event": "x", "timestamp": "2024-01-05T10:00:00Z", "anonymous_id": "same", "url": url}] * n
    events.append({"event": "x", "timestamp": "2024-02-01T00:00:00Z", "url": "https://shop.example.com/?gclid=x"})
    send(client, keys.sk, events)
    rows = sources(client, keys.rk)["rows"]
    assert [(r["source"], r["medium"], r["events"], r["uniques"]) for r in rows] == [
        ("google", "paid", 5, 1),
        ("newsletter", "email", 3, 1),
        ("direct", "direct", 1, 1),
    ]
    assert [r["source"] for r in sources(client, keys.rk, limit="2")["rows"]] == ["google", "newsletter"]


def test_an_empty_range_has_no_rows(client, keys):
    assert sources(client, keys.rk) == {"breakdown": "source_medium", "rows": []}
