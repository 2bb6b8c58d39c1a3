"""Segment's HTTP Tracking API under `/segment` (and `/v1/batch` with Basic credentials, where
Segment's libraries post when their host is this server's root).

The write key is one of our keys: the HTTP Basic user name, or `writeKey` in the body. Every call
type maps onto a `/v1/track` event: `track` keeps its name; `page` is `$pageview`, `screen`
`$screen`, `identify` `$identify` (traits as properties), `group` `$group`, `alias` `$alias`;
`messageId` is the event id (so a retried message is stored once). Timestamps are corrected with
`sentAt` as Segment does: the event happened `sentAt - timestamp` before the server received it.
Limits are Segment's: 32 KB per message, 500 KB per batch.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Awaitable, Callable, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.responses import json_response
from millimetric.compat import mapping
from millimetric.compat.body import basic_username, read_json
from millimetric.errors import ApiError
from millimetric.events.model import ALIAS_EVENT, GROUP_EVENT, IDENTIFY_EVENT, PAGEVIEW_EVENT, SCREEN_EVENT
from millimetric.ingest import schemas

MESSAGE_LIMIT = 32 * 1024
BATCH_LIMIT = 500 * 1024

CallType = Literal["track", "page", "screen", "identify", "group", "alias"]


class Page(msgspec.Struct):
    url: str | None = None
    path: str | None = None
    referrer: str | None = None


class Campaign(msgspec.Struct):
    name: str | None = None
    source: str | None = None
    medium: str | None = None
    term: str | None = None
    content: str | None = None


class Context(msgspec.Struct):
    ip: str | None = None
    userAgent: str | None = None
    page: Page | None = None
    campaign: Campaign | None = None


class Message(msgspec.Struct):
    type: CallType | None = None
    messageId: schemas.Text1To128 | None = None
    userId: schemas.Text1To256 | None = None
    anonymousId: schemas.Text1To128 | None = None
    timestamp: dt.datetime | None = None
    sentAt: dt.datetime | None = None
    event: schemas.Text1To128 | None = None
    name: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: Context | None = None
    groupId: str | None = None
    previousId: str | None = None
    writeKey: str | None = None


class Batch(msgspec.Struct):
    batch: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1)]
    sentAt: dt.datetime | None = None
    writeKey: str | None = None


_message = msgspec.json.Decoder(Message)
_batch = msgspec.json.Decoder(Batch)
_NAMES = {
    "page": PAGEVIEW_EVENT,
    "screen": SCREEN_EVENT,
    "identify": IDENTIFY_EVENT,
    "group": GROUP_EVENT,
    "alias": ALIAS_EVENT,
}


def _event(message: Message, call: str, sent_at: dt.datetime | None, received_at: dt.datetime) -> schemas.TrackEvent:
    context = message.context or Context()
    page = context.page or Page()
    props = dict(message.properties or {})
    if call in ("page", "screen") and message.name and "name" not in props:
        props["name"] = message.name
    if call == "identify":
        props = dict(message.traits or {})
    elif call == "group":
        props = {"groupId": message.groupId, "traits": message.traits or {}}
    elif call == "alias":
        props = {"previousId": message.previousId}
    from_props = call == "page"
    url = mapping.http_url(props.get("url") if from_props else None) or mapping.http_url(page.url)
    campaign = context.campaign
    if campaign is not None:
        tags = {"campaign": campaign.name, "source": campaign.source, "medium": campaign.medium}
        tags.update(term=campaign.term, content=campaign.content)
        url = mapping.with_campaign(url, {name: value for name, value in tags.items() if value})
    path = mapping.text(props.get("path") if from_props else None) or mapping.text(page.path) or mapping.path_of(url)
    referrer = mapping.text(props.get("referrer") if from_props else None) or mapping.text(page.referrer)
    return schemas.TrackEvent(
        event=(message.event or "") if call == "track" else _NAMES[call],
        event_id=message.messageId,
        timestamp=_corrected(mapping.utc(message.timestamp), mapping.utc(message.sentAt or sent_at), received_at),
        anonymous_id=message.anonymousId,
        user_id=message.userId,
        url=url,
        path=path,
        referrer=referrer,
        context=mapping.context(context.ip, context.userAgent),
        properties=mapping.properties(props),
    )


def _corrected(timestamp: dt.datetime | None, sent_at: dt.datetime | None, received_at: dt.datetime) -> dt.datetime:
    """Segment's clock-skew correction: the sender's clock only measures how long ago it happened."""
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    try:
        return received_at - (sent_at - timestamp)
    except OverflowError:
        return timestamp


def _check(message: Message, call: str, path: str, errors: schemas.FieldErrors) -> None:
    """The fields a call type needs (Segment's own rules)."""
    p = f"{path}." if path else ""
    if call == "track" and message.event is None:
        errors.add(f"{p}event", "Required")
    if call == "group" and not message.groupId:
        errors.add(f"{p}groupId", "Required")
    if call == "alias" and not message.previousId:
        errors.add(f"{p}previousId", "Required")


async def batch(request: Request) -> Response:
    body = await read_json(request, BATCH_LIMIT)
    doc: Batch = schemas.decode_with(_batch, body)
    errors = schemas.FieldErrors()
    messages: list[tuple[Message, str]] = []
    for index, raw in enumerate(doc.batch):
        path = f"batch.{index}"
        if len(raw) > MESSAGE_LIMIT:
            errors.add(path, f"Message of {len(raw)} bytes exceeds {MESSAGE_LIMIT}")
            continue
        try:
            message = schemas.decode_with(_message, raw, path)
        except ApiError as error:  # invalid_payload naming this message's field
            details = error.details or {}
            for field, problems in details.get("fieldErrors", {}).items():
                for problem in problems:
                    errors.add(field, problem)
            for problem in details.get("formErrors", []):
                errors.add(path, problem)
            continue
        if message.type is None:
            errors.add(f"{path}.type", "Required")
            continue
        _check(message, message.type, path, errors)
        messages.append((message, message.type))
    errors.raise_if_any()
    key = basic_username(request.headers.get("authorization")) or doc.writeKey
    if key is None:
        key = next((m.writeKey for m, _ in messages if m.writeKey), None)

    def build(received_at: dt.datetime) -> list[schemas.TrackEvent]:
        return [_event(message, call, doc.sentAt, received_at) for message, call in messages]

    await mapping.ingest(request, key, "/v1/batch", build, "batch")
    return json_response({"success": True})


def _single(call: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        message: Message = schemas.decode_with(_message, await read_json(request, MESSAGE_LIMIT))
        errors = schemas.FieldErrors()
        _check(message, call, "", errors)
        errors.raise_if_any()
        key = basic_username(request.headers.get("authorization")) or message.writeKey
        await mapping.ingest(request, key, "/v1/track", lambda received: [_event(message, call, None, received)], "")
        return json_response({"success": True})

    handler.__name__ = call
    handler.__doc__ = f"POST /segment/v1/{call}: one `{call}` message."
    return handler


track, page, screen, identify, group, alias = (
    _single(call) for call in ("track", "page", "screen", "identify", "group", "alias")
)
