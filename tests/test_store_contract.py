"""The event-store contract: every backend gives the answers of a plain-Python reference
(`store_reference.py`) over the same few thousand pseudo-random events, through the `EventStore`
interface only (no SQL, no mocks): raw rows and their paging, stats, sources, deletes, durability
across a close and a reopen, ping and status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import random
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from millimetric.events.model import IDENTIFY_EVENT, PAGEVIEW_EVENT, EventRow, derived_session_id
from millimetric.events.queries import (
    GROUP_BY,
    INTERVALS,
    METRICS,
    ROW_FIELDS,
    Filters,
    FunnelPlan,
    RowsPage,
    RowsPlan,
    SourceRow,
    SourcesPlan,
    StatsPlan,
    TimeRange,
)
from millimetric.settings import Settings

import store_reference
from store_reference import ReferenceStore, bucket_us, epoch_us, referrer_host, row_tuple

pytestmark = pytest.mark.slow  # real server processes or long waits: `-m "not slow"` skips them

# Each backend the contract holds, with the fixture giving the MILLIMETRIC_* environment that
# selects it (None: the default settings).
BACKENDS = {"duckdb": None, "clickhouse": "clickhouse_environment"}

MAIN, OTHER = "proj_main", "proj_other"
D = dt.datetime
# Main project: 60 days across Europe/Berlin's (Oct 27) and America/St_Johns' (Nov 3) fall-back and
# two month ends. The other project: mostly around the spring-forward (Berlin Mar 31, St_Johns Mar 10),
# a few events inside the main window (the same times, other project).
MAIN_WINDOW = (D(2024, 9, 20), 60)
OTHER_WINDOW = (D(2024, 3, 1), 60)
RANGE = TimeRange(D(2024, 9, 21), D(2024, 11, 18))  # a few events fall outside on both sides
OTHER_RANGE = TimeRange(D(2024, 3, 2), D(2024, 11, 18))
EVERYTHING = TimeRange(D(2000, 1, 1), D(2100, 1, 1))
CUTOFF = D(2024, 10, 3, 12, 34, 56, 789_000)  # delete_before; an event sits exactly on it (and stays)
SOURCE_RANGES = {
    "whole days (21)": TimeRange(D(2024, 10, 1), D(2024, 10, 22)),
    "whole days (every day)": TimeRange(D(2024, 9, 20), D(2024, 11, 20)),
    "partial ends, 11 whole days": TimeRange(D(2024, 9, 30, 15), D(2024, 10, 12, 9, 30)),
    "short, partial days": TimeRange(D(2024, 10, 5, 13, 17, 1, 500), D(2024, 10, 7, 8)),
}
TZS = ("Europe/Berlin", "America/St_Johns")  # DST; St_Johns is also 30 minutes off the hour
GROUPINGS = [()] + [(c,) for c in GROUP_BY] + [("source", "medium"), ("referrer_host", "event_name")]
BIG = 1_000_000  # a limit nothing reaches
# Page sizes of the paging walks. Every page is a query, and a query has a fixed cost on ClickHouse:
# the one walk over every row of the range takes small pages (many page ends inside ties); walks
# with filters, whose rows are fewer, take larger ones (their page ends still split ties, below).
PAGE = 7
FILTERED_PAGE = 25

SOURCE_MEDIUMS = [("", "")] * 4 + [
    ("google", "organic"),
    ("google", "organic"),
    ("google", "paid"),
    ("facebook", "social"),
    ("facebook", "paid"),
    ("newsletter", "email"),
    ("news.ycombinator.com", "referral"),
    ("bing", "organic"),
    ("bing", "paid"),
]
REFERRERS = [None] * 6 + [
    "https://www.google.com/search?q=x",
    "https://l.facebook.com/",
    "https://news.ycombinator.com/item?id=1",
    "https://WWW.Google.COM/",
    "HTTPS://UPPER.EXAMPLE.ORG/Path",  # upper case
    "https://example.com:8443/x",
    "http://user:secret@login.example.net:81/",
    "https://a@b@c.example/",  # port, userinfo
    "www.no-scheme.example/page",
    "//protocol-relative.example/",
    "1http://digit-first.example/",  # no scheme: NULL
    "https://",
    "",
    "android-app://com.google.android.gm/",
    "https://[2001:DB8::1]:8080/x",  # empty host, odd schemes
    "https://host.example?x=1",
    "https://host.example#frag",
    "https://[::1",
    "mailto:someone@example.com",
]
PATHS = [None, "/", "/", "/pricing", "/p/1", "/P/1", "/p/2", "/checkout", "/blog/a-post"]
EVENTS = [PAGEVIEW_EVENT] * 5 + ["click", "signup", "purchase", "search"]
CAMPAIGNS = [None] * 6 + ["autumn", "black-friday", ""]


# The data set --------------------------------------------------------------------------------
def _event(rng: random.Random, i: int, project: str, when: D) -> EventRow:
    visitor = rng.randrange(250)
    anon = f"a{visitor}"
    source, medium = rng.choice(SOURCE_MEDIUMS)
    user_id = f"u{visitor % 30}" if visitor < 90 and rng.random() < 0.3 else None
    roll = rng.random()
    if roll < 0.10:
        session = f"s{rng.randrange(40)}"  # sent by the client, shared across visitors
    elif roll < 0.13:
        session = derived_session_id(anon, when)  # sent, but equal to the derivation
    else:
        session = None
    path = rng.choice(PATHS)
    return EventRow(
        project_id=project,
        timestamp=when,
        event_name=rng.choice(EVENTS),
        event_id=None if rng.random() < 0.2 else f"e{i}",
        anonymous_id=anon,
        user_id=user_id,
        session_id=session,
        source=source,
        medium=medium,
        campaign=rng.choice(CAMPAIGNS),
        source_confidence=rng.choice(["high", "low", ""]),
        source_rule_id=rng.choice(["", "r1", "r2"]),
        referrer=rng.choice(REFERRERS),
        url=None if path is None or rng.random() < 0.1 else f"https://shop.example.com{path}",
        path=path,
        country=rng.choice(["", "DE", "US", "FR", "GB"]),
        device_type=rng.choice(["desktop", "mobile", "tablet", ""]),
        browser=rng.choice(["Chrome", "Firefox", "Safari", ""]),
        os=rng.choice(["Windows", "macOS", "iOS", "Android", "Linux", ""]),
        ip_hash=f"{rng.getrandbits(64):016x}",
        properties=rng.choice(["{}", "{}", '{"plan":"pro"}', '{"n":1,"tags":["a","b"]}']),
    )


def _when(rng: random.Random, window: tuple[D, int], previous: list[D]) -> D:
    if previous and rng.random() < 0.05:
        return rng.choice(previous)  # the same instant as another event: insertion order decides
    start, days = window
    return start + dt.timedelta(seconds=rng.randrange(days * 86400), microseconds=rng.choice([0, rng.randrange(10**6)]))


@functools.cache
def dataset(seed: int = 20241027) -> tuple[tuple[EventRow, ...], ...]:
    """Batches of events, in the order to append them (not in time order)."""
    rng = random.Random(seed)
    rows: list[EventRow] = []
    times: list[D] = []
    for i in range(3200):
        project = MAIN if i < 2300 else OTHER
        window = MAIN_WINDOW if project == MAIN or rng.random() < 0.3 else OTHER_WINDOW
        when = _when(rng, window, times)
        times.append(when)
        rows.append(_event(rng, i, project, when))
    # Edges: the range's bounds (start inclusive, end exclusive) and the delete_before cutoff.
    # (Sent session ids: derived ones just before a half hour are checked on their own, below.)
    for n, when in enumerate([RANGE.start, RANGE.end - dt.timedelta(microseconds=1), RANGE.end, CUTOFF, CUTOFF]):
        rows.append(EventRow(**{**_fields(_event(rng, 10_000 + n, MAIN, when)), "session_id": f"edge{n % 2}"}))
    # $identify rows, some before the range (stitching ignores the range), some for users with no
    # events of their own, some linking one visitor to two users, in both projects.
    identifies = [(MAIN, f"a{rng.randrange(250)}", f"u{rng.randrange(30)}") for _ in range(50)]
    identifies += [
        (MAIN, "a5", "u1"),
        (MAIN, "a6", "u1"),
        (MAIN, "a5", "u2"),
        (MAIN, "a7", "linked-only"),
        (MAIN, "a8", "linked-only"),
        (OTHER, "a9", "u1"),
        (OTHER, "a5", "u3"),
    ]
    for n, (project, anon, user) in enumerate(identifies):
        window = (D(2024, 9, 1), 80) if project == MAIN else OTHER_WINDOW
        row = _event(rng, 20_000 + n, project, _when(rng, window, []))
        rows.append(EventRow(**{**_fields(row), "event_name": IDENTIFY_EVENT, "anonymous_id": anon, "user_id": user}))
    rng.shuffle(rows)
    return tuple(tuple(rows[i : i + 900]) for i in range(0, len(rows), 900))


def extra_events(seed: int, n: int, window: tuple[D, int], project: str = MAIN, **fields: Any) -> list[EventRow]:
    rng = random.Random(seed)
    rows = [_event(rng, 30_000 + seed * 1000 + i, project, _when(rng, window, [])) for i in range(n)]
    return [EventRow(**{**_fields(row), **fields}) for row in rows]


def _fields(row: EventRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__struct_fields__}


# The stores ----------------------------------------------------------------------------------
@pytest.fixture
def clickhouse_environment(clickhouse_database: str) -> dict[str, str]:
    return {"MILLIMETRIC_CLICKHOUSE_URL": clickhouse_database}


class Stores:
    """Opens stores of one backend on one data directory; closes what the test left open."""

    def __init__(self, backend: str, data_dir: Path, environ: dict[str, str]) -> None:
        self.backend, self.data_dir, self.environ, self.opened = backend, data_dir, environ, []

    def open(self):
        from millimetric.store.factory import open_event_store

        store = open_event_store(Settings.from_env(environ=dict(self.environ), data_dir=self.data_dir))
        self.opened.append(store)
        return store

    def close(self, store) -> None:
        self.opened.remove(store)
        store.close()

    def reopen(self, store):
        self.close(store)
        return self.open()


@pytest.fixture(params=list(BACKENDS))
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    environment = BACKENDS[request.param]
    manager = Stores(request.param, tmp_path / "data", request.getfixturevalue(environment) if environment else {})
    yield manager
    for store in manager.opened[::-1]:
        store.close()


@pytest.fixture
def store(stores: Stores):
    return stores.open()


def append(store, ref: ReferenceStore, rows: Sequence[EventRow]) -> list[int]:
    duplicates = asyncio.run(store.append(list(rows)))
    assert duplicates == ref.append(rows), "the store and the reference disagree on duplicates"
    return duplicates


def loaded(store) -> ReferenceStore:
    ref = ReferenceStore()
    for batch in dataset():
        append(store, ref, batch)
    return ref


# Comparing -----------------------------------------------------------------------------------
def assert_same(got: list, want: list, what: str) -> None:
    got = [tuple(r) for r in got]
    want = [tuple(r) for r in want]
    if got == want:
        return
    first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    missing = [r for r in want if r not in set(got)][:3]
    extra = [r for r in got if r not in set(want)][:3]
    raise AssertionError(
        f"{what}: {len(got)} rows, the reference {len(want)}; first difference at #{first}: "
        f"got {got[first] if first < len(got) else '(end)'}, want {want[first] if first < len(want) else '(end)'}; "
        f"missing e.g. {missing}; unexpected e.g. {extra}"
    )


def walk(store, project: str, plan: RowsPlan, max_pages: int = 10_000) -> list:
    """Every page of a paging walk."""
    pages = [store.rows(project, plan)]
    while pages[-1].next is not None:
        assert len(pages) < max_pages, f"{project} {plan}: paging does not end"
        pages.append(store.rows(project, plan._replace(after=pages[-1].next)))
    return pages


def assert_walk(
    store, ref: ReferenceStore, project: str, time_range: TimeRange, filters: Filters, limit: int = PAGE, what: str = ""
) -> None:
    """A full walk equals the reference's newest-first list, page by page."""
    want = ref.all_rows(project, time_range, filters)
    pages = walk(store, project, RowsPlan(time_range, filters, limit))
    label = f"rows {what or filters} of {project} in {time_range.start}..{time_range.end}, limit {limit}"
    for n, page in enumerate(pages):
        assert_same(page.rows, want[n * limit : (n + 1) * limit], f"{label}, page {n + 1} of {len(pages)}")
    expected_pages = max(1, -(-len(want) // limit))
    assert len(pages) == expected_pages, f"{label}: {len(pages)} pages for {len(want)} rows, want {expected_pages}"
    assert all(page.next is not None for page in pages[:-1]) and pages[-1].next is None, label


def tie_ends(rows: list, limit: int) -> int:
    """How many page ends of a walk fall between two rows of the same timestamp."""
    return sum(rows[i - 1][0] == rows[i][0] for i in range(limit, len(rows), limit))


def stats_plan(
    metric: str,
    group_by: tuple = (),
    interval: str | None = None,
    tz: str = "UTC",
    filters: Filters = Filters(),
    time_range: TimeRange = RANGE,
    limit: int = BIG,
) -> StatsPlan:
    return StatsPlan(time_range, filters, metric, group_by, interval, tz, limit)


def assert_stats(store, ref: ReferenceStore, project: str, plan: StatsPlan) -> None:
    assert_same(store.stats(project, plan), ref.stats(project, plan), f"stats of {project} {plan}")


def assert_sources(store, ref: ReferenceStore, project: str, plan: SourcesPlan, what: str = "") -> None:
    got = store.sources(project, plan)
    assert all(isinstance(row, tuple) and len(row) == len(SourceRow._fields) for row in got), got[:3]
    assert_same(got, ref.sources(project, plan), f"sources of {project} {what} {plan}")


def assert_every_read(store, ref: ReferenceStore, what: str) -> None:
    """A battery of reads over both projects: rows, stats and sources equal the reference's."""
    for project, time_range in ((MAIN, RANGE), (OTHER, OTHER_RANGE)):
        # Several pages in both projects: what a delete or a reopen leaves pages on.
        assert_walk(store, ref, project, EVERYTHING, Filters(), limit=250, what=f"{what}: all")
        for filters in (
            Filters(user_id="u1"),
            Filters(user_id="u3"),
            Filters(anonymous_id="a5"),
            Filters(event="signup"),
        ):
            assert_walk(store, ref, project, time_range, filters, limit=25, what=f"{what}: {filters}")
        for metric in METRICS:
            for group_by, interval in (((), None), (("source",), "day"), (("country", "event_name"), "week")):
                assert_stats(store, ref, project, stats_plan(metric, group_by, interval, time_range=time_range))
        assert_stats(store, ref, project, stats_plan("users", (), "day", "Europe/Berlin", time_range=time_range))
        for breakdown in ("source_medium", "source"):
            for label, source_range in SOURCE_RANGES.items():
                assert_sources(store, ref, project, SourcesPlan(source_range, breakdown, BIG), f"{what}, {label}")
            assert_sources(store, ref, project, SourcesPlan(EVERYTHING, breakdown, 3), f"{what}, limit 3")


# The reference itself --------------------------------------------------------------------------
def test_reference_answers_known_cases() -> None:
    """The reference's building blocks on hand-checked cases (it must be right before it judges)."""
    hosts = {r: referrer_host(r) for r in REFERRERS}
    assert hosts == {
        None: None,
        "https://www.google.com/search?q=x": "www.google.com",
        "https://l.facebook.com/": "l.facebook.com",
        "https://news.ycombinator.com/item?id=1": "news.ycombinator.com",
        "https://WWW.Google.COM/": "www.google.com",
        "HTTPS://UPPER.EXAMPLE.ORG/Path": "upper.example.org",
        "https://example.com:8443/x": "example.com",
        "http://user:secret@login.example.net:81/": "login.example.net",
        "https://a@b@c.example/": "b@c.example",
        "www.no-scheme.example/page": None,
        "//protocol-relative.example/": None,
        "1http://digit-first.example/": None,
        "https://": None,
        "": None,
        "android-app://com.google.android.gm/": "com.google.android.gm",
        "https://[2001:DB8::1]:8080/x": "[2001:db8::1]",
        "https://host.example?x=1": "host.example",
        "https://host.example#frag": "host.example",
        "https://[::1": "[",
        "mailto:someone@example.com": None,
    }

    def us(*args: int) -> int:
        return epoch_us(D(*args))

    # Berlin falls back on 2024-10-27 03:00 CEST -> 02:00 CET: that day is 25 hours long.
    assert bucket_us(D(2024, 10, 27, 22, 59), "day", "Europe/Berlin") == us(2024, 10, 26, 22)
    assert bucket_us(D(2024, 10, 27, 23, 0), "day", "Europe/Berlin") == us(2024, 10, 27, 23)
    assert bucket_us(D(2024, 10, 27, 0, 30), "hour", "Europe/Berlin") == us(2024, 10, 27, 0)  # 02:30 CEST
    assert bucket_us(D(2024, 10, 27, 1, 30), "hour", "Europe/Berlin") == us(2024, 10, 27, 1)  # 02:30 CET
    assert bucket_us(D(2024, 10, 30, 12), "week", "Europe/Berlin") == us(2024, 10, 27, 23)  # Monday the 28th
    assert bucket_us(D(2024, 10, 31, 23, 30), "month", "Europe/Berlin") == us(2024, 10, 31, 23)  # Nov 1st, CET
    assert bucket_us(D(2024, 3, 31, 21, 59), "day", "Europe/Berlin") == us(2024, 3, 30, 23)  # 23-hour day
    assert bucket_us(D(2024, 3, 31, 22, 0), "day", "Europe/Berlin") == us(2024, 3, 31, 22)
    assert bucket_us(D(2024, 11, 3, 12, 10), "hour", "America/St_Johns") == us(2024, 11, 3, 11, 30)  # 08:40 NST
    assert bucket_us(D(2024, 11, 3, 12, 10), "day", "America/St_Johns") == us(2024, 11, 3, 2, 30)  # midnight NDT
    assert bucket_us(D(2024, 10, 6, 23, 59), "week", "UTC") == us(2024, 9, 30)
    assert bucket_us(D(2024, 10, 31, 23, 59), "month", "UTC") == us(2024, 10, 1)

    ref = ReferenceStore()
    ref.append(dataset()[0][:50])
    full = ref.all_rows(MAIN, EVERYTHING, Filters())
    pages, plan = [], RowsPlan(EVERYTHING, Filters(), 4)
    while plan is not None:
        page = ref.rows(MAIN, plan)
        pages.append(page.rows)
        plan = plan._replace(after=page.next) if page.next else None
    assert [r for page in pages for r in page] == full and all(len(p) == 4 for p in pages[:-1])
    assert full == sorted(full, key=lambda r: r[0], reverse=True)
    # Rows stored during a walk stay out of its later pages, whatever their time.
    plan = RowsPlan(EVERYTHING, Filters(), 4)
    page = ref.rows(MAIN, plan)
    ref.append(
        extra_events(9, 20, MAIN_WINDOW)
        + [EventRow(MAIN, D(1970, 1, 1) + dt.timedelta(microseconds=full[5][0]), "tie")]
    )
    walked = page.rows
    while page.next is not None:
        page = ref.rows(MAIN, plan._replace(after=page.next))
        walked += page.rows
    assert walked == full
    assert len(ref.all_rows(MAIN, EVERYTHING, Filters())) == len(full) + 21


def test_the_data_set_is_varied() -> None:
    rows = [r for batch in dataset() for r in batch]
    assert 3000 < len(rows) < 4000
    main = [r for r in rows if r.project_id == MAIN]
    assert {referrer_host(r.referrer) for r in main} >= {None, "example.com", "login.example.net", "upper.example.org"}
    assert sum(r.session_id is None for r in main) > len(main) * 0.8 > sum(r.session_id is not None for r in main) > 100
    for column in ("user_id", "event_id", "campaign", "referrer", "url", "path"):
        assert any(getattr(r, column) is None for r in main) and any(getattr(r, column) for r in main), column
    assert len({r.timestamp for r in main}) < len(main)  # ties
    assert any(r.timestamp < RANGE.start for r in main) and any(r.timestamp >= RANGE.end for r in main)
    assert len({r.anonymous_id for r in main}) > 200 and len({r.user_id for r in main}) > 25


# Raw rows ------------------------------------------------------------------------------------
def test_rows_pages_filters_and_stitching(store) -> None:
    ref = loaded(store)
    assert tie_ends(ref.all_rows(MAIN, RANGE, Filters()), PAGE) >= 10, "page ends between events of one instant"
    assert_walk(store, ref, MAIN, RANGE, Filters())
    derived = next(
        row_tuple(r)[ROW_FIELDS.index("session_id")]
        for _, r in ref.events
        if r.project_id == MAIN and r.session_id is None and RANGE.start <= r.timestamp < RANGE.end
    )
    ends = 0
    for filters in (
        Filters(event="signup"),
        Filters(event=IDENTIFY_EVENT),
        Filters(source="google"),
        Filters(source=""),
        Filters(medium="paid"),
        Filters(anonymous_id="a5"),
        Filters(country="DE"),
        Filters(country=""),
        Filters(session_id="s3"),
        Filters(session_id=derived),
        Filters(user_id="u1"),
        Filters(user_id="u2"),
        Filters(user_id="linked-only"),
        Filters(user_id="nobody"),
        Filters(user_id="u1", event=PAGEVIEW_EVENT, country="US"),
        Filters(event="no such event"),
    ):
        assert_walk(store, ref, MAIN, RANGE, filters, limit=FILTERED_PAGE)
        ends += tie_ends(ref.all_rows(MAIN, RANGE, filters), FILTERED_PAGE)
    assert ends >= 3, "filtered walks end pages between events of one instant"
    for filters in (Filters(), Filters(user_id="u3"), Filters(user_id="u1")):  # the other project's identifies
        assert_walk(store, ref, OTHER, OTHER_RANGE, filters, limit=50)
    assert ref.all_rows(MAIN, RANGE, Filters(user_id="linked-only")), "the data set links visitors to linked-only"
    assert_walk(store, ref, MAIN, RANGE, Filters(anonymous_id="a5"), limit=1)
    assert_walk(store, ref, MAIN, RANGE, Filters(), limit=100_000)
    assert_walk(store, ref, MAIN, TimeRange(RANGE.start, RANGE.start + dt.timedelta(microseconds=1)), Filters())


def test_rows_pages_are_stable_while_events_arrive(store) -> None:
    ref = loaded(store)
    weeks = TimeRange(D(2024, 10, 20), D(2024, 11, 3))
    size = 13  # more than 20 pages in both walks: events arrive after pages 1, 5 and 20
    for time_range, filters in ((weeks, Filters()), (RANGE, Filters(medium="paid"))):
        plan = RowsPlan(time_range, filters, size)
        before = ref.all_rows(MAIN, time_range, filters)  # the pages as they were when the walk began
        want = [RowsPage(before[i : i + size], None) for i in range(0, len(before), size)]
        assert len(want) > 21, f"{filters}: {len(want)} pages"
        pages = [store.rows(MAIN, plan)]
        while pages[-1].next is not None:
            n = len(pages)
            if n in (1, 5, 20):
                cursor = D(1970, 1, 1) + dt.timedelta(microseconds=want[n - 1].rows[-1][0])  # where page n ended
                newer = extra_events(n, 5, (time_range.end - dt.timedelta(days=1), 1), medium="paid")
                older = extra_events(
                    100 + n, 20, (time_range.start, max(1, (cursor - time_range.start).days)), medium="paid"
                )
                tie = extra_events(200 + n, 2, (time_range.start, 1), medium="paid", timestamp=cursor)
                append(store, ref, newer + older + tie)
            assert n < 10_000
            pages.append(store.rows(MAIN, plan._replace(after=pages[-1].next)))
        assert len(pages) == len(want), f"{filters}: {len(pages)} pages, {len(want)} when the walk began"
        for n, (page, expected) in enumerate(zip(pages, want)):
            assert_same(page.rows, expected.rows, f"{filters}: page {n + 1} of a walk while events arrived")
        assert pages[-1].next is None
        assert_walk(store, ref, MAIN, time_range, filters, size, f"{filters}, a new walk after the arrivals")


def test_derived_session_ids_floor_the_half_hour(store) -> None:
    """A session id not sent is `{anonymous_id}-{floor(unix_ms / 1800000)}` (SPEC section 3,
    `derived_session_id`): an event 1 us before a half hour belongs to the session that ends there."""
    ref = ReferenceStore()
    boundary = D(2024, 10, 27, 1, 30)  # unix seconds divisible by 1800
    offsets_us = (-1_800_000_000, -501, -500, -499, -1, 0, 1, 499, 500, 1_799_999_999)
    rows = [
        EventRow(
            project_id=MAIN,
            timestamp=boundary + dt.timedelta(microseconds=us),
            event_name=PAGEVIEW_EVENT,
            anonymous_id="edge-visitor",
        )
        for us in offsets_us
    ]
    append(store, ref, rows)
    want = ref.all_rows(MAIN, EVERYTHING, Filters())
    assert [r[ROW_FIELDS.index("session_id")] for r in want][::-1] == [
        derived_session_id("edge-visitor", r.timestamp) for r in rows
    ]
    assert_walk(store, ref, MAIN, EVERYTHING, Filters(), limit=100, what="events around a half hour")
    for interval in (None, "hour"):
        assert_stats(store, ref, MAIN, stats_plan("sessions", (), interval, time_range=EVERYTHING))
    session = derived_session_id("edge-visitor", boundary - dt.timedelta(microseconds=1))
    assert_stats(store, ref, MAIN, stats_plan("count", filters=Filters(session_id=session), time_range=EVERYTHING))


# Stats ---------------------------------------------------------------------------------------
def test_stats_every_metric_grouping_and_interval(store) -> None:
    ref = loaded(store)
    for metric in METRICS:
        for group_by in GROUPINGS:
            for interval in (None, *INTERVALS):
                assert_stats(store, ref, MAIN, stats_plan(metric, group_by, interval))


def test_stats_in_time_zones_across_dst(store) -> None:
    ref = loaded(store)
    for tz in TZS:
        for project, time_range in ((MAIN, RANGE), (OTHER, OTHER_RANGE)):
            for metric in ("count", "uniques", "sessions"):
                for interval in INTERVALS:
                    for group_by in ((), ("country",)):
                        assert_stats(
                            store, ref, project, stats_plan(metric, group_by, interval, tz, time_range=time_range)
                        )
    # A range starting and ending mid-day in local time.
    assert_stats(
        store,
        ref,
        MAIN,
        stats_plan(
            "count", (), "day", "Europe/Berlin", time_range=TimeRange(D(2024, 10, 26, 21, 30), D(2024, 10, 28, 1, 15))
        ),
    )


def test_stats_filters_and_limits(store) -> None:
    ref = loaded(store)
    derived = next(
        row_tuple(r)[ROW_FIELDS.index("session_id")]
        for _, r in ref.events
        if r.project_id == MAIN and r.session_id is None and RANGE.start <= r.timestamp < RANGE.end
    )
    for filters in (
        Filters(event="signup"),
        Filters(source="google"),
        Filters(medium="paid"),
        Filters(anonymous_id="a5"),
        Filters(country="DE"),
        Filters(session_id="s3"),
        Filters(session_id=derived),
        Filters(user_id="u1"),
        Filters(user_id="linked-only"),
        Filters(user_id="u1", source="", event=PAGEVIEW_EVENT),
        Filters(event="no such event"),
        Filters(user_id="nobody"),
    ):
        for metric in METRICS:
            assert_stats(store, ref, MAIN, stats_plan(metric, filters=filters))
            assert_stats(store, ref, MAIN, stats_plan(metric, ("event_name",), "day", filters=filters))
        assert_stats(store, ref, OTHER, stats_plan("count", ("event_name",), filters=filters, time_range=OTHER_RANGE))
    assert ref.stats(MAIN, stats_plan("count", filters=Filters(event="no such event"))) == [(0,)]
    for limit in (1, 3, 10, 57):
        for metric in METRICS:
            assert_stats(store, ref, MAIN, stats_plan(metric, ("source", "medium"), "day", limit=limit))
            assert_stats(store, ref, MAIN, stats_plan(metric, ("path",), limit=limit))
    assert_stats(store, ref, MAIN, stats_plan("count", time_range=TimeRange(D(2030, 1, 1), D(2030, 2, 1))))


# Sources -------------------------------------------------------------------------------------
def test_sources(stores: Stores, store) -> None:
    ref = loaded(store)

    def check(what: str) -> None:
        for project in (MAIN, OTHER):
            for breakdown in ("source_medium", "source"):
                for label, time_range in SOURCE_RANGES.items():
                    assert_sources(store, ref, project, SourcesPlan(time_range, breakdown, BIG), f"{what}, {label}")
                for limit in (1, 4):
                    assert_sources(
                        store,
                        ref,
                        project,
                        SourcesPlan(SOURCE_RANGES["whole days (21)"], breakdown, limit),
                        f"{what}, limit {limit}",
                    )
                assert_sources(store, ref, project, SourcesPlan(EVERYTHING, breakdown, BIG), f"{what}, everything")

    check("fresh")
    # Reopened, the DuckDB backend has folded every event into its rollup; events appended then
    # are read besides it. Deletes touch both.
    store = stores.reopen(store)
    check("reopened")
    append(
        store,
        ref,
        extra_events(1, 200, (D(2024, 10, 1), 21)) + extra_events(2, 30, (D(2024, 10, 1), 21), anonymous_id="a5"),
    )
    check("reopened, then more events")
    for user in ("u1", "u4"):
        assert store.delete_user(MAIN, user) == ref.delete_user(MAIN, user), user
    check("after delete_user")
    assert store.delete_before(MAIN, D(2024, 10, 4, 6)) == ref.delete_before(MAIN, D(2024, 10, 4, 6))
    check("after delete_before")
    store = stores.reopen(store)
    check("after the deletes, reopened")


# Funnels -------------------------------------------------------------------------------------
FUNNEL_STEPS = [
    (PAGEVIEW_EVENT, "signup"),
    (PAGEVIEW_EVENT, "click", "purchase"),
    (PAGEVIEW_EVENT, PAGEVIEW_EVENT),  # a repeated step needs a second event
    (PAGEVIEW_EVENT, PAGEVIEW_EVENT, PAGEVIEW_EVENT, "signup"),
    ("signup", "purchase", "signup"),
    ("click", "search", PAGEVIEW_EVENT, "purchase", "click"),
    (IDENTIFY_EVENT, PAGEVIEW_EVENT),
    ("no such event", PAGEVIEW_EVENT),
    (PAGEVIEW_EVENT, "click") * 5,  # ten steps
]
FUNNEL_WINDOWS = (1, 3600, 86_400, 7 * 86_400, 366 * 86_400)


def assert_funnel(store, ref: ReferenceStore, project: str, plan: FunnelPlan) -> list[int]:
    got, want = store.funnel(project, plan), ref.funnel(project, plan)
    assert got == want, f"funnel of {project} {plan}: got {got}, the reference {want}"
    return got


def test_funnels(store) -> None:
    ref = loaded(store)
    answers = []
    for steps in FUNNEL_STEPS:
        for window in FUNNEL_WINDOWS:
            for by in ("anonymous", "user"):
                answers.append(assert_funnel(store, ref, MAIN, FunnelPlan(RANGE, Filters(), steps, window, by)))
    for filters in (
        Filters(source="google"),
        Filters(user_id="u1"),
        Filters(user_id="linked-only"),
        Filters(country="DE", medium="paid"),
        Filters(event=PAGEVIEW_EVENT),
        Filters(anonymous_id="a5"),
        Filters(session_id="s3"),
    ):
        for steps in FUNNEL_STEPS[:5]:
            for by in ("anonymous", "user"):
                plan = FunnelPlan(RANGE, filters, steps, 7 * 86_400, by)
                answers.append(assert_funnel(store, ref, MAIN, plan))
    short = TimeRange(D(2024, 10, 5, 13, 17, 1, 500), D(2024, 10, 12, 8))
    for project, time_range in ((MAIN, EVERYTHING), (MAIN, short), (OTHER, OTHER_RANGE), (OTHER, EVERYTHING)):
        for steps in FUNNEL_STEPS[:4]:
            for by in ("anonymous", "user"):
                plan = FunnelPlan(time_range, Filters(), steps, 30 * 86_400, by)
                answers.append(assert_funnel(store, ref, project, plan))
    # The cases say something: people enter, some convert, some drop off, and the window matters.
    assert any(a[0] > a[-1] > 0 for a in answers) and any(a[0] == 0 for a in answers)
    wide, narrow = (
        ref.funnel(MAIN, FunnelPlan(RANGE, Filters(), FUNNEL_STEPS[0], w, "user")) for w in (30 * 86_400, 86_400)
    )
    assert wide[-1] > narrow[-1] > 0 and wide[0] == narrow[0]


def test_funnel_window_edges_ties_and_the_latest_start(store) -> None:
    """Cases the random data set leaves to chance: a step exactly `window` after the start counts,
    one at the start's instant counts when stored later and not when stored earlier, and a later
    start rescues a chain the earlier one cannot finish."""
    project, at = "proj_funnel_edges", D(2024, 6, 1, 12)
    ref = ReferenceStore()

    def event(anon: str, name: str, seconds: float) -> EventRow:
        when = at + dt.timedelta(seconds=seconds)
        row = extra_events(1, 1, (at, 1), project, anonymous_id=anon, event_name=name, timestamp=when, user_id=None)
        return row[0]

    # Appended one at a time: stored order is the order below.
    for row in (
        event("exactly-window", PAGEVIEW_EVENT, 0),
        event("exactly-window", "signup", 60),
        event("tie-stored-before", "signup", 0),
        event("tie-stored-before", PAGEVIEW_EVENT, 0),
        event("tie-stored-before-too", "signup", 30),
        event("tie-stored-before-too", PAGEVIEW_EVENT, 30),
        event("tie-stored-after", PAGEVIEW_EVENT, 0),
        event("tie-stored-after", "signup", 0),
        event("later-start", PAGEVIEW_EVENT, 0),
        event("later-start", PAGEVIEW_EVENT, 50),
        event("later-start", "signup", 100),
        event("one-microsecond-late", PAGEVIEW_EVENT, 0),
        event("one-microsecond-late", "signup", 60.000001),
    ):
        append(store, ref, [row])
    day = TimeRange(at - dt.timedelta(days=1), at + dt.timedelta(days=1))
    for window, want in ((60, [6, 3]), (59, [6, 2]), (50, [6, 2]), (49, [6, 1])):
        plan = FunnelPlan(day, Filters(), (PAGEVIEW_EVENT, "signup"), window, "anonymous")
        assert assert_funnel(store, ref, project, plan) == want, f"window {window}"
    plan = FunnelPlan(day, Filters(), (PAGEVIEW_EVENT, PAGEVIEW_EVENT, "signup"), 100, "anonymous")
    assert assert_funnel(store, ref, project, plan) == [6, 1, 1]


# Deletes -------------------------------------------------------------------------------------
def test_delete_user_and_delete_before(stores: Stores, store) -> None:
    ref = loaded(store)
    for user in ("u1", "linked-only", "nobody"):
        deleted = store.delete_user(MAIN, user)
        assert deleted == ref.delete_user(MAIN, user), f"delete_user({user}): {deleted} rows"
        assert store.rows(MAIN, RowsPlan(EVERYTHING, Filters(user_id=user), 5)) == ([], None), user
    assert_every_read(store, ref, "after delete_user on a fresh store")
    # Events acknowledged just before the call are deleted too.
    append(
        store,
        ref,
        extra_events(3, 40, (D(2024, 10, 10), 3), user_id="u7")
        + extra_events(4, 3, (D(2024, 10, 10), 3), event_name=IDENTIFY_EVENT, anonymous_id="a240", user_id="u7"),
    )
    deleted = store.delete_user(MAIN, "u7")
    assert deleted == ref.delete_user(MAIN, "u7") and deleted > 43, deleted
    assert_every_read(store, ref, "after delete_user right after an append")

    store = stores.reopen(store)
    append(store, ref, extra_events(5, 100, (D(2024, 9, 25), 30)))
    for user in ("u2", "u3"):
        assert store.delete_user(MAIN, user) == ref.delete_user(MAIN, user), user
    assert store.delete_user(OTHER, "u1") == ref.delete_user(OTHER, "u1")
    deleted = store.delete_before(MAIN, CUTOFF)
    assert deleted == ref.delete_before(MAIN, CUTOFF) and deleted > 100, deleted
    assert store.rows(MAIN, RowsPlan(TimeRange(CUTOFF, CUTOFF + dt.timedelta(microseconds=1)), Filters(), 5)).rows, (
        "the events exactly at the cutoff stay"
    )
    assert store.delete_before(MAIN, CUTOFF) == 0
    assert ref.all_rows(OTHER, TimeRange(EVERYTHING.start, CUTOFF), Filters()), "the other project has older events"
    assert_every_read(store, ref, "after deletes on a reopened store")
    assert store.delete_before(OTHER, D(2024, 3, 20)) == ref.delete_before(OTHER, D(2024, 3, 20))
    assert_every_read(store, ref, "after delete_before on the other project")

    store = stores.reopen(store)
    assert_every_read(store, ref, "after the deletes, reopened")


# Durability ----------------------------------------------------------------------------------
def test_reads_survive_close_and_reopen(stores: Stores, store) -> None:
    ref = loaded(store)

    def answers(store) -> list:
        out = [
            [p.rows for p in walk(store, project, RowsPlan(EVERYTHING, Filters(), 500))] for project in (MAIN, OTHER)
        ]
        out += [
            store.stats(MAIN, stats_plan(m, g, i))
            for m in METRICS
            for g in ((), ("referrer_host",))
            for i in (None, "day")
        ]
        out += [store.stats(MAIN, stats_plan("sessions", ("country",), "week", "Europe/Berlin"))]
        out += [
            store.sources(p, SourcesPlan(r, b, BIG))
            for p in (MAIN, OTHER)
            for r in SOURCE_RANGES.values()
            for b in ("source_medium", "source")
        ]
        return out

    before = answers(store)
    assert_every_read(store, ref, "before closing")
    store = stores.reopen(store)
    assert answers(store) == before, "the same reads answer differently after a close and a reopen"
    assert_every_read(store, ref, "reopened")
    # Appended, never read, closed: still there.
    append(store, ref, extra_events(6, 300, MAIN_WINDOW) + extra_events(7, 50, OTHER_WINDOW, project=OTHER))
    store = stores.reopen(store)
    assert_every_read(store, ref, "appended then reopened")


def test_ping_and_status(store) -> None:
    assert store.ping() is None
    status = store.status()
    assert isinstance(status, dict) and status, status
    append(store, ReferenceStore(), dataset()[0])
    assert store.ping() is None
    assert isinstance(store.status(), dict)
    assert store.rows(MAIN, RowsPlan(EVERYTHING, Filters(), 1)).next is not None


# Export ----------------------------------------------------------------------------------------
def test_export_holds_every_stored_column(store) -> None:
    """Every stored column of the project's events in the range, oldest first, in bounded batches;
    the session id as reads see it (sent or derived)."""
    ref = loaded(store)
    window = TimeRange(D(2024, 10, 1), D(2024, 10, 20))
    batches = list(store.export(MAIN, window, batch_rows=97))
    assert batches and all(batch.num_rows <= 97 for batch in batches)
    got = [row for batch in batches for row in batch.to_pylist()]
    want = [
        {**_fields(row), "session_id": store_reference.session_id(row)}
        for _, row in ref.events
        if row.project_id == MAIN and window.start <= row.timestamp < window.end
    ]
    assert [row["timestamp"] for row in got] == sorted(row["timestamp"] for row in want)
    key = lambda row: sorted((k, str(v)) for k, v in row.items())  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, want))


def test_an_event_id_is_stored_once_per_project(stores: Stores, store) -> None:
    """De-duplication: a (project_id, event_id) already stored, or repeated within one append, is
    left out and its position returned; rows without an id are never merged; it survives a reopen."""
    ref = ReferenceStore()
    when = D(2024, 10, 1)

    def rows(project: str, *ids: str | None) -> list[EventRow]:
        return [EventRow(project, when + dt.timedelta(seconds=n), "x", event_id=i) for n, i in enumerate(ids)]

    assert append(store, ref, rows(MAIN, "a", "b", "a", None, None)) == [2]
    assert append(store, ref, rows(MAIN, "b", "c", None)) == [0]
    assert append(store, ref, rows(OTHER, "a", "b")) == []  # ids are per project
    assert append(store, ref, rows(MAIN, "a", "b", "c")) == [0, 1, 2]  # nothing new: nothing stored
    store = stores.reopen(store)
    assert append(store, ref, rows(MAIN, "c", "d", "a")) == [0, 2]
    for project in (MAIN, OTHER):
        assert_walk(store, ref, project, EVERYTHING, Filters(), limit=BIG)
    stored_ids = [row[1] for page in walk(store, MAIN, RowsPlan(EVERYTHING, Filters(), BIG)) for row in page.rows]
    assert sorted(stored_ids, key=str) == sorted(["a", "b", "c", "d", None, None, None], key=str)
