"""PostHog's capture API under `/posthog`: `/batch/`, `/capture/` and `/e/`.

PostHog's libraries take a host and post to `{host}/batch/`, so their host is
`https://HOST/posthog`. `api_key` (in the body, or an event's `properties.token`) is one of our
keys. Mapping: `distinct_id` is the user id (and the anonymous id unless the event carries
`$anon_distinct_id` or `$device_id`); an event with `$process_person_profile: false` is
anonymous. `uuid` is the event id (a retried event is stored once), `$current_url` the URL,
`$pathname` the path, `$referrer` the referrer (`$direct`: none), `$session_id` the session,
`$ip` and `$raw_user_agent` the visitor (for `sk_` keys). `$pageview`, `$screen` and
`$identify` (with `$set` as traits) keep their names; `$create_alias` becomes `$alias` and
`$groupidentify` `$group`. PostHog's other `$` events (feature flag calls, exceptions, property
updates) are its own bookkeeping: they are accepted and counted as dropped (`posthog_internal`).
Timestamps are corrected with `sent_at` as PostHog does.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.responses import json_response
from millimetric.compat import mapping
from millimetric.compat.body import read_json
from millimetric.events.model import ALIAS_EVENT, GROUP_EVENT, IDENTIFY_EVENT, PAGEVIEW_EVENT, SCREEN_EVENT
from millimetric.ingest import schemas

CAPTURE_LIMIT = schemas.TRACK_BODY_LIMIT
BATCH_LIMIT = schemas.BATCH_BODY_LIMIT
INTERNAL = "posthog_internal"  # the drop reason of PostHog's own `$` events


class Event(msgspec.Struct):
    event: schemas.Text1To128
    distinct_id: schemas.Text1To256 | None = None
    properties: dict[str, Any] | None = None
    timestamp: dt.datetime | None = None
    uuid: schemas.Text1To128 | None = None
    api_key: str | None = None


class Batch(msgspec.Struct):
    batch: Annotated[list[Event], msgspec.Meta(min_length=1, max_length=schemas.BATCH_MAX_EVENTS)]
    api_key: str | None = None
    sent_at: dt.datetime | None = None


_event = msgspec.json.Decoder(Event)
_batch = msgspec.json.Decoder(Batch)
_list = msgspec.json.Decoder(Annotated[list[Event], msgspec.Meta(min_length=1, max_length=schemas.BATCH_MAX_EVENTS)])
_keys = msgspec.json.Decoder(dict[str, msgspec.Raw])
_NAMES = {
    PAGEVIEW_EVENT: PAGEVIEW_EVENT,
    "$screen": SCREEN_EVENT,
    "$identify": IDENTIFY_EVENT,
    "$create_alias": ALIAS_EVENT,
    "$groupidentify": GROUP_EVENT,
}
_KEPT = frozenset(_NAMES.values())
# Properties that become columns rather than stay properties.
_MAPPED = ("$current_url", "$pathname", "$referrer", "$session_id", "$ip", "$raw_user_agent", "$set", "token")


def _track(event: Event, name: str, sent_at: dt.datetime | None, received_at: dt.datetime) -> schemas.TrackEvent:
    props = dict(event.properties or {})
    url = mapping.http_url(props.get("$current_url"))
    referrer = props.get("$referrer")
    personless = props.get("$process_person_profile") is False
    anonymous = mapping.text(props.get("$anon_distinct_id"), 128) or mapping.text(props.get("$device_id"), 128)
    distinct = event.distinct_id
    kept = {k: v for k, v in props.items() if k not in _MAPPED}
    if name == IDENTIFY_EVENT:
        traits = props.get("$set")
        kept = traits if isinstance(traits, dict) else {}
    elif name == ALIAS_EVENT:
        kept = {"previousId": distinct, "alias": props.get("alias")}
    elif name == GROUP_EVENT:
        kept = {
            "groupType": props.get("$group_type"),
            "groupKey": props.get("$group_key"),
            "traits": props.get("$group_set") or {},
        }
    timestamp = mapping.utc(event.timestamp)
    if timestamp is not None and sent_at is not None:
        try:
            timestamp = received_at - (sent_at - timestamp)
        except OverflowError:
            pass
    return schemas.TrackEvent(
        event=name,
        event_id=event.uuid,
        timestamp=timestamp,
        anonymous_id=anonymous or (distinct if distinct and len(distinct) <= 128 else None),
        user_id=None if personless else distinct,
        session_id=mapping.text(props.get("$session_id"), 128),
        url=url,
        path=mapping.text(props.get("$pathname")) or mapping.path_of(url),
        referrer=None if referrer == "$direct" else mapping.text(referrer),
        context=mapping.context(props.get("$ip"), props.get("$raw_user_agent")),
        properties=mapping.properties(kept),
    )


def _key(api_key: str | None, events: list[Event]) -> str | None:
    if api_key:
        return api_key
    for event in events:
        token = event.api_key or (event.properties or {}).get("token")
        if isinstance(token, str) and token:
            return token
    return None


async def _ingest(
    request: Request, events: list[Event], api_key: str | None, sent_at: dt.datetime | None, route: str, prefix: str
) -> Response:
    named = [(event, _NAMES.get(event.event, event.event)) for event in events]
    kept = [(event, name) for event, name in named if not name.startswith("$") or name in _KEPT]
    sent = mapping.utc(sent_at)

    def build(received_at: dt.datetime) -> list[schemas.TrackEvent]:
        return [_track(event, name, sent, received_at) for event, name in kept]

    internal = Counter({INTERNAL: len(named) - len(kept)})
    await mapping.ingest(request, _key(api_key, events), route, build, prefix, +internal)
    return json_response({"status": 1})


async def batch(request: Request) -> Response:
    """POST /posthog/batch/: `{"api_key", "batch": [...], "sent_at"}`."""
    doc: Batch = schemas.decode_with(_batch, await read_json(request, BATCH_LIMIT))
    return await _ingest(request, doc.batch, doc.api_key, doc.sent_at, "/v1/batch", "batch")


async def capture(request: Request) -> Response:
    """POST /posthog/capture/: one event with its `api_key`."""
    event: Event = schemas.decode_with(_event, await read_json(request, CAPTURE_LIMIT))
    return await _ingest(request, [event], event.api_key, None, "/v1/track", "")


async def e(request: Request) -> Response:
    """POST /posthog/e/: a batch object, one event, or a JSON array of events."""
    body = await read_json(request, BATCH_LIMIT)
    if body.lstrip()[:1] == b"[":
        events: list[Event] = schemas.decode_with(_list, body)
        return await _ingest(request, events, None, None, "/v1/batch", "")
    fields = schemas.decode_with(_keys, body)
    if "batch" in fields:
        doc: Batch = schemas.decode_with(_batch, body)
        return await _ingest(request, doc.batch, doc.api_key, doc.sent_at, "/v1/batch", "batch")
    event: Event = schemas.decode_with(_event, body)
    return await _ingest(request, [event], event.api_key, None, "/v1/track", "")
