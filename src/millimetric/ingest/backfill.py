"""Backfills (`millimetric import`): NDJSON track bodies through the API's own write path.

Each line is decoded and checked like a `/v1/track` body, enriched by the same pipeline steps and
written by the same group-commit writer; there is no second write path. A bad line is rejected on
its own (with the error the API would have answered) instead of failing its whole batch. The
importer is trusted like an `sk_` key: a line's `context.ip` / `context.user_agent` are honoured.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Any, Callable, Iterable

import msgspec

from millimetric.errors import ApiError
from millimetric.events.model import EventRow
from millimetric.ingest import pipeline, schemas
from millimetric.ingest.visit import Visit, VisitFactory
from millimetric.ingest.writer import Writer
from millimetric.store.control import Project

BATCH_EVENTS = 1000
IN_FLIGHT_BATCHES = 8  # keeps the writer's group commit busy while the next batches are enriched
OVERLOADED_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
_PREFIX = "events"


class Rejected(msgspec.Struct):
    line: int  # 1-based line number in the input
    error: str
    details: Any
    input: str


@dataclasses.dataclass
class Outcome:
    lines: int = 0
    stored: int = 0
    rejected: int = 0
    dropped: Counter[str] = dataclasses.field(default_factory=Counter)


def _failing_indexes(error: ApiError) -> set[int]:
    """Batch positions named by an invalid_payload's fieldErrors (`events.3.timestamp` -> 3).

    A cut list (`truncated`) names only some of them: the caller rejects those and checks the
    rest of the batch again, which names the others."""
    paths = (error.details or {}).get("fieldErrors", {})
    return {int(path.split(".")[1]) for path in paths if path.startswith(f"{_PREFIX}.")}


class Backfill:
    def __init__(
        self,
        project: Project,
        visits: VisitFactory,
        steps: tuple[pipeline.Step, ...],
        writer: Writer,
        on_rejected: Callable[[Rejected], None],
        on_progress: Callable[[int, int], None] = lambda lines, nbytes: None,  # (+lines, +bytes)
    ) -> None:
        self._project = project
        self._visits = visits
        self._steps = steps
        self._writer = writer
        self._on_rejected = on_rejected
        self._on_progress = on_progress
        self.outcome = Outcome()

    async def run(self, lines: Iterable[bytes]) -> Outcome:
        """Import every line; returns once everything accepted is durable."""
        in_flight: set[asyncio.Task] = set()
        batch: list[tuple[int, bytes, schemas.TrackEvent]] = []
        unreported_lines = unreported_bytes = 0
        for number, line in enumerate(lines, start=1):
            unreported_lines, unreported_bytes = unreported_lines + 1, unreported_bytes + len(line)
            if not line.strip():
                continue
            self.outcome.lines += 1
            try:
                if len(line) > schemas.TRACK_BODY_LIMIT:
                    raise ApiError("payload_too_large")
                batch.append((number, line, schemas.decode_track(line)))
            except ApiError as error:
                self._reject(number, line, error)
            if len(batch) >= BATCH_EVENTS:
                await self._submit(batch, in_flight)
                batch = []
                self._on_progress(unreported_lines, unreported_bytes)
                unreported_lines = unreported_bytes = 0
        if batch:
            await self._submit(batch, in_flight)
        self._on_progress(unreported_lines, unreported_bytes)
        await asyncio.gather(*in_flight)
        return self.outcome

    def _reject(self, number: int, line: bytes, error: ApiError) -> None:
        self.outcome.rejected += 1
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        self._on_rejected(Rejected(number, error.code, error.details, text))

    def _accept(self, base: Visit, batch: list[tuple[int, bytes, schemas.TrackEvent]]) -> list[EventRow]:
        """Enriched rows of the batch's valid lines; lines failing the API's checks are rejected."""
        while batch:
            events = [event for _, _, event in batch]
            try:
                rows, dropped = pipeline.accept(
                    events,
                    [base.with_context(e.context) for e in events],
                    self._project.retention_days,
                    _PREFIX,
                    self._steps,
                )
            except ApiError as error:
                failing = _failing_indexes(error)
                if not failing:
                    raise
                for index in sorted(failing):
                    number, line, _ = batch[index]
                    self._reject(number, line, _only(error, index))
                batch = [item for i, item in enumerate(batch) if i not in failing]
                continue
            self.outcome.dropped.update(dropped)
            return rows
        return []

    async def _submit(self, batch: list[tuple[int, bytes, schemas.TrackEvent]], in_flight: set[asyncio.Task]) -> None:
        base = await self._visits.visit_async(self._project, ip="", user_agent="", request_host="")
        rows = self._accept(base, batch)
        if not rows:
            return
        while len(in_flight) >= IN_FLIGHT_BATCHES:
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            in_flight.difference_update(done)
            for task in done:
                task.result()
        in_flight.add(asyncio.create_task(self._write(rows)))

    async def _write(self, rows: list[EventRow]) -> None:
        """The writer answers 503 overloaded when its queue is full: back off and try again."""
        for delay in (*OVERLOADED_BACKOFF_S, None):
            try:
                duplicates = await self._writer.write(rows)
                self.outcome.stored += len(rows) - duplicates
                if duplicates:
                    self.outcome.dropped["duplicate"] += duplicates
                return
            except ApiError as error:
                if error.code != "overloaded" or delay is None:
                    raise
                await asyncio.sleep(delay)


def _only(error: ApiError, index: int) -> ApiError:
    """The part of a batch's invalid_payload about one event, with paths relative to its line."""
    prefix = f"{_PREFIX}.{index}."
    assert error.details is not None  # an invalid_payload always names its fields
    field_errors = {
        path.removeprefix(prefix): messages
        for path, messages in error.details["fieldErrors"].items()
        if path.startswith(prefix)
    }
    details = {key: value for key, value in error.details.items() if key != "truncated"}  # about the batch
    return ApiError("invalid_payload", {**details, "fieldErrors": field_errors})
