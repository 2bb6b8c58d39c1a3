"""The shape of one stored event: every column of a raw row, in table order."""

from __future__ import annotations

import datetime as dt

import msgspec


class EventRow(msgspec.Struct, gc=False):
    """Built by the ingest pipeline, written by an event store."""

    project_id: str
    timestamp: dt.datetime  # naive UTC
    event_name: str
    event_id: str | None = None
    anonymous_id: str = ""
    user_id: str | None = None
    session_id: str | None = None  # as sent; None: derived from anonymous_id and time (SESSION_SECONDS)
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
PAGEVIEW_EVENT = "$pageview"
# What Segment's and PostHog's call types become (compatible ingest); clients may send them too.
SCREEN_EVENT = "$screen"
GROUP_EVENT = "$group"
ALIAS_EVENT = "$alias"
# Names starting with `$` are the server's; clients may send only these.
RESERVED_EVENTS_ALLOWED = frozenset({PAGEVIEW_EVENT, IDENTIFY_EVENT, SCREEN_EVENT, GROUP_EVENT, ALIAS_EVENT})
# The drop reason counted for an event the store left out: it repeats the event id of a stored one.
DUPLICATE = "duplicate"
# A session id the client did not send is `{anonymous_id}-{floor(unix_seconds / SESSION_SECONDS)}`.
SESSION_SECONDS = 1800


def derived_session_id(anonymous_id: str, timestamp: dt.datetime) -> str:
    """The session id of an event sent without one (`timestamp` naive UTC)."""
    epoch_ms = (timestamp - dt.datetime(1970, 1, 1)) // dt.timedelta(milliseconds=1)
    return f"{anonymous_id}-{epoch_ms // (SESSION_SECONDS * 1000)}"
