"""How rows travel from a server process to the store process and sit in its journal.

`PAYLOAD_FORMAT` versions the encoding: every journal frame records the format of its payload, so
a store can replay a journal an older release wrote, and refuses one from a newer release.
"""

from __future__ import annotations

import itertools
from typing import Iterable

import msgspec
import pyarrow as pa
import pyarrow.ipc

from millimetric.events.model import COLUMNS, EventRow

# 1: two Arrow IPC messages, every string column end to end in one array, then the timestamps.
PAYLOAD_FORMAT = 1


class PayloadFormatError(RuntimeError):
    """Rows encoded by a newer release: refused (not quarantined), so nothing is lost on a downgrade."""


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
    return _serialize(strings, timestamps)


def encode_batch(batch: pa.RecordBatch) -> bytes:
    """Rows already in Arrow (e.g. a decoded payload with some rows filtered out), re-encoded."""
    strings = pa.concat_arrays([batch.column(i) for i in range(len(COLUMNS)) if i != _TIMESTAMP])
    return _serialize(strings, batch.column(_TIMESTAMP))


def _serialize(strings: pa.Array, timestamps: pa.Array) -> bytes:
    sink = pa.BufferOutputStream()
    sink.write(pa.record_batch([strings], schema=_STRINGS).serialize())
    sink.write(pa.record_batch([timestamps], schema=_TIMESTAMPS).serialize())
    return sink.getvalue().to_pybytes()


def decode_rows(payloads: Iterable[tuple[bytes, int]]) -> pa.Table:
    """The rows of many (payload, payload format) pairs, as one table (zero-copy: no row is parsed)."""
    batches = [decode_payload(payload, version) for payload, version in payloads]
    return pa.Table.from_batches(batches, schema=ARROW_SCHEMA)


def decode_payload(payload: bytes, payload_format: int) -> pa.RecordBatch:
    if payload_format != PAYLOAD_FORMAT:
        raise PayloadFormatError(
            f"a journal frame holds rows payload format {payload_format}, unknown to this build ({PAYLOAD_FORMAT}): "
            "it was written by a newer millimetric; run that version"
        )
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
