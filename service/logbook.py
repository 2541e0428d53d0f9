"""The served-feature log: every 2xx prediction's vector, written as parquet in Feast's schema.

Requests append rows to an in-memory buffer (a list append on the event loop); a
background task swaps the buffer out and writes it from a dedicated thread, so a slow or
failing disk never blocks a request. Files follow Feast's feature-logging schema for the
feature service (``FeatureServiceLoggingSource.get_schema``) plus ``model_version`` and
``score``, one file per flush and UTC date, under ``<destination>/__log_date=<date>/``,
and appear atomically (written to a hidden file, then renamed).

Policy when the buffer is full: the buffer holds at most ``capacity`` unwritten rows.
A prediction is only accepted when its rows fit; otherwise it is refused with 503 and
nothing is scored, so every accepted prediction is logged and none is dropped silently.
A failed write keeps its rows at the front of the buffer and is retried with backoff; on
shutdown whatever the destination still refuses is written to a fallback directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

LOG_TIMESTAMP = "__log_timestamp"
LOG_DATE = "__log_date"
REQUEST_ID = "__request_id"
EXTRA_FIELDS = [pa.field("model_version", pa.string()), pa.field("score", pa.float64())]


class LoggedRow(NamedTuple):
    request_id: str
    served_at_us: int
    model_version: str
    score: float
    keys: tuple[Any, ...]
    requests: tuple[Any, ...]
    values: list[Any]
    statuses: list[int]
    timestamps: list[float | None]


@dataclass(frozen=True)
class LogLayout:
    """Which schema column each part of a logged row goes to."""

    schema: pa.Schema
    key_columns: tuple[str, ...]
    request_columns: tuple[str, ...]
    feature_columns: tuple[str, ...]  # `<view>__<feature>`, in the model's order

    @classmethod
    def from_feast(cls, feast_schema: pa.Schema, keys: Sequence[str], requests: Sequence[str],
                   features: Sequence[str]) -> LogLayout:
        names = set(feast_schema.names)
        missing = [c for c in (*keys, *requests, *features) if c not in names]
        if missing:
            raise ValueError(f"Feast's logging schema has no column for {missing}")
        schema = pa.schema([*feast_schema, *EXTRA_FIELDS])
        return cls(schema, tuple(keys), tuple(requests), tuple(features))

    def to_table(self, rows: Sequence[LoggedRow]) -> pa.Table:
        schema = self.schema
        columns: dict[str, pa.Array] = {}

        def put(name: str, values: list[Any]) -> None:
            columns[name] = pa.array(values, type=schema.field(name).type)

        for i, name in enumerate(self.key_columns):
            put(name, [r.keys[i] for r in rows])
        for i, name in enumerate(self.request_columns):
            put(name, [r.requests[i] for r in rows])
        for i, name in enumerate(self.feature_columns):
            put(name, [r.values[i] for r in rows])
            stamps = [None if (t := r.timestamps[i]) is None else round(t * 1e6) for r in rows]
            columns[f"{name}__timestamp"] = _timestamps(
                stamps, schema.field(f"{name}__timestamp").type)
            put(f"{name}__status", [r.statuses[i] for r in rows])
        served = [r.served_at_us for r in rows]
        columns[LOG_TIMESTAMP] = _timestamps(served, schema.field(LOG_TIMESTAMP).type)
        put(LOG_DATE, [_day(us) for us in served])
        put(REQUEST_ID, [r.request_id for r in rows])
        put("model_version", [r.model_version for r in rows])
        put("score", [r.score for r in rows])
        return pa.table([columns[f.name] for f in schema], schema=schema)


def _timestamps(micros: Sequence[int | None], target: pa.DataType) -> pa.Array:
    """Epoch microseconds as the schema's timestamp type (Feast logs feature times in
    whole seconds: sub-second parts are truncated, as Feast's own loggers do)."""
    return pa.array(micros, type=pa.timestamp("us", tz="UTC")).cast(target, safe=False)


def _day(us: int) -> date:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).date()


def write_log_files(directory: Path, layout: LogLayout, rows: Sequence[LoggedRow]) -> list[Path]:
    """Write rows as one parquet file per UTC date; each file appears atomically."""
    by_day: dict[date, list[LoggedRow]] = {}
    for row in rows:
        by_day.setdefault(_day(row.served_at_us), []).append(row)
    written = []
    for day, day_rows in sorted(by_day.items()):
        partition = directory / f"{LOG_DATE}={day.isoformat()}"
        partition.mkdir(parents=True, exist_ok=True)
        first = datetime.fromtimestamp(day_rows[0].served_at_us / 1e6, tz=UTC)
        name = f"{first:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.parquet"
        staging = partition / f".{name}.inprogress"
        with staging.open("wb") as fh:
            pq.write_table(layout.to_table(day_rows), fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(staging, partition / name)
        written.append(partition / name)
    return written


class LogBufferFull(Exception):
    """The log buffer has no room for a prediction; it must be refused, not dropped."""


class LogBook:
    """Bounded buffer of served rows with a background writer."""

    def __init__(
        self,
        directory: Path,
        layout: LogLayout,
        *,
        capacity: int,
        flush_rows: int,
        flush_seconds: float,
        fallback_directory: Path,
        on_written: Callable[[int, float], None] = lambda rows, seconds: None,
        on_error: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self.directory = directory
        self.layout = layout
        self.capacity = capacity
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.fallback_directory = fallback_directory
        self._on_written = on_written
        self._on_error = on_error
        self._buffer: list[LoggedRow] = []
        self._writing = 0  # rows handed to the writer thread and not yet on disk
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # One thread: files are written in order, and a stuck disk holds only this thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-log")
        self.rows_written = 0
        self.last_error: str | None = None

    @property
    def depth(self) -> int:
        """Accepted rows not yet on disk."""
        return len(self._buffer) + self._writing

    def reserve(self, n: int) -> None:
        """Raise LogBufferFull unless n more rows fit; call before doing the work."""
        if self.depth + n > self.capacity:
            raise LogBufferFull(
                f"feature log buffer full ({self.depth} rows not yet written"
                + (f"; last write error: {self.last_error}" if self.last_error else "") + ")"
            )

    def append(self, rows: Sequence[LoggedRow]) -> None:
        self._buffer.extend(rows)
        if len(self._buffer) >= self.flush_rows:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="feature-log")

    async def _run(self) -> None:
        backoff = self.flush_seconds
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                break
            ok = await self._flush_once(self.directory)
            backoff = self.flush_seconds if ok else min(max(backoff * 2, 0.5), 30.0)

    async def _flush_once(self, directory: Path) -> bool:
        if not self._buffer:
            return True
        rows, self._buffer = self._buffer, []
        self._writing = len(rows)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await loop.run_in_executor(self._executor, write_log_files, directory, self.layout,
                                       rows)
        except Exception as exc:  # any failure: keep the rows, report, retry later
            self._buffer[:0] = rows
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.error("writing %d served rows to %s failed: %s", len(rows), directory,
                         self.last_error)
            self._on_error(exc)
            return False
        finally:
            self._writing = 0
        self.rows_written += len(rows)
        self.last_error = None
        self._on_written(len(rows), loop.time() - started)
        return True

    async def close(self, attempts: int = 3) -> None:
        """Stop the background task and write every buffered row (fallback if need be)."""
        # Not cancelled: a write in progress finishes and accounts for its rows first.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for attempt in range(attempts):
            if await self._flush_once(self.directory):
                break
            await asyncio.sleep(0.2 * (attempt + 1))
        if self._buffer:
            count = len(self._buffer)
            if await self._flush_once(self.fallback_directory):
                logger.error("%d served rows could not be written to %s and were saved in %s",
                             count, self.directory, self.fallback_directory)
            else:
                logger.critical("%d served rows could not be written anywhere: %s", count,
                                self.last_error)
        self._executor.shutdown(wait=True)
