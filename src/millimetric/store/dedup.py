"""The in-memory index of event ids a store accepted within the de-duplication window, shared by
the backends that decide duplicates in one process: the embedded store (its store process sees
every append) and a ClickHouse node without Redis.

One dict per UTC day of first sight: a day older than the window is dropped whole. Each backend
loads the index at start from what it stores (`SeenIds.load`) and tells it of every append once
the rows are durable (`SeenIds.remember`).

The index costs roughly 100-150 bytes of memory per event id accepted within the window.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Sequence

from millimetric.store.interface import DEDUP_WINDOW

WINDOW = DEDUP_WINDOW
_WINDOW_S = WINDOW.total_seconds()
_DAY_S = 86_400


class SeenIds:
    """The (project_id, event_id) pairs accepted within the window. Not thread-safe: the store
    calls it under a lock, so checking and remembering are one step for every append."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._days: dict[int, dict[str, dict[str, float]]] = {}  # day -> project -> event id -> seen at

    def __len__(self) -> int:
        return sum(len(ids) for projects in self._days.values() for ids in projects.values())

    def duplicates(self, projects: Sequence[str | None], ids: Sequence[str | None]) -> list[int]:
        """Positions of rows whose id was seen within the window, or earlier in the same rows."""
        now = self._clock()
        oldest = now - _WINDOW_S
        self._expire(oldest)
        found: list[int] = []
        # Per project (an append rarely holds more than one): its ids so far in this call, and
        # its id maps of the days in the window.
        calls: dict[str, tuple[set[str], list[dict[str, float]]]] = {}
        for position, (project, event_id) in enumerate(zip(projects, ids)):
            if event_id is None or project is None:
                continue
            call = calls.get(project)
            if call is None:
                call = calls[project] = (set(), [day[project] for day in self._days.values() if project in day])
            earlier, days = call
            if event_id in earlier:
                found.append(position)
                continue
            earlier.add(event_id)
            for day in days:
                at = day.get(event_id)
                if at is not None and at >= oldest:
                    found.append(position)
                    break
        return found

    def remember(
        self,
        projects: Sequence[str | None],
        ids: Sequence[str | None],
        skip: Sequence[int] = (),
        at: float | None = None,
    ) -> None:
        """Add the rows' ids (except those at `skip`), seen `at` (epoch seconds, now by default)."""
        when = self._clock() if at is None else at
        skipped = set(skip)
        day = self._days.setdefault(int(when // _DAY_S), {})
        current: tuple[str | None, dict[str, float]] = (None, {})
        for position, (project, event_id) in enumerate(zip(projects, ids)):
            if event_id is None or project is None or (skipped and position in skipped):
                continue
            if current[0] != project:
                seen = day.get(project)
                if seen is None:
                    seen = day[project] = {}
                current = (project, seen)
            current[1].setdefault(event_id, when)

    def load(self, rows: Iterable[tuple[str, str, float]]) -> int:
        """Add stored ids, each (project_id, event_id, seen at in epoch seconds); returns how
        many were new to the index."""
        count = 0
        for project, event_id, seen in rows:
            day = self._days.setdefault(int(seen // _DAY_S), {})
            ids = day.get(project)
            if ids is None:
                ids = day[project] = {}
            if event_id not in ids:
                ids[event_id] = seen
                count += 1
        return count

    def _expire(self, oldest: float) -> None:
        for day in [d for d in self._days if (d + 1) * _DAY_S < oldest]:
            del self._days[day]
