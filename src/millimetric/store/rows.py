"""The shape of one stored event: every column of SPEC section 5's row, in table order."""

from __future__ import annotations

import datetime as dt

import msgspec


class EventRow(msgspec.Struct):
    """Built by the ingest pipeline, written by an event store. `seq` is assigned by the store."""

    project_id: str
    timestamp: dt.datetime  # naive UTC
    event_name: str
    event_id: str | None = None
    anonymous_id: str = ""
    user_id: str | None = None
    session_id: str = ""
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
# Rows cross the pipe to the store process and sit in its journal as JSON lines: the store turns
# them into an Arrow table with pyarrow's JSON reader (C++, GIL released), about twice as cheap as
# decoding them into Python objects first.
_ENCODER = msgspec.json.Encoder()


def encode_rows(rows: list[EventRow]) -> bytes:
    """One JSON object per line, every field present."""
    return _ENCODER.encode_lines(rows)
