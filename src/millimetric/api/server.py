"""Running the app on uvicorn: in this process, or in `workers` processes under a supervisor.

One event loop uses one core at most. With the store process beside it, a 2-core machine then
ingested /v1/batch at about 60k events/s with a third of its CPU idle. `--workers N` runs N
copies of the app, which share the listening socket (the kernel hands each connection to one of
them), the control plane (SQLite or PostgreSQL, made for many processes) and one store process,
which the supervisor starts and owns:

- worker 0 alone runs the periodic chores (retention sweeps, forget jobs); every worker refreshes
  tombstones and writes its own counters;
- rate limits are per worker unless `MILLIMETRIC_REDIS_URL` shares them;
- SIGTERM or SIGINT to the supervisor: it sends each worker SIGTERM (a Ctrl-C reaches the workers
  too: uvicorn forces its exit only on a second SIGINT); each drains its queue, then the store
  checkpoints;
- if a worker dies, the supervisor stops the rest and exits with status 1, for a process manager
  to start it again (the journal replays every acknowledged event); a dead store process is
  restarted in place by its own supervisor (`millimetric.store.factory.start_shared_store`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import uvicorn

from millimetric.api.app import create_app
from millimetric.api.protocol import GuardedHttpToolsProtocol
from millimetric.operations import logs
from millimetric.settings import Settings
from millimetric.store.factory import start_shared_store

log = logging.getLogger("millimetric.server")
_SPAWN = multiprocessing.get_context("spawn")
WORKER_STOP_SECONDS = 30.0  # a worker's graceful shutdown (15 s for connections) and its drain
_WATCH_SECONDS = 0.5


def prepare_process(settings: Settings) -> None:
    """Logging and GIL hand-over, for the server process and each worker alike."""
    # Work handed to threads (reads, chores) needs the GIL back while the event loop is busy: with the
    # default 5 ms switch interval each hand-back could wait 5 ms behind a loaded event loop.
    sys.setswitchinterval(0.0002)
    logs.configure(settings.log_level, settings.log_format)


def _config(app: Any, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        log_level=settings.log_level.lower(),
        access_log=False,  # uvicorn's access lines carry client addresses; the app logs its own
        log_config=None,  # uvicorn's loggers go through `logs.configure`'s handler (and format)
        backlog=4096,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=15,
        server_header=False,
    )


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    if settings.workers > 1:
        return _supervise(settings)
    server = uvicorn.Server(_config(create_app(settings), settings))
    server.run()
    return 0 if server.started else 3  # uvicorn's status for a failed start-up (the port was taken, say)


def _supervise(settings: Settings) -> int:
    if settings.rate_limits and not settings.redis_url:
        log.warning(
            "rate limits are kept per worker (%d workers): set MILLIMETRIC_REDIS_URL to share them", settings.workers
        )
    if settings.clickhouse_url and not settings.redis_url:
        log.warning(
            "event ids are de-duplicated per worker (%d workers, ClickHouse): set MILLIMETRIC_REDIS_URL to share",
            settings.workers,
        )
    store = start_shared_store(settings)
    listener = _config(None, settings).bind_socket()
    workers = []
    for index in range(settings.workers):
        worker = _SPAWN.Process(
            target=_worker, args=(settings, store.handle, listener, index == 0), name=f"millimetric-worker-{index}"
        )
        worker.start()
        workers.append(worker)
    listener.close()

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    failed = None
    while not stop.wait(_WATCH_SECONDS):
        failed = next((p.name for p in workers if not p.is_alive()), None)
        if failed:
            log.error("%s exited: stopping every worker (start the server again; the journal replays)", failed)
            break
    for worker in workers:
        if worker.is_alive():
            worker.terminate()  # SIGTERM
    deadline = time.monotonic() + WORKER_STOP_SECONDS
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            log.error("%s did not stop in %.0f s: killing it", worker.name, WORKER_STOP_SECONDS)
            worker.kill()
            worker.join()
    store.close()
    return 1 if failed else 0


def _worker(settings: Settings, shared_store: object, listener: socket.socket, chores: bool) -> None:
    _exit_with(os.getppid())
    prepare_process(settings)
    app = create_app(settings, shared_store=shared_store, chores=chores)
    uvicorn.Server(_config(app, settings)).run(sockets=[listener])


def _exit_with(supervisor: int) -> None:
    """Stop (gracefully) when the supervisor is gone, killed before it could stop this worker."""

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(_WATCH_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="millimetric-supervisor-watch", daemon=True).start()
