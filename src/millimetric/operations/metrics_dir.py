"""Where a server's processes keep their Prometheus samples, chosen before any of them counts.

`prometheus_client` decides at import whether its values live in memory (one process) or in
files shared by every worker process (`PROMETHEUS_MULTIPROC_DIR`), so the directory is named
here, before the first import: this module imports nothing that imports it. Worker and store
processes are spawned by the server, inherit the variable, and write their own files there;
`GET /metrics` sums them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
DIRECTORY = "metrics"  # in the data directory


def use_directory(data_dir: Path) -> Path:
    """Make `data_dir/metrics` this server's samples directory, emptied: the files of a previous
    run (of processes long gone) would otherwise be added to this one's."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("the metrics directory must be chosen before prometheus_client is imported")
    directory = (data_dir / DIRECTORY).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[ENV] = str(directory)
    return directory
