"""Property tests: the body validators answer every input with a value or a clean 400, never a crash."""

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from millimetric.errors import ApiError
from millimetric.ingest import schemas

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "event": st.one_of(st.text(max_size=140), st.integers()),
        "event_id": st.text(max_size=140),
        "timestamp": st.one_of(st.datetimes().map(lambda d: d.isoformat()), st.text(max_size=30)),
        "anonymous_id": st.text(max_size=140),
        "user_id": st.text(max_size=270),
        "url": st.one_of(st.just("https://example.com/?utm_source=x"), st.text(max_size=60)),
        "properties": json_values,
        "context": json_values,
    },
)


def outcome(decode, body: bytes):
    try:
        return decode(body)
    except ApiError as error:
        assert error.status == 400 and error.code == "invalid_payload"
        assert isinstance(error.details["fieldErrors"], dict)
        return None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_any_decoder(body):
    for decode in (schemas.decode_track, schemas.decode_batch, schemas.decode_identify):
        outcome(decode, body)


@settings(max_examples=400, deadline=None)
@given(event_like)
def test_track_bodies_decode_or_fail_cleanly_and_checks_never_crash(doc):
    event = outcome(schemas.decode_track, msgspec.json.encode(doc))
    if event is None:
        return
    assert 1 <= len(event.event) <= 128
    errors = schemas.FieldErrors()
    properties = schemas.check_event(event, "", dt.datetime(2026, 6, 1), errors)
    if not errors:
        assert isinstance(msgspec.json.decode(properties), dict)
        assert len(properties.encode()) <= schemas.PROPERTIES_MAX_BYTES


@settings(max_examples=200, deadline=None)
@given(st.lists(event_like, min_size=0, max_size=8))
def test_batch_errors_name_failing_events_by_index(docs):
    try:
        batch = schemas.decode_batch(msgspec.json.encode({"events": docs}))
    except ApiError as error:
        paths = error.details["fieldErrors"]
        assert all(p.startswith("events") for p in paths) or error.details["formErrors"]
        return
    assert len(batch.events) == len(docs)
