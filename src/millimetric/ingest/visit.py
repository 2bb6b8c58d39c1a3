"""What the server knows about the request an event arrived with (never stored as such)."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple


class Visit(NamedTuple):
    project_id: str
    received_at: dt.datetime  # naive UTC
    ip: str
    user_agent: str
    request_host: str
