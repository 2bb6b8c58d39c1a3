"""Data files (domain lists, paid mediums, bot patterns, user-agent name maps), loaded once."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


def load_data(name: str) -> Any:
    return yaml.safe_load((resources.files(__package__) / name).read_text("utf-8"))
