"""Pipeline step: the daily-salted visitor hash, the only trace of the client IP that is kept."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from millimetric.events.model import EventRow
from millimetric.ingest.visit import Visit


@lru_cache(maxsize=65536)  # every event of a batch shares its request's visitor
def visitor_hash(salt: bytes, ip: str, user_agent: str, project_id: str) -> str:
    """First 32 hex chars of HMAC-SHA256(salt, ip + user_agent + project_id): same visitor, same
    day, same hash; a new salt each UTC day means no linking across days."""
    message = (ip + user_agent + project_id).encode()
    return hmac.new(salt, message, hashlib.sha256).hexdigest()[:32]


def put_ip_hash(row: EventRow, visit: Visit) -> str | None:
    if visit.salt and (visit.ip or visit.user_agent):
        row.ip_hash = visitor_hash(visit.salt, visit.ip, visit.user_agent, visit.project_id)
    return None
