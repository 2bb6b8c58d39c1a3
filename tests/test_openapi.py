"""The OpenAPI document: valid 3.1, in step with the app's routes, and consistent with the error catalogue.

Drift between the routes and the document is the usual way such a document goes stale, so the
route table itself is the reference here: a new route without documentation fails this test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.routing import Route
from starlette.testclient import TestClient

from millimetric.api.app import BENCH_ROUTES, create_app
from millimetric.api.cors import CORS_PREFIXES
from millimetric.api.docs import openapi_document
from millimetric.errors import STATUS

from conftest import make_settings

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
BENCH_PATHS = {route.path for route in BENCH_ROUTES if isinstance(route, Route)}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


def _app_operations(tmp_path: Path) -> set[tuple[str, str]]:
    """(path, method) of every route; HEAD is Starlette's implicit twin of GET, not a route of ours."""
    app = create_app(make_settings(tmp_path / "data"))
    operations = set()
    for route in app.routes:
        assert isinstance(route, Route), f"unexpected route type {route!r}"
        if route.path in BENCH_PATHS:
            continue
        for method in route.methods or ():
            if method != "HEAD":
                operations.add((route.path, method.lower()))
    return operations


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS}


def test_document_is_valid_openapi_31(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(document).validate()


def test_every_route_is_documented_and_every_documented_operation_is_a_route(
    document: dict[str, Any], tmp_path: Path
) -> None:
    routes = _app_operations(tmp_path)
    documented = {(path, method) for path, method in _documented(document) if method != "options"}
    assert routes - documented == set(), "routes missing from openapi.yaml"
    assert documented - routes == set(), "documented operations the app does not have"


def test_preflight_is_documented_exactly_where_cors_answers(document: dict[str, Any]) -> None:
    """OPTIONS is answered by the CORS middleware, not a route: on the CORS prefixes and nowhere else."""
    with_options = {path for path, method in _documented(document) if method == "options"}
    cors_paths = {path for path in document["paths"] if path.startswith(CORS_PREFIXES)}
    assert with_options == cors_paths


def test_bench_routes_stay_undocumented(document: dict[str, Any]) -> None:
    assert BENCH_PATHS and not BENCH_PATHS & set(document["paths"])


def _deref(document: dict[str, Any], node: Any) -> Any:
    """Follow local `$ref`s (`#/components/...`) until a concrete node."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _error_codes(document: dict[str, Any], schema: Any) -> Iterator[str]:
    """The codes an error schema admits: `error`'s const or enum, through oneOf branches."""
    schema = _deref(document, schema)
    for branch in schema.get("oneOf", []):
        yield from _error_codes(document, branch)
    error = _deref(document, schema.get("properties", {}).get("error", {}))
    if "const" in error:
        yield error["const"]
    yield from error.get("enum", [])


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def test_error_responses_use_catalogued_codes_at_their_status(document: dict[str, Any]) -> None:
    """Every documented error code exists in errors.STATUS and is documented under that status."""
    seen = set()
    for path, method, operation in _operations(document):
        for status, response in operation["responses"].items():
            response = _deref(document, response)
            if int(status) < 400:
                continue
            content = response.get("content", {}).get("application/json")
            assert content, f"{method} {path} {status}: errors are JSON"
            codes = list(_error_codes(document, content["schema"]))
            if (path, status) == ("/healthz", "503"):
                assert codes == []  # the health report, not the envelope
                continue
            assert codes, f"{method} {path} {status}: no error code documented"
            for code in codes:
                assert STATUS.get(code) == int(status), f"{method} {path}: {code} is not a {status}"
                seen.add(code)
    # Admin codes belong to routes this document does not cover yet; malformed_request is answered
    # before routing (no operation can list it), so it is only a component.
    unrouted = {"invalid_session", "malformed_request"}
    assert set(STATUS) - seen - unrouted == set(), "catalogued codes no documented route answers with"
    components = document["components"]["responses"]
    assert list(_error_codes(document, components["MalformedRequest"]["content"]["application/json"]["schema"])) == [
        "malformed_request"
    ]


def test_rate_limited_and_overloaded_carry_retry_after(document: dict[str, Any]) -> None:
    for name in ("RateLimited", "Overloaded"):
        response = document["components"]["responses"][name]
        assert response["headers"]["Retry-After"]
        schema = _deref(document, response["content"]["application/json"]["schema"])
        assert "retry_after_s" in schema["required"]


def test_json_body_routes_document_413_and_415(document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document):
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(operation["responses"]), f"{method} {path}"


def test_ingest_limits_match_the_validators(document: dict[str, Any]) -> None:
    """The documented lengths are the ones msgspec enforces (schemas.py), not a copy that drifts."""
    import msgspec

    from millimetric.api.forget import ForgetBody
    from millimetric.ingest import schemas as ingest

    components = document["components"]["schemas"]
    for struct, name in (
        (ingest.TrackEvent, "TrackEvent"),
        (ingest.Identify, "Identify"),
        (ingest.Context, "VisitorContext"),
        (ForgetBody, "ForgetRequest"),
    ):
        generated = msgspec.json.schema(struct)
        generated = generated["$defs"][generated["$ref"].rsplit("/", 1)[1]]
        for field, spec in generated["properties"].items():
            documented = _deref(document, components[name]["properties"][field])
            string = next((s for s in spec.get("anyOf", [spec]) if s.get("type") == "string"), None)
            if string is None:
                continue
            assert documented.get("minLength", 0) == string.get("minLength", 0), f"{name}.{field}.minLength"
            assert documented.get("maxLength") == string.get("maxLength"), f"{name}.{field}.maxLength"
        assert set(components[name].get("required", [])) == set(generated.get("required", [])), name
    batch = components["Batch"]["properties"]["events"]
    assert (batch["minItems"], batch["maxItems"]) == (1, ingest.BATCH_MAX_EVENTS)


def test_served_document_is_the_packaged_one(client: TestClient, document: dict[str, Any]) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == document


def _parameter(document: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    for parameter in document["paths"][path]["get"]["parameters"]:
        parameter = _deref(document, parameter)
        if parameter["name"] == name:
            return parameter
    raise AssertionError(f"{path} documents no parameter {name}")


def test_the_read_vocabulary_is_the_one_the_stores_answer(document: dict[str, Any]) -> None:
    """Metrics, intervals, breakdowns, group_by columns, filters and row fields are defined once
    (millimetric.events.queries); the documented ones are the same."""
    from millimetric.events import queries

    assert tuple(_parameter(document, "/v1/stats", "metric")["schema"]["enum"]) == queries.METRICS
    assert tuple(_parameter(document, "/v1/stats", "interval")["schema"]["enum"]) == queries.INTERVALS
    assert tuple(_parameter(document, "/v1/sources", "breakdown")["schema"]["enum"]) == queries.BREAKDOWNS
    group_by = _parameter(document, "/v1/stats", "group_by")["description"]
    assert [column for column in queries.GROUP_BY if f"`{column}`" not in group_by] == []
    for path in ("/v1/query", "/v1/stats"):
        for name in queries.FILTERS:
            _parameter(document, path, name)
    row = document["components"]["schemas"]["EventRow"]
    assert tuple(row["properties"]) == queries.ROW_FIELDS
