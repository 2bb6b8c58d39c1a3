"""`bucket` is the ISO 8601 start of the bucket on the wall clock of `tz`: local midnights across
DST changes (23- and 25-hour days), weeks starting Monday, months, and hours that repeat."""

import pytest

from conftest import bearer


def bucketed(client, keys, timestamps, interval, tz, **extra):
    r = client.post(
        "/v1/batch", json={"events": [{"event": "x", "timestamp": t} for t in timestamps]}, headers=bearer(keys.sk)
    )
    assert r.status_code == 202, r.text
    params = {"from": "2024-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z", "interval": interval, "tz": tz, **extra}
    r = client.get("/v1/stats", params=params, headers=bearer(keys.rk))
    assert r.status_code == 200, r.text
    return [(row["bucket"], row["value"]) for row in r.json()["rows"]]


def test_berlin_day_buckets_across_spring_forward(client, keys):
    # 2024-03-31: 02:00 CET -> 03:00 CEST; that local day is 23 hours, 2024-03-30T23:00Z to 2024-03-31T22:00Z
    assert bucketed(
        client,
        keys,
        [
            "2024-03-30T22:59:59.999999Z",
            "2024-03-30T23:00:00Z",
            "2024-03-31T01:30:00Z",
            "2024-03-31T21:59:59Z",
            "2024-03-31T22:00:00Z",
        ],
        "day",
        "Europe/Berlin",
    ) == [("2024-03-30T00:00:00+01:00", 1), ("2024-03-31T00:00:00+01:00", 3), ("2024-04-01T00:00:00+02:00", 1)]


def test_berlin_day_buckets_across_fall_back(client, keys):
    # 2024-10-27: 03:00 CEST -> 02:00 CET; that local day is 25 hours, 2024-10-26T22:00Z to 2024-10-27T23:00Z
    assert bucketed(
        client,
        keys,
        [
            "2024-10-26T21:59:59Z",
            "2024-10-26T22:00:00Z",
            "2024-10-27T00:30:00Z",
            "2024-10-27T01:30:00Z",
            "2024-10-27T22:59:59Z",
            "2024-10-27T23:00:00Z",
        ],
        "day",
        "Europe/Berlin",
    ) == [("2024-10-26T00:00:00+02:00", 1), ("2024-10-27T00:00:00+02:00", 4), ("2024-10-28T00:00:00+01:00", 1)]


def test_new_york_day_buckets_across_both_changes(client, keys):
    # 2024-03-10 is 23 hours (05:00Z to 04:00Z), 2024-11-03 is 25 hours (04:00Z to 05:00Z next day)
    assert bucketed(
        client,
        keys,
        [
            "2024-03-10T04:59:59Z",
            "2024-03-10T05:00:00Z",
            "2024-03-11T03:59:59Z",
            "2024-03-11T04:00:00Z",
            "2024-11-03T03:59:59Z",
            "2024-11-03T04:00:00Z",
            "2024-11-04T04:59:59Z",
            "2024-11-04T05:00:00Z",
        ],
        "day",
        "America/New_York",
    ) == [
        ("2024-03-09T00:00:00-05:00", 1),
        ("2024-03-10T00:00:00-05:00", 2),
        ("2024-03-11T00:00:00-04:00", 1),
        ("2024-11-02T00:00:00-04:00", 1),
        ("2024-11-03T00:00:00-04:00", 2),
        ("2024-11-04T00:00:00-05:00", 1),
    ]


def test_the_repeated_hour_stays_two_buckets(client, keys):
    # 02:30 CEST and 02:30 CET on 2024-10-27 are different hours
    assert bucketed(
        client, keys, ["2024-10-27T00:30:00Z", "2024-10-27T01:30:00Z", "2024-10-27T01:59:00Z"], "hour", "Europe/Berlin"
    ) == [("2024-10-27T02:00:00+02:00", 1), ("2024-10-27T02:00:00+01:00", 2)]


def test_hours_in_a_half_hour_zone_start_on_the_local_hour(client, keys):
    assert bucketed(client, keys, ["2024-01-01T00:10:00Z", "2024-01-01T00:40:00Z"], "hour", "Asia/Kolkata") == [
        ("2024-01-01T05:00:00+05:30", 1),
        ("2024-01-01T06:00:00+05:30", 1),
    ]


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("UTC", [("2024-03-25T00:00:00Z", 2), ("2024-04-01T00:00:00Z", 1)]),
        # Sunday 23:30Z is already Monday in Berlin, so it opens the next week there
        ("Europe/Berlin", [("2024-03-25T00:00:00+01:00", 1), ("2024-04-01T00:00:00+02:00", 2)]),
    ],
)
def test_weeks_start_on_monday(client, keys, tz, expected):
    # 2024-03-25 and 2024-04-01 are Mondays; 2024-03-31 is a Sunday
    assert (
        bucketed(client, keys, ["2024-03-25T12:00:00Z", "2024-03-31T23:30:00Z", "2024-04-01T12:00:00Z"], "week", tz)
        == expected
    )


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("UTC", [("2024-03-01T00:00:00Z", 1), ("2024-04-01T00:00:00Z", 1)]),
        ("Europe/Berlin", [("2024-04-01T00:00:00+02:00", 2)]),
        ("America/New_York", [("2024-03-01T00:00:00-05:00", 1), ("2024-04-01T00:00:00-04:00", 1)]),
    ],
)
def test_months_follow_the_local_calendar(client, keys, tz, expected):
    assert bucketed(client, keys, ["2024-03-31T22:30:00Z", "2024-04-01T12:00:00Z"], "month", tz) == expected


def test_buckets_sort_before_values_and_values_descend_within_a_bucket(client, keys):
    r = client.post(
        "/v1/batch",
        json={
            "events": [
                {"event": e, "timestamp": t}
                for e, t in [
                    ("b", "2024-05-01T10:00:00Z"),
                    ("a", "2024-05-01T11:00:00Z"),
                    ("b", "2024-05-01T12:00:00Z"),
                    ("a", "2024-05-02T10:00:00Z"),
                    ("a", "2024-05-02T11:00:00Z"),
                    ("c", "2024-05-02T11:00:00Z"),
                ]
            ]
        },
        headers=bearer(keys.sk),
    )
    assert r.status_code == 202
    params = {"from": "2024-05-01T00:00:00Z", "to": "2024-05-03T00:00:00Z", "interval": "day", "group_by": "event_name"}
    rows = client.get("/v1/stats", params=params, headers=bearer(keys.rk)).json()["rows"]
    assert rows == [
        {"event_name": "b", "bucket": "2024-05-01T00:00:00Z", "value": 2},
        {"event_name": "a", "bucket": "2024-05-01T00:00:00Z", "value": 1},
        {"event_name": "a", "bucket": "2024-05-02T00:00:00Z", "value": 2},
        {"event_name": "c", "bucket": "2024-05-02T00:00:00Z", "value": 1},
    ]
