"""`millimetric export` and `millimetric import --export`: a project's stored events, every column,
to a file and back, between any two event stores (an embedded install moving to ClickHouse, say).

An export is NDJSON (a header line, then one JSON object per event) or Parquet (the header in the
file's key-value metadata under `millimetric_export`). Either way rows stream: the store hands
them over in bounded batches and they are written as they come, so memory does not grow with the
project. Rows are loaded back as they were stored: no enrichment runs again (it could not: the raw
IP is not kept), only the project id is that of the target project.

A file is checked whole before its first row is written, so a bad or foreign file changes
nothing; the export itself is written beside its target and renamed into place when complete.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from millimetric.events.model import EventRow
from millimetric.events.queries import Filters, StatsPlan, TimeRange
from millimetric.store.control import ControlPlane, Project
from millimetric.store.interface import EXPORT_SCHEMA, EventStore

FORMATS = ("ndjson", "parquet")
VERSION = 1
HEADER_KEY = "millimetric_export"
EARLIEST = dt.datetime(1970, 1, 1)
LATEST = dt.datetime(9999, 1, 1)
APPEND_ROWS = 5_000  # rows per append while importing: well inside the store's append timeout
_PARQUET_MAGIC = b"PAR1"
_REQUIRED = frozenset({"project_id", "timestamp", "event_name"}) | {
    f.name for f in msgspec.structs.fields(EventRow) if f.type is str
}
Progress = Callable[[int], None]


class ExportError(RuntimeError):
    """The export or import cannot be done as asked; the message says why (nothing was written)."""


class _Line(EventRow, forbid_unknown_fields=True):
    """One NDJSON event line: exactly the stored columns."""


@dataclasses.dataclass(frozen=True)
class Header:
    project_id: str
    project_slug: str
    project_name: str
    start: str | None
    end: str | None
    columns: list[str]
    exported_at: str

    def encode(self) -> dict[str, Any]:
        return {HEADER_KEY: VERSION, **dataclasses.asdict(self)}

    @classmethod
    def decode(cls, found: object, where: str) -> "Header":
        if not isinstance(found, dict) or HEADER_KEY not in found:
            raise ExportError(f"{where} is not a millimetric export (it has no export header)")
        if found[HEADER_KEY] != VERSION:
            raise ExportError(
                f"{where} is export format {found[HEADER_KEY]!r}; this build reads format {VERSION} "
                "(export it again with this version, or import it with the version that wrote it)"
            )
        try:
            header = cls(**{k: v for k, v in found.items() if k != HEADER_KEY})
        except TypeError as exc:
            raise ExportError(f"{where}: the export header is damaged ({exc})") from None
        if header.columns != list(EXPORT_SCHEMA.names):
            raise ExportError(
                f"{where} holds columns {header.columns}; an export of this version holds {list(EXPORT_SCHEMA.names)}"
            )
        return header


def _utc(moment: dt.datetime) -> dt.datetime:
    """Naive UTC, as stores keep time."""
    return moment if moment.tzinfo is None else moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def time_range(start: dt.datetime | None, end: dt.datetime | None) -> TimeRange:
    """[start, end) in naive UTC; an open end is the beginning or the end of time."""
    return TimeRange(_utc(start) if start else EARLIEST, _utc(end) if end else LATEST)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="microseconds") + "Z"


# export -------------------------------------------------------------------------------------------
def count_events(store: EventStore, project_id: str, time_range: TimeRange) -> int:
    """How many events an export will write (the progress bar's total)."""
    found = store.stats(project_id, StatsPlan(time_range, Filters(), "count", (), None, "UTC", 1))
    return int(found[0][-1]) if found else 0


def export_events(
    store: EventStore,
    project: Project,
    target: Path,
    file_format: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    progress: Progress = lambda _: None,
) -> int:
    """Write the project's events in [start, end) to `target`; returns how many."""
    if file_format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {file_format!r}")
    start, end = _utc(start) if start else None, _utc(end) if end else None
    header = Header(
        project.id,
        project.slug,
        project.name,
        _iso(start) if start else None,
        _iso(end) if end else None,
        list(EXPORT_SCHEMA.names),
        _iso(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)),
    )
    batches = store.export(project.id, time_range(start, end))
    partial = target.with_name(target.name + ".partial")
    try:
        with open(partial, "wb") as out:
            written = (_write_ndjson if file_format == "ndjson" else _write_parquet)(out, header, batches, progress)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return written


def _write_ndjson(out: IO[bytes], header: Header, batches: Iterator[pa.RecordBatch], progress: Progress) -> int:
    encode = msgspec.json.Encoder().encode
    out.write(encode(header.encode()) + b"\n")
    written = 0
    for batch in batches:
        lines = []
        for row in batch.to_pylist():
            row["timestamp"] = _iso(row["timestamp"])
            lines.append(encode(row))
        out.write(b"\n".join(lines) + b"\n")
        written += batch.num_rows
        progress(batch.num_rows)
    return written


def _write_parquet(out: IO[bytes], header: Header, batches: Iterator[pa.RecordBatch], progress: Progress) -> int:
    schema = EXPORT_SCHEMA.with_metadata({HEADER_KEY: json.dumps(header.encode())})
    written = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch.replace_schema_metadata(schema.metadata))
            written += batch.num_rows
            progress(batch.num_rows)
    return written


# import -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ExportFile:
    """A checked export: its header, its format and how many events it holds."""

    path: Path
    file_format: str
    header: Header
    events: int


def check_file(path: Path, progress: Progress = lambda _: None) -> ExportFile:
    """Read the whole file and refuse it (ExportError) unless every row can be loaded as stored.
    `progress` hears (about) how many of the file's bytes each step read."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_PARQUET_MAGIC))
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic == _PARQUET_MAGIC:
        header, events = _check_parquet(path, progress)
        return ExportFile(path, "parquet", header, events)
    header, events = _check_ndjson(path, progress)
    return ExportFile(path, "ndjson", header, events)


def _check_parquet(path: Path, progress: Progress) -> tuple[Header, int]:
    try:
        parquet = pq.ParquetFile(path)
        metadata = parquet.schema_arrow.metadata or {}
        found = json.loads(metadata[HEADER_KEY.encode()]) if HEADER_KEY.encode() in metadata else None
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise ExportError(f"{path} is not a readable Parquet file ({exc})") from None
    header = Header.decode(found, str(path))
    if parquet.schema_arrow.remove_metadata() != EXPORT_SCHEMA:
        raise ExportError(f"{path}: its Parquet columns or types are not those of an export ({parquet.schema_arrow})")
    events, total_rows, size = 0, max(1, parquet.metadata.num_rows), path.stat().st_size
    try:
        for batch in parquet.iter_batches():
            _check_batch(batch, header, f"{path}, rows {events + 1}-{events + batch.num_rows}")
            events += batch.num_rows
            progress(batch.num_rows * size // total_rows)  # in bytes, as for NDJSON
    except (pa.ArrowException, OSError) as exc:
        raise ExportError(f"{path} is damaged after {events:,} rows ({exc})") from None
    return header, events


def _check_batch(batch: pa.RecordBatch, header: Header, where: str) -> None:
    for name in _REQUIRED:
        if batch.column(name).null_count:
            raise ExportError(f"{where}: column {name} has empty (null) values; every event has one")
    projects = set(batch.column("project_id").unique().to_pylist())
    if projects - {header.project_id}:
        raise ExportError(f"{where}: rows of another project than the export's ({header.project_id})")


def _check_ndjson(path: Path, progress: Progress) -> tuple[Header, int]:
    decode = msgspec.json.Decoder(_Line).decode
    with open(path, "rb") as f:
        first = f.readline()
        try:
            found = json.loads(first)
        except ValueError:
            found = None
        header = Header.decode(found, str(path))
        progress(len(first))
        events = 0
        for number, line in enumerate(f, start=2):
            progress(len(line))
            if not line.strip():
                continue
            try:
                row = decode(line)
            except msgspec.ValidationError as exc:
                raise ExportError(f"{path}, line {number}: {exc}") from None
            except msgspec.DecodeError as exc:
                raise ExportError(f"{path}, line {number} is not a JSON object ({exc})") from None
            if row.project_id != header.project_id:
                raise ExportError(f"{path}, line {number}: an event of another project than the export's")
            events += 1
    return header, events


def target_project(control: ControlPlane, export: ExportFile, project_ref: str | None) -> Project:
    """The project named by `--project`, else the export's own project (by id, then slug)."""
    header = export.header
    found = control.get_project(project_ref or header.project_id) or (
        None if project_ref else control.get_project(header.project_slug)
    )
    if found is None:
        wanted = (
            f"project {project_ref!r}"
            if project_ref
            else f"the export's project {header.project_slug!r} ({header.project_id})"
        )
        raise ExportError(
            f"{wanted} does not exist here: create one (`millimetric projects create NAME`) and pass --project SLUG"
        )
    return found


def _file_range(export: ExportFile) -> TimeRange:
    header = export.header
    start = _utc(dt.datetime.fromisoformat(header.start)) if header.start else EARLIEST
    end = _utc(dt.datetime.fromisoformat(header.end)) if header.end else LATEST
    return TimeRange(start, end)


def import_events(store: EventStore, export: ExportFile, project: Project, progress: Progress = lambda _: None) -> int:
    """Append a checked export's events to `project` as they were stored; returns how many.

    Refused when the project already holds events in the export's time range: loading the same
    export twice would store every event twice."""
    if next(store.export(project.id, _file_range(export), 1), None) is not None:
        raise ExportError(
            f"project {project.slug!r} already holds events in the export's time range: import into an "
            "empty project (an export loaded twice would store each event twice)"
        )
    return asyncio.run(_append_all(store, _rows(export, project.id), progress))


async def _append_all(store: EventStore, chunks: Iterator[list[EventRow]], progress: Progress) -> int:
    appended = 0
    for rows in chunks:
        await store.append(rows)
        appended += len(rows)
        progress(len(rows))
    return appended


def _rows(export: ExportFile, project_id: str) -> Iterator[list[EventRow]]:
    """The export's rows as `EventRow`s of `project_id`, `APPEND_ROWS` at a time."""
    if export.file_format == "parquet":
        for batch in pq.ParquetFile(export.path).iter_batches(batch_size=APPEND_ROWS):
            yield [EventRow(**{**row, "project_id": project_id}) for row in batch.to_pylist()]
        return
    decode = msgspec.json.Decoder(_Line).decode
    chunk: list[EventRow] = []
    with open(export.path, "rb") as f:
        f.readline()  # the header
        for line in f:
            if not line.strip():
                continue
            row = decode(line)
            chunk.append(
                EventRow(
                    **{
                        **msgspec.structs.asdict(row),
                        "project_id": project_id,
                        "timestamp": _utc(row.timestamp),
                    }
                )
            )
            if len(chunk) == APPEND_ROWS:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
