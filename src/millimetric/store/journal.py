"""The ingest journal: what makes an acknowledged write durable before DuckDB holds its rows.

A DuckDB insert costs milliseconds of CPU however few rows it carries, so committing every group
of requests straight to DuckDB made the store process the bottleneck of ingest. Each group is
appended here instead (one write, one fdatasync) and acknowledged; the store hands the journal's
rows to DuckDB in bulk, and before every read and delete.

The journal is a series of files `<first seq>.log`. A file opens with `MAGIC` and the journal
format (2 bytes), then holds a run of frames:

    first seq (8 bytes) | rows (4) | payload length (4) | crc32 of the payload (4) | payload format (1) | payload

Format 1 (millimetric 0.1.0) had no file header and no payload format byte (its payloads are
payload format 1); `replay` still reads it. A file of a newer format is refused, never skipped.

Files are closed when their frames go to DuckDB (`rotate`), and whoever took those frames deletes
exactly the files it took (`take_closed`, then `discard` once committed, or `restore` if not):
a file closed meanwhile, holding frames nobody has taken yet, stays. A frame cut short or damaged
at the end of a file was never acknowledged (its fdatasync had not returned) and ends that file.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("millimetric.store")

FORMAT = 2
# The last byte makes the magic a negative first seq when read as a format-1 frame header: seqs
# are positive, so a format-1 file can never be mistaken for a newer one.
MAGIC = b"MMJRNL\x00\xff"
_FILE_HEADER = struct.Struct("<8sH")
_HEADER = struct.Struct("<qIIIB")
_LEGACY_HEADER = struct.Struct("<qIII")
_SUFFIX = ".log"


class JournalFormatError(RuntimeError):
    """A journal file written by a newer release: refuse it rather than lose its rows."""


class Frame(NamedTuple):
    """`events` rows with seqs from `first_seq` on, encoded in `payload` (of `payload_format`)."""

    first_seq: int
    events: int
    payload: bytes
    payload_format: int

    @property
    def next_seq(self) -> int:
        return self.first_seq + self.events


class Journal:
    """Not thread-safe: the store serialises calls."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._closed: list[Path] = sorted(directory.glob(f"*{_SUFFIX}"))
        self._file: Path | None = None
        self._fd = -1
        self._end = 0  # where the current file's last whole frame ends

    def replay(self) -> list[Frame]:
        """Every whole frame of the files on disk, oldest first."""
        return [frame for path in self._closed for frame in read_file(path)]

    def write(self, frame: Frame) -> None:
        """Durable on return. If it raises (disk full, I/O error), the frame is cut off again where
        possible and the file closed, so no torn frame can hide later frames from a replay."""
        if self._fd < 0:
            self._open(frame.first_seq)
        data = frame_bytes(frame)
        try:
            _write_all(self._fd, data)
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
            assert self._file is not None
            os.close(self._fd)
            self._closed.append(self._file)
            self._fd, self._file, self._end = -1, None, 0

    def take_closed(self) -> list[Path]:
        """The closed files, handed to a caller that holds every frame in them."""
        taken, self._closed = self._closed, []
        return taken

    def restore(self, paths: list[Path]) -> None:
        """Give back files taken by `take_closed` whose frames were not committed."""
        self._closed[:0] = paths

    def discard(self, paths: list[Path]) -> None:
        """Delete files taken by `take_closed` once their frames are committed elsewhere."""
        for path in paths:
            path.unlink(missing_ok=True)
        if paths:
            sync_directory(self._directory)

    def _open(self, first_seq: int) -> None:
        self._file = self._directory / f"{first_seq:020d}{_SUFFIX}"
        self._fd = os.open(self._file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            _write_all(self._fd, _FILE_HEADER.pack(MAGIC, FORMAT))
            os.fdatasync(self._fd)
            sync_directory(self._directory)  # the file's name is as durable as its frames
            self._end = _FILE_HEADER.size
        except OSError:
            os.close(self._fd)
            self._file.unlink(missing_ok=True)
            self._fd, self._file = -1, None
            raise


def frame_bytes(frame: Frame) -> bytes:
    header = _HEADER.pack(
        frame.first_seq, frame.events, len(frame.payload), zlib.crc32(frame.payload), frame.payload_format
    )
    return header + frame.payload


def write_file(path: Path, frames: list[Frame]) -> None:
    """A journal file holding `frames`, durable on return (quarantine uses the journal's format)."""
    data = _FILE_HEADER.pack(MAGIC, FORMAT) + b"".join(frame_bytes(frame) for frame in frames)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    sync_directory(path.parent)


def read_file(path: Path) -> list[Frame]:
    """The whole frames of one journal file, of any format this build knows."""
    data = path.read_bytes()
    if data[: len(MAGIC)] == MAGIC:
        if len(data) < _FILE_HEADER.size:
            return []  # created, header not yet durable: it held no acknowledged frame
        _, version = _FILE_HEADER.unpack_from(data)
        if version > FORMAT:
            raise JournalFormatError(
                f"journal file {path} has format {version}, newer than this build knows ({FORMAT}): "
                "it was written by a newer millimetric; run that version, or restore a backup"
            )
        header, offset = _HEADER, _FILE_HEADER.size
    else:
        header, offset = _LEGACY_HEADER, 0
    frames = []
    while offset + header.size <= len(data):
        first_seq, count, length, crc, *rest = header.unpack_from(data, offset)
        payload = data[offset + header.size : offset + header.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        frames.append(Frame(first_seq, count, payload, rest[0] if rest else 1))
        offset += header.size + length
    if offset < len(data):
        log.warning(
            "journal %s: %d bytes after the last whole frame ignored (a write cut short)", path.name, len(data) - offset
        )
    return frames


def _write_all(fd: int, data: bytes) -> None:
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
