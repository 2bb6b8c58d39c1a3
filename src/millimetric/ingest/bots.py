"""Pipeline step: drop crawlers, monitors and headless browsers unless the project keeps them."""

from __future__ import annotations

from millimetric.events.model import EventRow
from millimetric.ingest.visit import Visit


def drop_bots(row: EventRow, visit: Visit) -> str | None:
    if row.device_type == "bot" and not visit.keep_bots:
        return "bot"
    return None
