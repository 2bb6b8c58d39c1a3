"""GET /openapi.json: the OpenAPI 3.1 document shipped in the package, served as JSON.

The document is written by hand as YAML (`millimetric/openapi.yaml`) so it can carry comments and
anchors; it is parsed once, on first use, and every answer re-encodes that one parsed copy.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.responses import json_response


@cache
def openapi_document() -> dict[str, Any]:
    """The parsed document (cached: the file cannot change while the package is installed)."""
    text = (resources.files("millimetric") / "openapi.yaml").read_text("utf-8")
    return yaml.safe_load(text)


async def openapi_json(_request: Request) -> Response:
    return json_response(openapi_document())
