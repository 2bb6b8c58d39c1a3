"""Starting, watching and stopping the store process (`child`).

A server (or the supervisor of its workers) owns one `StoreProcess`. If the store process dies,
a new one is started at the same address after a short back-off; it replays the journal, and the
clients reconnect on their next call, so every acknowledged event is there again.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from millimetric.store.duckdb import wire
from millimetric.store.interface import StoreError

log = logging.getLogger("millimetric.store")

# A fork server with the store's modules loaded starts each store process in milliseconds, without
# forking the (threaded) server itself.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["millimetric.store.duckdb.child"])
OPEN_TIMEOUT_SECONDS = 5.0  # the store process of a killed server may still hold the file briefly
START_TIMEOUT_SECONDS = 600.0  # a start replays the journal, which can take minutes after a long outage
STOP_TIMEOUT_SECONDS = 600.0  # a stop flushes, folds and checkpoints
RESTART_BACKOFF_SECONDS = 2.0  # between two starts of a store process that keeps dying
_WATCH_SECONDS = 0.5


class StoreProcess:
    """The store process of one data file, restarted when it dies."""

    def __init__(self, path: Path, open_timeout: float = OPEN_TIMEOUT_SECONDS) -> None:
        self.path = path
        self.address = wire.new_address(path)
        self._open_timeout = open_timeout
        self._lock = threading.Lock()
        self._closed = False
        self.process, self._owner = self._start()
        wire.publish(self.address, path)
        threading.Thread(target=self._watch, name="millimetric-store-watch", daemon=True).start()

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def _start(self) -> tuple[BaseProcess, Connection]:
        owner, child_end = _CONTEXT.Pipe()
        from millimetric.store.duckdb import child

        process = _CONTEXT.Process(
            target=child.serve,
            args=(self.path, self.address, child_end, self._open_timeout),
            name="millimetric-store",
            daemon=True,
        )
        process.start()
        child_end.close()
        try:
            if not owner.poll(START_TIMEOUT_SECONDS):
                raise StoreError(f"the event store process did not start within {START_TIMEOUT_SECONDS:g} s")
            status, value = owner.recv()
        except (EOFError, OSError):
            status, value = "error", f"the event store process exited during start-up (code {process.exitcode})"
        except StoreError:
            process.kill()
            raise
        if status != "ok":
            process.join(5)
            owner.close()
            raise StoreError(value)
        return process, owner

    def _watch(self) -> None:
        """Start a new store process when the current one dies."""
        last_start = time.monotonic()
        while True:
            time.sleep(_WATCH_SECONDS)
            with self._lock:
                if self._closed:
                    return
                if self.process.is_alive():
                    continue
                log.warning("the event store process exited (code %s); starting a new one", self.process.exitcode)
                self._owner.close()
                time.sleep(max(0.0, last_start + RESTART_BACKOFF_SECONDS - time.monotonic()))
                last_start = time.monotonic()
                try:
                    self.process, self._owner = self._start()
                except Exception:
                    log.exception("could not restart the event store process")
                    continue
                log.warning("the event store process is back (pid %s)", self.process.pid)

    def close(self) -> None:
        """Flush, fold and checkpoint, then stop the store process (after every client is done)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            wire.unpublish(self.path)
            try:
                self._owner.send("close")
                if not self._owner.poll(STOP_TIMEOUT_SECONDS):
                    raise TimeoutError
                status, value = self._owner.recv()
                if status != "ok":
                    log.error("the event store process stopped with an error: %s", value)
            except (EOFError, OSError, TimeoutError):
                log.warning("the event store process had already stopped")
            self._owner.close()
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
