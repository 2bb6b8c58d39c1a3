"""Pipeline step: drop crawlers, monitors and headless browsers unless the project keeps them."""

from __future__ import annotations

from millimetric.ingest.visit import Visit
from millimetric.store.rows import EventRow


def drop_bots(row: EventRow, visit: Visit) -> str | None:
    if row.device_type == "bot" and not visit.keep_bots:
        return "bot"
    return None
