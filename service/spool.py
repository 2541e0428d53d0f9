"""The served-feature log's spool: accepted rows on local disk before their answer is sent.

With ``SKEWLESS_FEATURE_LOG_DURABILITY=spool`` every row a prediction logs is appended to a
segment file here and made durable (``fdatasync``) before the response goes out. Writes are
group-committed: while one group is being synced on the spool's thread, the rows of every
request that arrives meanwhile gather into the next group, so one sync serves many requests.
A segment is deleted once every row in it is in the log (written or dead-lettered); at
start-up the segments left by a process that was killed are read back and their rows that the
log does not hold yet are logged, so a SIGKILL loses no answered row.

A segment is a sequence of lines ``<crc32, 8 hex digits> <row as JSON>\\n``. A line whose
checksum does not match, or a last line without its newline, is a write that was never
synced, so never answered: it is skipped. A group whose write or sync fails is cut off the
segment again (its requests get 503), so nothing that was refused can come back at replay.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.logbook import LoggedRow, fsync_directory

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".spool"


class SpoolUnavailable(Exception):
    """The spool could not make a group durable; its requests must not be answered 2xx."""


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot spool a value of type {type(value).__name__}")


def _object(value: dict[str, Any]) -> Any:
    if len(value) == 1 and "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    return value


def encode(rows: Sequence[LoggedRow]) -> bytes:
    """Rows as checksummed JSON lines (NaN and infinities kept: the log records what the model
    saw)."""
    out = []
    for row in rows:
        body = json.dumps(row, separators=(",", ":"), default=_default).encode()
        out.append(b"%08x %s\n" % (zlib.crc32(body), body))
    return b"".join(out)


def decode(data: bytes) -> tuple[list[LoggedRow], int]:
    """The rows of a segment's bytes, and how many lines were skipped as never synced."""
    rows: list[LoggedRow] = []
    skipped = 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # a last line without its newline: a write cut short
        skipped += 1
    for line in lines:
        crc, _, body = line.partition(b" ")
        try:
            if int(crc, 16) != zlib.crc32(body):
                raise ValueError("checksum mismatch")
            fields = json.loads(body, object_hook=_object)
            # Positional: a row spooled before later fields existed takes their defaults.
            values: list[Any] = [tuple(f) if isinstance(f, list) else f for f in fields]
            rows.append(LoggedRow(*values))
        except (ValueError, TypeError):
            skipped += 1
    return rows, skipped


@dataclass
class _Segment:
    path: Path
    last_seq: int = -1  # the highest row sequence number it holds (-1: none yet)


@dataclass
class _Group:
    rows: Sequence[LoggedRow]
    first_seq: int
    data: bytes
    waiter: asyncio.Future[None]


@dataclass
class Spool:
    """Append-only segment files of accepted rows, group-committed, released when logged."""

    directory: Path
    segment_rows: int = 50_000  # rows per segment before a new one is started
    on_sync: Callable[[int, float], None] = lambda rows, seconds: None
    next_seq: int = 0
    in_flight: int = 0  # rows handed to write() and not yet durable or refused
    last_error: str | None = None  # of the last group that could not be synced, until one is
    _closed: list[_Segment] = field(default_factory=list)
    _current: _Segment | None = None
    _fd: int | None = None
    _current_rows: int = 0
    _pending: list[_Group] = field(default_factory=list)
    _unconfirmed: deque[_Group] = field(default_factory=deque)  # written or waiting, in order
    _committing: bool = False
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool"))

    # ---- start-up ---------------------------------------------------------------------------

    def recover(self) -> tuple[list[LoggedRow], int]:
        """Rows of the segments a previous process left, in order (numbered from 0 on), and the
        count of lines skipped as never synced. The segments stay until those rows are
        released."""
        self.directory.mkdir(parents=True, exist_ok=True)
        rows: list[LoggedRow] = []
        skipped = 0
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            found, bad = decode(path.read_bytes())
            rows += found
            skipped += bad
            self._closed.append(_Segment(path, len(rows) - 1))
        self.next_seq = len(rows)
        return rows, skipped

    # ---- the request path (event loop) ------------------------------------------------------

    def write(self, rows: Sequence[LoggedRow],
              on_durable: Callable[[Sequence[LoggedRow], int], None]) -> asyncio.Future[None]:
        """Spool ``rows``; the future resolves once they are synced, after ``on_durable(rows,
        first_seq)`` ran on the loop, or fails with :class:`SpoolUnavailable`."""
        loop = asyncio.get_running_loop()
        group = _Group(rows, self.next_seq, encode(rows), loop.create_future())
        self.next_seq += len(rows)
        self.in_flight += len(rows)
        group.waiter.add_done_callback(_retrieve)
        self._pending.append(group)
        self._unconfirmed.append(group)
        if not self._committing:
            self._committing = True
            loop.create_task(self._commit(on_durable), name="spool commit")
        return group.waiter

    async def _commit(self, on_durable: Callable[[Sequence[LoggedRow], int], None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                groups, self._pending = self._pending, []
                rows = sum(len(g.rows) for g in groups)
                started = loop.time()
                try:
                    await loop.run_in_executor(self._executor, self._append, groups)
                except Exception as exc:
                    error = SpoolUnavailable(f"feature log spool unavailable: "
                                             f"{type(exc).__name__}: {exc}")
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    logger.error("spooling %d served rows in %s failed: %s", rows,
                                 self.directory, exc)
                    for group in groups:
                        self._unconfirmed.popleft()
                        self.in_flight -= len(group.rows)
                        if not group.waiter.done():
                            group.waiter.set_exception(error)
                    continue
                self.last_error = None
                self.on_sync(rows, loop.time() - started)
                for group in groups:
                    self._unconfirmed.popleft()
                    self.in_flight -= len(group.rows)
                    on_durable(group.rows, group.first_seq)
                    if not group.waiter.done():
                        group.waiter.set_result(None)
        finally:
            self._committing = False

    # ---- the spool's thread -----------------------------------------------------------------

    def _append(self, groups: Sequence[_Group]) -> None:
        """Write and sync ``groups`` to the current segment; on failure cut them off again."""
        if self._fd is None:
            self._open_segment(groups[0].first_seq)
        assert self._fd is not None and self._current is not None
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            data = b"".join(g.data for g in groups)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fdatasync(self._fd)
        except BaseException:
            try:
                os.ftruncate(self._fd, start)
                os.fdatasync(self._fd)
            except OSError:  # the segment cannot be trusted: start a new one next time
                logger.exception("could not cut a failed group off %s", self._current.path)
                self._close_segment()
            raise
        last = groups[-1]
        self._current.last_seq = last.first_seq + len(last.rows) - 1
        self._current_rows += sum(len(g.rows) for g in groups)
        if self._current_rows >= self.segment_rows:
            self._close_segment()

    def _open_segment(self, first_seq: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Named so that a later segment sorts after every earlier one, across restarts.
        name = f"{time.time_ns():020d}-{first_seq:012d}{SEGMENT_SUFFIX}"
        path = self.directory / name
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fsync_directory(self.directory)  # the new name itself must survive a crash
        self._current = _Segment(path)
        self._current_rows = 0

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        if self._current is not None and self._current.last_seq >= 0:
            self._closed.append(self._current)
        elif self._current is not None:
            self._current.path.unlink(missing_ok=True)
        self._fd, self._current, self._current_rows = None, None, 0

    def _release(self, watermark: int) -> int:
        if self._current is not None and 0 <= self._current.last_seq < watermark:
            self._close_segment()  # every row in it is logged: the next group starts a new one
        done = [s for s in self._closed if s.last_seq < watermark]
        for segment in done:
            segment.path.unlink(missing_ok=True)
        if done:
            self._closed = [s for s in self._closed if s.last_seq >= watermark]
            fsync_directory(self.directory)
        return len(done)

    # ---- bookkeeping ------------------------------------------------------------------------

    @property
    def floor(self) -> int:
        """The lowest sequence number not yet confirmed durable or refused (rows below it that
        were accepted are in the logbook's hands)."""
        return self._unconfirmed[0].first_seq if self._unconfirmed else self.next_seq

    async def release(self, watermark: int) -> int:
        """Delete the segments whose rows all have sequence numbers below ``watermark`` (every
        row before it is in the log); how many were deleted."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._release, watermark)

    def segments(self) -> Iterator[Path]:
        yield from (s.path for s in self._closed)
        if self._current is not None:
            yield self._current.path

    def close(self) -> None:
        """Close the current segment (what it holds stays for the next start if not released)."""
        self._executor.submit(self._close_segment).result()
        self._executor.shutdown(wait=True)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a refused group's error as seen, when its request went away before awaiting it."""
    if not future.cancelled():
        future.exception()
