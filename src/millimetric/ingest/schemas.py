"""Request bodies of the ingest routes (msgspec: one decode + validate pass) and their limits.

msgspec checks types and lengths while decoding; `check_event` adds the rules a type cannot say
(absolute http(s) URL, timestamp window, reserved names, properties size and depth). Errors come
back as Zod-style `fieldErrors` (path -> messages), the shape the hosted API answers with.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

from millimetric.errors import ApiError
from millimetric.events.model import RESERVED_EVENTS_ALLOWED

TRACK_BODY_LIMIT = 64 * 1024
IDENTIFY_BODY_LIMIT = 64 * 1024
BATCH_BODY_LIMIT = 5 * 1024 * 1024
BATCH_MAX_EVENTS = 1000
PROPERTIES_MAX_BYTES = 8192
PROPERTIES_MAX_DEPTH = 32
FUTURE_TOLERANCE = dt.timedelta(hours=1)
EARLIEST = dt.datetime(2000, 1, 1)
# An invalid_payload lists at most this many paths in fieldErrors; beyond it the list is cut and
# `details.truncated` is true (a 1000-event batch could otherwise answer with thousands).
MAX_FIELD_ERRORS = 100


# String fields by their length bounds (msgspec checks them while decoding).
Text1To64 = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Text1To128 = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Text1To256 = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
TextTo1024 = Annotated[str, msgspec.Meta(max_length=1024)]
TextTo2048 = Annotated[str, msgspec.Meta(max_length=2048)]


class Context(msgspec.Struct, gc=False):
    """Visitor details forwarded by a server-side sender (honoured for sk_ keys only)."""

    ip: Text1To64 | None = None
    user_agent: TextTo1024 | None = None


class TrackEvent(msgspec.Struct, gc=False):
    event: Text1To128
    event_id: Text1To128 | None = None
    timestamp: dt.datetime | None = None
    anonymous_id: Text1To128 | None = None
    user_id: Text1To256 | None = None
    session_id: Text1To128 | None = None
    url: TextTo2048 | None = None
    path: TextTo2048 | None = None
    referrer: TextTo2048 | None = None
    context: Context | None = None
    # Kept as raw JSON: most clients send compact objects, which are stored without a decode and
    # re-encode (see `encode_object`).
    properties: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class Batch(msgspec.Struct):
    events: Annotated[list[TrackEvent], msgspec.Meta(min_length=1, max_length=BATCH_MAX_EVENTS)]


class RawBatch(msgspec.Struct):
    """Used only to report every failing event of a batch, after the fast path failed."""

    events: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=BATCH_MAX_EVENTS)]


class Identify(msgspec.Struct):
    anonymous_id: Text1To128
    user_id: Text1To256
    traits: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_track_decoder = msgspec.json.Decoder(TrackEvent)
_batch_decoder = msgspec.json.Decoder(Batch)
_raw_batch_decoder = msgspec.json.Decoder(RawBatch)
_identify_decoder = msgspec.json.Decoder(Identify)
# The slow path of a failed batch checks each field of a failing event on its own.
_object_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_TRACK_FIELDS = tuple(
    (field.encode_name, field.name, field.required, msgspec.json.Decoder(field.type))
    for field in msgspec.structs.fields(TrackEvent)
    if field.type is not msgspec.Raw  # raw JSON (properties) takes any value; check_event checks it
)
_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder()

TOO_DEEP = f"JSON nested too deeply (properties allow {PROPERTIES_MAX_DEPTH} levels)"
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_AT = " - at `"
_EVENTS = "events"  # a batch's field paths: events.<index>.<field>


class FieldErrors(dict[str, list[str]]):
    def add(self, path: str, message: str) -> None:
        self.setdefault(path, []).append(message)

    def raise_if_any(self) -> None:
        if self:
            raise invalid_payload(self)


def invalid_payload(field_errors: dict[str, list[str]] | None = None, form_error: str | None = None) -> ApiError:
    """400 invalid_payload; fieldErrors keeps its first MAX_FIELD_ERRORS paths (then `truncated`)."""
    field_errors = field_errors or {}
    details: dict[str, Any] = {"fieldErrors": dict(field_errors), "formErrors": [form_error] if form_error else []}
    if len(field_errors) > MAX_FIELD_ERRORS:
        details["fieldErrors"] = dict(list(field_errors.items())[:MAX_FIELD_ERRORS])
        details["truncated"] = True
    return ApiError("invalid_payload", details)


def _field_path(error: msgspec.ValidationError, prefix: str = "") -> tuple[str, str]:
    """`Expected ... - at `$.events[3].event`` -> ("events.3.event", "Expected ...")."""
    text = str(error)
    message, _, at = text.partition(_AT)
    parts = [m.group(1) or m.group(2) for m in _PATH_PART.finditer(at.rstrip("`"))]
    missing = re.match(r"Object missing required field `(.+)`$", message)
    if missing:
        parts.append(missing.group(1))
        message = "Required"
    return ".".join([p for p in (prefix, *parts) if p]), message


def decode_with(decoder: msgspec.json.Decoder, body: bytes, prefix: str = "") -> Any:
    """Decode and validate; failures become 400 invalid_payload with field paths."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        path, message = _field_path(exc, prefix)
        if not path:
            raise invalid_payload(form_error=message) from None
        raise invalid_payload({path: [message]}) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise invalid_payload(form_error="Body is not valid JSON (UTF-8)") from None
    except RecursionError:
        raise invalid_payload(form_error=TOO_DEEP) from None


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of decoded JSON, stopping early once past `limit`."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def encode_object(value: msgspec.Raw, path: str, errors: FieldErrors) -> str:
    """Compact JSON text of a properties/traits object, or a field error (not an object, not
    UTF-8, nested deeper than 32 levels, or over 8192 bytes compact).

    A raw object with no whitespace, few brackets and a small size is already compact and shallow
    enough: it is stored as sent. Anything else is decoded to find its depth and compact size."""
    raw = bytes(value)
    if raw in (b"", b"null"):
        return "{}"
    if raw[:1] != b"{":
        errors.add(path, "Expected `object`")
        return "{}"
    brackets = raw.count(b"{") + raw.count(b"[")
    # split() finds no ASCII whitespace four times faster than a regex search does.
    if brackets <= PROPERTIES_MAX_DEPTH and len(raw) <= PROPERTIES_MAX_BYTES and len(raw.split(None, 1)) == 1:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            errors.add(path, "Invalid UTF-8")
            return "{}"
    try:
        decoded = _any_decoder.decode(raw)
    except RecursionError:
        decoded = None
    except (msgspec.DecodeError, UnicodeDecodeError):
        errors.add(path, "Invalid UTF-8")
        return "{}"
    if decoded is None or _depth(decoded, PROPERTIES_MAX_DEPTH) > PROPERTIES_MAX_DEPTH:
        errors.add(path, f"Nesting deeper than {PROPERTIES_MAX_DEPTH} levels")
        return "{}"
    encoded = _encoder.encode(decoded)
    if len(encoded) > PROPERTIES_MAX_BYTES:
        errors.add(path, f"Encoded size {len(encoded)} bytes exceeds {PROPERTIES_MAX_BYTES}")
    return encoded.decode()


@lru_cache(maxsize=16384)  # page URLs repeat
def _absolute_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def to_utc_naive(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None)


def check_event(
    event: TrackEvent, prefix: str, now: dt.datetime, errors: FieldErrors, retention_days: int | None = None
) -> str:
    """Rules beyond types; returns the properties' compact JSON. `now` is naive UTC."""
    p = f"{prefix}." if prefix else ""
    if event.event.startswith("$") and event.event not in RESERVED_EVENTS_ALLOWED:
        errors.add(f"{p}event", "Names starting with '$' are reserved")
    if event.url is not None and not _absolute_http_url(event.url):
        errors.add(f"{p}url", "Must be an absolute http(s) URL")
    if event.timestamp is not None:
        try:
            ts = to_utc_naive(event.timestamp)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 has no UTC instant in range
            errors.add(f"{p}timestamp", "Out of range")
            return "{}"
        if ts > now + FUTURE_TOLERANCE:
            errors.add(f"{p}timestamp", "More than 1 hour in the future")
        elif ts < EARLIEST:
            errors.add(f"{p}timestamp", "Before 2000-01-01")
        elif retention_days is not None and ts < now - dt.timedelta(days=retention_days):
            errors.add(f"{p}timestamp", f"Older than the project's retention of {retention_days} days")
    return encode_object(event.properties, f"{p}properties", errors)


def decode_track(body: bytes) -> TrackEvent:
    return decode_with(_track_decoder, body)


def decode_identify(body: bytes) -> Identify:
    return decode_with(_identify_decoder, body)


def decode_batch(body: bytes, retention_days: int | None = None, now: dt.datetime | None = None) -> Batch:
    """Fast path decodes the whole batch in one pass (the per-event rules run later, in
    `pipeline.accept`, which names every failing event). When that decode fails, each event is
    decoded and checked on its own so that the 400 names every failing event and field, type errors
    and rule errors alike (`now` is naive UTC, the current time by default)."""
    try:
        return _batch_decoder.decode(body)
    except msgspec.ValidationError:
        pass
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise invalid_payload(form_error="Body is not valid JSON (UTF-8)") from None
    except RecursionError:
        raise invalid_payload(form_error=TOO_DEEP) from None
    raw = decode_with(_raw_batch_decoder, body)
    if now is None:
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    errors = FieldErrors()
    events = []
    for index, item in enumerate(raw.events):
        prefix = f"{_EVENTS}.{index}"
        event = _decode_event(item, prefix, errors)
        if event is not None:
            check_event(event, prefix, now, errors, retention_days)
            events.append(event)
    errors.raise_if_any()
    return Batch(events=events)


def _decode_event(raw: msgspec.Raw, prefix: str, errors: FieldErrors) -> TrackEvent | None:
    """One event of a failed batch, decoded on its own. When it has type errors, one per failing
    field is added to `errors` and a stand-in holding only its well-typed fields is returned, so
    that the caller's rule checks still report those; None when it is not even an object."""
    try:
        return _track_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        first = _field_path(exc, prefix)
    try:
        fields = _object_decoder.decode(raw)
    except msgspec.ValidationError as exc:  # not an object
        path, message = _field_path(exc, prefix)
        errors.add(path, message)
        return None
    values: dict[str, Any] = {}
    failed = False
    for key, name, required, decoder in _TRACK_FIELDS:
        value = fields.get(key)
        if value is None:
            if required:
                errors.add(f"{prefix}.{key}", "Required")
                failed = True
            continue
        try:
            values[name] = decoder.decode(value)
        except msgspec.ValidationError as exc:
            path, message = _field_path(exc, f"{prefix}.{key}")
            errors.add(path, message)
            failed = True
    if not failed:  # a failure the per-field pass cannot see: report what the strict decode said
        errors.add(*first)
        return None
    # The stand-in's `event` is "" when missing or ill-typed (no rule applies to it).
    values.setdefault("event", "")
    if "properties" in fields:
        values["properties"] = fields["properties"]
    return TrackEvent(**values)
