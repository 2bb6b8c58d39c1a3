"""GET /v1/classify: show why a hit gets its source (the classifier's answer with its rule id)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.responses import json_response
from millimetric.api.services import Services
from millimetric.errors import ApiError
from millimetric.ingest.classify import classify

MAX_PARAM_LENGTH = 2048


async def classify_hit(request: Request) -> Response:
    services: Services = request.app.state.services
    await services.keys.authenticate(request.headers.get("authorization"))  # any valid key
    params = {name: request.query_params.get(name) for name in ("url", "referrer", "host")}
    for name, value in params.items():
        if value is not None and len(value) > MAX_PARAM_LENGTH:
            raise ApiError("invalid_params", {"param": name, "reason": f"longer than {MAX_PARAM_LENGTH} characters"})
    return json_response(classify(params["url"], params["referrer"], params["host"])._asdict())
