"""The ingest journal: what makes an acknowledged write durable before DuckDB holds its rows.

A DuckDB insert costs milliseconds of CPU however few rows it carries, so committing every group
of requests straight to DuckDB made the store process the bottleneck of ingest. Each group is
appended here instead (one write, one fdatasync) and acknowledged; the event store hands the
journal's rows to DuckDB in bulk, and before every read and delete.

The journal is a series of files `<first seq>.log`, each a run of frames:

    first seq (8 bytes) | rows (4) | payload length (4) | crc32 of the payload (4) | payload

A file is closed when its frames go to DuckDB (`rotate`) and deleted once DuckDB committed them
(`discard_closed`). `replay` reads every file left by a crash; a frame cut short or damaged at the
end of a file was never acknowledged (its fdatasync had not returned) and ends that file.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("millimetric.store")

_HEADER = struct.Struct("<qIII")
_SUFFIX = ".log"


class Frame(NamedTuple):
    """`count` rows with seqs from `first_seq` on, encoded in `payload`."""

    first_seq: int
    count: int
    payload: bytes

    @property
    def next_seq(self) -> int:
        return self.first_seq + self.count


class Journal:
    """Not thread-safe: the event store serialises calls."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._closed: list[Path] = sorted(directory.glob(f"*{_SUFFIX}"))
        self._file: Path | None = None
        self._fd = -1
        self._end = 0  # where the current file's last whole frame ends

    def replay(self) -> list[Frame]:
        """Every whole frame of the files on disk, oldest first."""
        return [frame for path in self._closed for frame in _read(path)]

    def write(self, frame: Frame) -> None:
        """Durable on return. If it raises (disk full, I/O error), the frame is cut off again where
        possible and the file closed, so no torn frame can hide later frames from a replay."""
        if self._fd < 0:
            self._open(frame.first_seq)
        data = _HEADER.pack(frame.first_seq, frame.count, len(frame.payload), zlib.crc32(frame.payload)) + frame.payload
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fdatasync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, self._end)
            except OSError:
                log.exception("journal %s: could not cut off a failed write", self._file)
            self.rotate()
            raise
        self._end += len(data)

    def rotate(self) -> None:
        """Close the current file; the next write starts a new one."""
        if self._fd >= 0:
            os.close(self._fd)
            self._closed.append(self._file)
            self._fd, self._file, self._end = -1, None, 0

    def discard_closed(self) -> None:
        """Delete the closed files: call once their frames are committed elsewhere."""
        for path in self._closed:
            path.unlink(missing_ok=True)
        if self._closed:
            _sync_directory(self._directory)
        self._closed = []

    def _open(self, first_seq: int) -> None:
        self._file = self._directory / f"{first_seq:020d}{_SUFFIX}"
        self._fd = os.open(self._file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        _sync_directory(self._directory)  # the file's name is as durable as its frames


def _read(path: Path) -> list[Frame]:
    data = path.read_bytes()
    frames, offset = [], 0
    while offset + _HEADER.size <= len(data):
        first_seq, count, length, crc = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        frames.append(Frame(first_seq, count, payload))
        offset += _HEADER.size + length
    if offset < len(data):
        log.warning("journal %s: %d bytes after the last whole frame ignored (a write cut short)",
                    path.name, len(data) - offset)
    return frames


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
