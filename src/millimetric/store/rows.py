"""The shape of one stored event: every column of SPEC section 5's row, in table order."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Iterable

import msgspec
import pyarrow as pa
import pyarrow.ipc


class EventRow(msgspec.Struct, gc=False):
    """Built by the ingest pipeline, written by an event store. `seq` is assigned by the store."""

    project_id: str
    timestamp: dt.datetime  # naive UTC
    event_name: str
    event_id: str | None = None
    anonymous_id: str = ""
    user_id: str | None = None
    session_id: str | None = None  # as sent; None: the store derives it (a virtual column)
    source: str = ""
    medium: str = ""
    campaign: str | None = None
    source_confidence: str = ""
    source_rule_id: str = ""
    referrer: str | None = None
    url: str | None = None
    path: str | None = None
    country: str = ""
    device_type: str = ""
    browser: str = ""
    os: str = ""
    ip_hash: str = ""
    properties: str = "{}"  # compact JSON text


COLUMNS: tuple[str, ...] = EventRow.__struct_fields__
IDENTIFY_EVENT = "$identify"  # the row an identify stores; reads and forget stitch identities by it

# Rows cross the pipe to the store process and sit in its journal in Arrow's IPC format: the store
# hands them to DuckDB without parsing them again (JSON lines cost it 4-5 us per row to read).
ARROW_SCHEMA = pa.schema([(name, pa.timestamp("us") if name == "timestamp" else pa.string()) for name in COLUMNS])
_TIMESTAMP = COLUMNS.index("timestamp")
_STRING_COLUMNS = len(COLUMNS) - 1
# On the wire every string column is one run of a single array, column after column: Arrow's cost
# per array (about 5 us to build, more to serialize) made 21 of them the dearest part of a group
# commit of a few track events.
_STRINGS = pa.schema([("strings", pa.string())])
_TIMESTAMPS = pa.schema([("timestamp", ARROW_SCHEMA.field("timestamp").type)])


def encode_rows(rows: list[EventRow]) -> bytes:
    """Two Arrow IPC messages: the string columns end to end, then the timestamps."""
    columns = list(zip(*map(msgspec.structs.astuple, rows))) if rows else [() for _ in COLUMNS]
    strings = pa.array(itertools.chain.from_iterable(c for i, c in enumerate(columns) if i != _TIMESTAMP), pa.string())
    timestamps = pa.array(columns[_TIMESTAMP], _TIMESTAMPS.field(0).type)
    sink = pa.BufferOutputStream()
    sink.write(pa.record_batch([strings], schema=_STRINGS).serialize())
    sink.write(pa.record_batch([timestamps], schema=_TIMESTAMPS).serialize())
    return sink.getvalue().to_pybytes()


def decode_rows(payloads: Iterable[bytes]) -> pa.Table:
    """The rows of many `encode_rows` payloads, as one table (zero-copy: no row is parsed)."""
    return pa.Table.from_batches([_decode(payload) for payload in payloads], schema=ARROW_SCHEMA)


def _decode(payload: bytes) -> pa.RecordBatch:
    reader = pa.BufferReader(pa.py_buffer(payload))
    strings = pa.ipc.read_record_batch(pa.ipc.read_message(reader), _STRINGS).column(0)
    timestamps = pa.ipc.read_record_batch(pa.ipc.read_message(reader), _TIMESTAMPS).column(0)
    count = len(timestamps)
    if len(strings) != count * _STRING_COLUMNS:
        raise ValueError(f"rows payload holds {len(strings)} strings for {count} rows")
    arrays, start = [], 0
    for i in range(len(COLUMNS)):
        if i == _TIMESTAMP:
            arrays.append(timestamps)
        else:
            arrays.append(strings.slice(start, count))
            start += count
    return pa.RecordBatch.from_arrays(arrays, schema=ARROW_SCHEMA)
