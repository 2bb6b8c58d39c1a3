"""Retention: a project with `retention_days` keeps no event older than that (SPEC section 1).

Ingest refuses such events already; this deletes the ones that age out. The server runs it at
start-up and then every hour, so nothing outlives its retention by more than an hour.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from millimetric.store.control import ControlPlane, utcnow
from millimetric.store.interface import EventStore

log = logging.getLogger("millimetric.retention")
RETENTION_SWEEP_SECONDS = 3600.0


def enforce_retention(
    control: ControlPlane, events: EventStore, now: Callable[[], dt.datetime] = utcnow
) -> dict[str, int]:
    """Delete every project's expired events; returns deleted counts by project slug."""
    deleted: dict[str, int] = {}
    for project in control.list_projects():
        if project.retention_days is None:
            continue
        cutoff = (now() - dt.timedelta(days=project.retention_days)).replace(tzinfo=None)
        count = events.delete_before(project.id, cutoff)
        if count:
            log.info("retention: deleted %d events of %s older than %s", count, project.slug, cutoff.isoformat())
        deleted[project.slug] = count
    return deleted
