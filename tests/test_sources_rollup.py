"""The sources rollup, driven in-process through `EventDatabase`: /v1/sources answers
(`EventDatabase.sources`) match a plain-Python reference whatever part of the data the rollup
holds: before any fold, after one, with newer events on top, across partial days at both ends of
the range, and after forget and retention deleted events."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Iterator

import duckdb
import pytest

from millimetric.events.model import EventRow
from millimetric.events.queries import SourceRow, SourcesPlan, TimeRange
from millimetric.store.duckdb.database import EventDatabase
from millimetric.store.duckdb.reads import rolled_up_days
from millimetric.store.rows import encode_rows

PROJECT = "p_rollup"
START = dt.datetime(2024, 3, 1)
SPAN_S = 12 * 86400
BATCH = 500
# (source, medium) as the classifier gives them for the ways in the HTTP tests send: a Google
# referrer, a gclid, a Facebook referrer, fbclid with utm paid, a newsletter utm, no referrer.
ARRIVALS = [
    ("google", "organic"),
    ("google", "paid"),
    ("facebook", "social"),
    ("facebook", "paid"),
    ("newsletter", "email"),
    ("direct", "direct"),
]
RANGES = [
    (dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 13)),  # whole days only
    (dt.datetime(2024, 3, 1, 7, 30), dt.datetime(2024, 3, 11, 18, 15)),  # partial days at both ends
    (dt.datetime(2024, 3, 2, 7, 30), dt.datetime(2024, 3, 8, 18, 15)),  # too few whole days to use the rollup
    (dt.datetime(2024, 3, 4, 1), dt.datetime(2024, 3, 4, 23)),  # inside one day: no whole day at all
    (dt.datetime(2024, 3, 5), dt.datetime(2024, 3, 5, 12)),  # starts on a day boundary, ends mid-day
    (dt.datetime(2024, 3, 6, 12), dt.datetime(2024, 3, 8)),  # starts mid-day, ends on a boundary
]


def generated_rows(n: int, seed: int) -> list[EventRow]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        source, medium = rng.choice(ARRIVALS)
        visitor = rng.randrange(150)  # visitors return on other days, by other sources
        rows.append(
            EventRow(
                project_id=PROJECT,
                timestamp=START + dt.timedelta(seconds=rng.randrange(SPAN_S)),
                event_name="$pageview",
                anonymous_id=f"v{visitor}",
                user_id=f"u{visitor}" if visitor % 10 == 0 else None,
                source=source,
                medium=medium,
            )
        )
    return rows


def expected(rows: list[EventRow], time_range: TimeRange, breakdown: str) -> list[SourceRow]:
    groups: dict[tuple, list[EventRow]] = {}
    for row in rows:
        if row.project_id == PROJECT and time_range.start <= row.timestamp < time_range.end:
            key = (row.source, row.medium) if breakdown == "source_medium" else (row.source, None)
            groups.setdefault(key, []).append(row)
    answer = [
        SourceRow(
            source,
            medium,
            len(members),
            len({m.anonymous_id for m in members}),
            sum(1 for m in members if m.medium == "paid"),
        )
        for (source, medium), members in groups.items()
    ]
    answer.sort(key=lambda r: (-r.events, r.source, r.medium or ""))
    return answer


class Store:
    """The database under test and every row it should hold, as the reference sees them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.database = EventDatabase(path)
        self.rows: list[EventRow] = []

    def send(self, rows: list[EventRow]) -> None:
        for i in range(0, len(rows), BATCH):
            batch = rows[i : i + BATCH]
            self.database.append(encode_rows(batch), len(batch))
        self.rows.extend(rows)

    def delete_user(self, user_id: str) -> int:
        # the test data has no $identify rows: forgetting a user deletes exactly their own rows
        self.rows = [row for row in self.rows if not (row.project_id == PROJECT and row.user_id == user_id)]
        return self.database.delete_user(PROJECT, user_id)

    def delete_before(self, cutoff: dt.datetime) -> int:
        self.rows = [row for row in self.rows if not (row.project_id == PROJECT and row.timestamp < cutoff)]
        return self.database.delete_before(PROJECT, cutoff)

    def stored(self, sql: str, params: list | None = None) -> list[tuple]:
        """Rows of one statement over a consistent copy of the database file (`backup`), opened
        read-only: unlike closing the database (which folds), it leaves the rollup as it is."""
        copy = self.path.with_name("inspect.duckdb")
        copy.unlink(missing_ok=True)
        self.database.backup(copy)
        try:
            with duckdb.connect(str(copy), read_only=True) as con:
                return con.execute(sql, params or []).fetchall()
        finally:
            copy.unlink(missing_ok=True)

    def assert_matches_reference(self) -> None:
        for start, end in RANGES:
            for breakdown in ("source_medium", "source"):
                time_range = TimeRange(start, end)
                got = self.database.sources(PROJECT, SourcesPlan(time_range, breakdown, 200))
                assert got == expected(self.rows, time_range, breakdown), (start, end, breakdown)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(tmp_path_factory.mktemp("rollup") / "events.duckdb")
    try:
        yield store
    finally:
        store.database.close()


def test_answers_are_exact_whatever_the_rollup_holds(store: Store) -> None:
    store.send(generated_rows(1500, seed=1))
    assert store.stored("SELECT covered_seq FROM rollup_state") == [(0,)]
    store.assert_matches_reference()  # nothing folded yet: every event is read raw
    assert store.database.fold() == 1500
    assert store.stored("SELECT covered_seq FROM rollup_state") == [(1500,)]
    assert store.database.fold() == 0
    store.assert_matches_reference()  # all of it from the rollup, but the partial days
    store.send(generated_rows(700, seed=2))
    store.assert_matches_reference()  # newer events on top of the rollup
    assert store.database.fold() == 700
    store.assert_matches_reference()
    assert len({row.source for row in store.rows}) >= 4  # the data is varied
    assert {
        row.source
        for row in store.database.sources(
            PROJECT, SourcesPlan(TimeRange(START, START + dt.timedelta(days=12)), "source", 200)
        )
    } == {source for source, _ in ARRIVALS}


def test_answers_stay_exact_after_forget_and_retention(store: Store) -> None:
    store.send(generated_rows(500, seed=3))
    store.database.fold()
    for user in ("u0", "u20", "u70"):
        before = len(store.rows)
        deleted = store.delete_user(user)
        assert deleted == before - len(store.rows) > 0
    store.assert_matches_reference()
    # every event of v0 carried user u0: forgetting u0 leaves nothing of v0 in the rollup either
    assert store.stored("SELECT count(*) FROM rollup_visitors WHERE anonymous_id IN ('v0', 'v20', 'v70')") == [(0,)]
    assert store.stored("SELECT count(*) FROM rollup_visitors WHERE anonymous_id = 'v1'") == [(1,)]
    store.send(generated_rows(300, seed=4))  # unfolded rows, then a retention cut mid-day
    cutoff = dt.datetime(2024, 3, 5, 13, 30)
    before = len(store.rows)
    deleted = store.delete_before(cutoff)
    assert deleted == before - len(store.rows) > 0
    store.assert_matches_reference()
    store.database.fold()
    store.assert_matches_reference()
    assert store.stored('SELECT min("timestamp") >= ?, count(*) FROM events', [cutoff]) == [(True, len(store.rows))]


def test_the_rollup_holds_one_row_per_visitor_and_way_in(store: Store) -> None:
    store.database.fold()
    rows = store.stored(
        "SELECT count(*), count(DISTINCT (way, vid)) FROM source_medium_visitors WHERE project_id = ?", [PROJECT]
    )
    assert rows[0][0] == rows[0][1] > 0
    for table in ("source_medium_visitors", "source_visitors"):
        assert store.stored(f"SELECT count(*) FROM {table} WHERE list_sort(days) != days OR len(days) = 0") == [(0,)]
    rows = store.stored("SELECT count(*), count(DISTINCT vid), count(DISTINCT anonymous_id) FROM rollup_visitors")
    assert rows[0][0] == rows[0][1] == rows[0][2] == len({row.anonymous_id for row in store.rows})


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        (dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 8), (dt.date(2024, 3, 1), dt.date(2024, 3, 8))),
        (dt.datetime(2024, 3, 1, 0, 0, 1), dt.datetime(2024, 3, 9, 5), (dt.date(2024, 3, 2), dt.date(2024, 3, 9))),
        (dt.datetime(2024, 3, 1, 0, 0, 1), dt.datetime(2024, 3, 8, 5), (dt.date(2024, 3, 2), dt.date(2024, 3, 2))),
        (dt.datetime(2024, 3, 1, 6), dt.datetime(2024, 3, 1, 9), (dt.date(2024, 3, 2), dt.date(2024, 3, 2))),
    ],
)
def test_the_rollup_answers_for_the_whole_days_of_a_week_or_more(start, end, days) -> None:
    assert rolled_up_days(TimeRange(start, end)) == days
