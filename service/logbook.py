"""The served-feature log: every 2xx prediction's vector, written as parquet in Feast's schema.

Requests append one tuple per row to an in-memory buffer on the event loop. A background
task turns the buffer into Arrow record batches every 0.1 s and writes the batches every
``flush_seconds`` (or ``flush_rows``), both from a dedicated thread, so a slow or failing
disk never blocks a request, and the conversion runs in small steps rather than one long
hold of the interpreter. Files follow Feast's feature-logging schema for the feature
service (``FeatureServiceLoggingSource.get_schema``) plus ``model_version``, ``score`` and
the event id the client sent (a string column named after the label source's id, so labels
that arrive later can be joined to what was served), one file per write and UTC date under
``<destination>/__log_date=<date>/``, and appear atomically (written to a hidden file, then
renamed).

Policy when the buffer is full: it holds at most ``capacity`` unwritten rows. A prediction
is only accepted when its rows fit; otherwise it is refused with 503 before any work is
done, so every accepted prediction is logged and none is dropped silently. A failed write
keeps its batches and is retried with backoff; on shutdown whatever the destination still
refuses is written to a fallback directory.

A row the schema cannot hold never blocks the writer: when a conversion fails, the rows are
split until the ones that fail are found; those go to a dead-letter file (JSON lines, each
with its error) and a counter, the rest are written as usual. So the rows written plus the
rows dead-lettered are exactly the predictions answered 2xx. A writer that has rows waiting
and has not written for longer than :attr:`LogBook.stall_seconds` is reported stalled (and
``/readyz`` says so).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from skewless import rollout
from skewless.served_log import LOG_DATE, LOG_TIMESTAMP, REQUEST_ID

if TYPE_CHECKING:
    from service.spool import Spool

logger = logging.getLogger(__name__)

EXTRA_FIELDS = [
    pa.field("model_version", pa.string()), pa.field("score", pa.float64()),
    # Who else scored the event (skewless/rollout.py): production, and the challenger.
    pa.field(rollout.PRODUCTION_VERSION, pa.string()),
    pa.field(rollout.PRODUCTION_SCORE, pa.float64()),
    pa.field(rollout.PRODUCTION_MODEL_US, pa.float64()),
    pa.field(rollout.CHALLENGER_VERSION, pa.string()),
    pa.field(rollout.CHALLENGER_STAGE, pa.string()),
    pa.field(rollout.CHALLENGER_SCORE, pa.float64()),
    pa.field(rollout.CHALLENGER_OUTCOME, pa.string()),
    pa.field(rollout.CHALLENGER_MODEL_US, pa.float64()),
]
CONVERT_SECONDS = 0.1
_MICROS = pa.timestamp("us", tz="UTC")


class LoggedRow(NamedTuple):
    # Tuples of plain values only: the garbage collector stops tracking them, so a full
    # buffer adds nothing to collection pauses.
    request_id: str
    served_at_us: int
    model_version: str
    score: float
    event_id: str | None  # the client's id of the scored event, when it sent one
    keys: tuple[Any, ...]
    requests: tuple[Any, ...]
    values: tuple[Any, ...]
    statuses: tuple[int, ...]
    timestamps: tuple[float | None, ...]  # event time of each value, epoch seconds
    # Production's version, score and model time per row (µs), and the challenger's, when
    # one was served; defaults, so rows spooled before these fields existed still load.
    production_version: str | None = None
    production_score: float | None = None
    production_model_us: float | None = None
    challenger_version: str | None = None
    challenger_stage: str | None = None
    challenger_score: float | None = None
    challenger_outcome: str | None = None
    challenger_model_us: float | None = None


@dataclass(frozen=True)
class LogLayout:
    """Which schema column each part of a logged row goes to."""

    schema: pa.Schema
    key_columns: tuple[str, ...]
    request_columns: tuple[str, ...]
    feature_columns: tuple[str, ...]  # `<view>__<feature>`, in the model's order
    event_id_column: str | None = None  # an extra column, unless the id is a key or field

    @classmethod
    def from_feast(cls, feast_schema: pa.Schema, keys: Sequence[str], requests: Sequence[str],
                   features: Sequence[str], event_id: str | None = None) -> LogLayout:
        names = set(feast_schema.names)
        missing = [c for c in (*keys, *requests, *features) if c not in names]
        if missing:
            raise ValueError(f"Feast's logging schema has no column for {missing}")
        extra = list(EXTRA_FIELDS)
        if event_id is not None and event_id in names:
            event_id = None  # already logged as what it is
        if event_id is not None:
            extra.append(pa.field(event_id, pa.string()))
        schema = pa.schema([*feast_schema, *extra])
        return cls(schema, tuple(keys), tuple(requests), tuple(features), event_id)

    def to_batch(self, rows: Sequence[LoggedRow]) -> pa.RecordBatch:
        """Rows → one record batch in the log schema (columns transposed in C by zip)."""
        schema = self.schema
        arrays: dict[str, pa.Array] = {}

        def put(name: str, values: Sequence[Any]) -> None:
            arrays[name] = pa.array(values, type=schema.field(name).type)

        for name, column in zip(self.key_columns, zip(*(r.keys for r in rows), strict=True),
                                strict=True):
            put(name, column)
        for name, column in zip(self.request_columns,
                                zip(*(r.requests for r in rows), strict=True), strict=True):
            put(name, column)
        values = list(zip(*(r.values for r in rows), strict=True))
        statuses = list(zip(*(r.statuses for r in rows), strict=True))
        stamps = list(zip(*(r.timestamps for r in rows), strict=True))
        for i, name in enumerate(self.feature_columns):
            put(name, values[i])
            arrays[f"{name}__timestamp"] = _seconds_to_timestamps(
                stamps[i], schema.field(f"{name}__timestamp").type)
            put(f"{name}__status", statuses[i])
        served = pa.array([r.served_at_us for r in rows], type=pa.int64()).cast(_MICROS)
        arrays[LOG_TIMESTAMP] = served.cast(schema.field(LOG_TIMESTAMP).type)
        arrays[LOG_DATE] = pc.cast(served, pa.date32())
        put(REQUEST_ID, [r.request_id for r in rows])
        put("model_version", [r.model_version for r in rows])
        put("score", [r.score for r in rows])
        put(rollout.PRODUCTION_VERSION,
            [r.model_version if r.production_version is None else r.production_version
             for r in rows])
        put(rollout.PRODUCTION_SCORE,
            [r.score if r.production_score is None else r.production_score for r in rows])
        for name in (rollout.PRODUCTION_MODEL_US, rollout.CHALLENGER_VERSION,
                     rollout.CHALLENGER_STAGE, rollout.CHALLENGER_SCORE,
                     rollout.CHALLENGER_OUTCOME, rollout.CHALLENGER_MODEL_US):
            put(name, [getattr(r, name) for r in rows])
        if self.event_id_column is not None:
            put(self.event_id_column, [r.event_id for r in rows])
        return pa.RecordBatch.from_arrays([arrays[f.name] for f in schema], schema=schema)


def _seconds_to_timestamps(seconds: Sequence[float | None], target: pa.DataType) -> pa.Array:
    """Epoch seconds as the schema's timestamp type. Feast logs feature times in whole
    seconds; sub-second parts are truncated, as its own loggers do."""
    micros = pc.multiply(pa.array(seconds, type=pa.float64()), 1e6)
    return micros.cast(pa.int64(), safe=False).cast(_MICROS).cast(target, safe=False)


def fsync_directory(path: Path) -> None:
    """Make the entries of ``path`` (a rename, a new or deleted file) survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_directory(path: Path) -> None:
    """``mkdir -p`` whose new entries are synced in their parents."""
    if path.is_dir():
        return
    _make_directory(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    fsync_directory(path.parent)


def write_day_file(directory: Path, schema: pa.Schema, day: date,
                   batches: Sequence[pa.RecordBatch]) -> Path:
    """Write one UTC date's batches as one parquet file under its partition.

    The file appears whole or not at all: it is written to a hidden staging file, synced,
    renamed, and the partition directory is synced so the rename survives a crash. A failed
    write removes its staging file, so a full disk is not filled further by retries.
    """
    partition = directory / f"{LOG_DATE}={day.isoformat()}"
    _make_directory(partition)
    table = pa.Table.from_batches(batches, schema=schema)
    first = table[LOG_TIMESTAMP][0].as_py().astimezone(UTC)
    name = f"{first:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.parquet"
    staging = partition / f".{name}.inprogress"
    try:
        with staging.open("wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(staging, partition / name)
    except BaseException:
        try:
            staging.unlink(missing_ok=True)
        except OSError:
            logger.exception("could not remove the staging file %s", staging)
        raise
    try:
        fsync_directory(partition)
    except OSError:  # renamed, so visible and never to be written again; say it may not last
        logger.exception("syncing %s after writing %s failed", partition, name)
    return partition / name


def split_by_day(batch: pa.RecordBatch) -> list[tuple[date, pa.RecordBatch]]:
    """A batch's rows by UTC log date (one piece, uncopied, when they share one date)."""
    days = batch.column(batch.schema.get_field_index(LOG_DATE))
    low, high = pc.min_max(days).values()
    if low == high:
        return [(low.as_py(), batch)]
    return [(day, batch.filter(pc.equal(days, pa.scalar(day, pa.date32()))))
            for day in sorted(pc.unique(days).to_pylist())]


def convert_or_reject(layout: LogLayout, rows: Sequence[LoggedRow], offset: int = 0,
                      ) -> tuple[list[tuple[int, pa.RecordBatch]], list[tuple[int, str]]]:
    """Record batches of the rows the schema holds, and each row it cannot with its error,
    each with its (first) row's position in ``rows``.

    One conversion when every row converts; otherwise halves, recursively, so k bad rows
    among n cost about k·log2(n) conversions.
    """
    try:
        return [(offset, layout.to_batch(rows))], []
    except Exception as exc:  # whatever the row holds, the writer must go on
        if len(rows) == 1:
            return [], [(offset, f"{type(exc).__name__}: {exc}")]
    middle = len(rows) // 2
    first, first_bad = convert_or_reject(layout, rows[:middle], offset)
    second, second_bad = convert_or_reject(layout, rows[middle:], offset + middle)
    return first + second, first_bad + second_bad


def write_dead_letters(directory: Path, rejected: Sequence[tuple[LoggedRow, str]]) -> Path:
    """Append rejected rows with their errors as JSON lines to the day's dead-letter file.

    JSON escapes what Arrow refuses (a lone surrogate becomes ``\\ud800``; an integer of any
    size is a number), so every row can be kept and read back.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{datetime.now(UTC):%Y-%m-%d}.jsonl"
    lines = "".join(
        json.dumps({"error": error, "at": datetime.now(UTC).isoformat(), "row": row._asdict()},
                   default=repr) + "\n"
        for row, error in rejected)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(lines)
        fh.flush()
        os.fsync(fh.fileno())
    return path


class LogBufferFull(Exception):
    """The log buffer has no room for a prediction; it must be refused, not dropped."""


def _convert_and_split(layout: LogLayout, rows: Sequence[LoggedRow],
                       ) -> tuple[list[tuple[int, date, pa.RecordBatch]], list[tuple[int, str]]]:
    """:func:`convert_or_reject`, each batch cut by UTC log date (still with its offset)."""
    batches, rejected = convert_or_reject(layout, rows)
    return [(offset, day, part) for offset, batch in batches
            for day, part in split_by_day(batch)], rejected


def logged_request_ids(directories: Sequence[Path], dead_letters: Path,
                       days: Sequence[date]) -> set[str]:
    """Request ids already in the log files of ``days`` under ``directories``, or in the
    dead-letter files written on or after the first of them."""
    ids: set[str] = set()
    files = [f for directory in directories for day in days
             for f in (directory / f"{LOG_DATE}={day.isoformat()}").glob("*.parquet")
             if not f.name.startswith(".")]
    if files:
        table = pads.dataset(files, format="parquet").to_table(columns=[REQUEST_ID])
        ids.update(table[REQUEST_ID].to_pylist())
    first = min(days).isoformat() if days else ""
    for path in sorted(dead_letters.glob("*.jsonl")) if dead_letters.is_dir() else []:
        if path.stem >= first:
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        ids.add(json.loads(line)["row"]["request_id"])
                    except (ValueError, KeyError, TypeError):
                        continue
    return ids


class LogBook:
    """Bounded buffer of served rows with a background converter and writer.

    With a :class:`~service.spool.Spool`, :meth:`append` returns a future that resolves once
    the rows are durable in the spool (the caller answers only then), rows enter the buffer
    in spool order, and the spool's segments are released as the rows reach the log.
    """

    def __init__(
        self,
        directory: Path,
        layout: LogLayout,
        *,
        capacity: int,
        flush_rows: int,
        flush_seconds: float,
        fallback_directory: Path,
        dead_letter_directory: Path | None = None,
        spool: Spool | None = None,
        on_written: Callable[[int, float], None] = lambda rows, seconds: None,
        on_error: Callable[[BaseException], None] = lambda exc: None,
        on_dead_letter: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self.directory = directory
        self.layout = layout
        self.capacity = capacity
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.fallback_directory = fallback_directory
        self.dead_letter_directory = dead_letter_directory or fallback_directory / "dead-letter"
        self.spool = spool
        self._on_written = on_written
        self._on_error = on_error
        self._on_dead_letter = on_dead_letter
        self._rows: list[LoggedRow] = []
        self._seqs: list[int] = []  # with a spool: each buffered row's spool sequence number
        # Rows accepted and not yet appended (waiting for their shadow score): counted in
        # :attr:`depth`, so the buffer's bound holds for them too.
        self.held = 0
        self._converting = 0
        self._converting_first: int | None = None
        # Converted rows by UTC log date: each date's file is written, and retried, on its own.
        self._pending: dict[date, list[tuple[int, pa.RecordBatch]]] = {}
        self._batched_rows = 0
        self._rejected: list[tuple[int, LoggedRow, str]] = []  # not yet in the dead-letter file
        self._waiting_since: float | None = None  # monotonic time the oldest waiting row came
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # One thread: batches are converted and files written in order, and a stuck disk
        # holds only this thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-log")
        self.rows_written = 0
        self.rows_dead_lettered = 0
        self.rows_replayed = 0  # spooled rows a previous process had not logged
        self.last_error: str | None = None

    @property
    def depth(self) -> int:
        """Accepted rows not yet on disk."""
        spooling = self.spool.in_flight if self.spool is not None else 0
        spooling += self.held
        return (len(self._rows) + self._converting + self._batched_rows + len(self._rejected)
                + spooling)

    @property
    def stall_seconds(self) -> float:
        """How long rows may wait without a write before the writer counts as stalled: the
        flush interval, and as long again for the write itself."""
        return 2 * self.flush_seconds + 1.0

    def stalled(self) -> float | None:
        """Seconds the oldest waiting row has waited, when that is past :attr:`stall_seconds`."""
        if self._waiting_since is None or not self.depth:
            return None
        waited = time.monotonic() - self._waiting_since
        return waited if waited > self.stall_seconds else None

    def reserve(self, n: int) -> None:
        """Raise LogBufferFull unless n more rows fit; call before doing the work."""
        if self.depth + n > self.capacity:
            raise LogBufferFull(
                f"feature log buffer full ({self.depth} rows not yet written"
                + (f"; last write error: {self.last_error}" if self.last_error else "") + ")"
            )

    def append(self, rows: Sequence[LoggedRow]) -> asyncio.Future[None] | None:
        """Buffer ``rows``. With a spool, returns the future to await before answering (it
        fails with :class:`~service.spool.SpoolUnavailable` if they could not be spooled, and
        then they are not logged either)."""
        if self.spool is None:
            self._take(rows, None)
            return None
        return self.spool.write(rows, self._take)

    def _take(self, rows: Sequence[LoggedRow], first_seq: int | None) -> None:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        self._rows.extend(rows)
        if first_seq is not None:
            self._seqs.extend(range(first_seq, first_seq + len(rows)))
        if len(self._rows) + self._batched_rows >= self.flush_rows:
            self._wake.set()

    def start(self) -> None:
        if self.spool is not None:
            self._replay(self.spool)
        # Load the parquet writer's code paths now rather than under the first load.
        self._executor.submit(pq.write_table, self.layout.schema.empty_table(), io.BytesIO(),
                              compression="zstd")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="feature-log")

    def _replay(self, spool: Spool) -> None:
        """Buffer the spooled rows a previous process did not log (each exactly once: rows
        whose request id the log or the dead-letter files already hold are left out)."""
        rows, skipped = spool.recover()
        if skipped:
            logger.warning("%d unsynced lines in the spool %s were skipped (never answered)",
                           skipped, spool.directory)
        if not rows:
            return
        days = sorted({datetime.fromtimestamp(r.served_at_us / 1e6, UTC).date() for r in rows})
        logged = logged_request_ids([self.directory, self.fallback_directory],
                                    self.dead_letter_directory, days)
        keep = [(seq, row) for seq, row in enumerate(rows) if row.request_id not in logged]
        self._waiting_since = time.monotonic() if keep else None
        self._rows.extend(row for _, row in keep)
        self._seqs.extend(seq for seq, _ in keep)
        self.rows_replayed = len(keep)
        logger.warning("replaying %d served rows from the spool %s (%d of its rows were "
                       "logged already)", len(keep), spool.directory, len(rows) - len(keep))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_write = loop.time() + self.flush_seconds
        backoff = self.flush_seconds
        await self._release()  # spool segments whose rows were all logged before a restart
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=CONVERT_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                break
            await self._convert()
            due = loop.time() >= next_write or self._batched_rows >= self.flush_rows
            if self._batched_rows and due:
                ok = await self._write(self.directory)
                backoff = self.flush_seconds if ok else min(max(backoff * 2, 0.5), 30.0)
                next_write = loop.time() + backoff

    async def _convert(self) -> bool:
        if not self._rows:
            return await self._dead_letter()
        rows, self._rows = self._rows, []
        seqs, self._seqs = self._seqs, []
        self._converting = len(rows)
        self._converting_first = seqs[0] if seqs else None
        loop = asyncio.get_running_loop()
        try:
            batches, rejected = await loop.run_in_executor(
                self._executor, _convert_and_split, self.layout, rows)
        finally:
            self._converting, self._converting_first = 0, None
        for offset, day, batch in batches:
            self._pending.setdefault(day, []).append((seqs[offset] if seqs else 0, batch))
            self._batched_rows += batch.num_rows
        self._rejected.extend((seqs[offset] if seqs else 0, rows[offset], error)
                              for offset, error in rejected)
        return await self._dead_letter()

    async def _dead_letter(self) -> bool:
        """Write the rows the schema refused to the dead-letter file; False if that failed."""
        if not self._rejected:
            return True
        rejected = list(self._rejected)
        try:
            path = await asyncio.get_running_loop().run_in_executor(
                self._executor, write_dead_letters, self.dead_letter_directory,
                [(row, error) for _, row, error in rejected])
        except Exception as exc:  # kept, counted in the depth, tried again next time
            self._failed("dead-lettering", len(rejected), self.dead_letter_directory, exc)
            return False
        del self._rejected[:len(rejected)]
        if not self.depth:
            self._waiting_since = None
        self.rows_dead_lettered += len(rejected)
        self._on_dead_letter(len(rejected))
        logger.error("%d served rows the log schema cannot hold went to %s: %s", len(rejected),
                     path, rejected[0][2])
        await self._release()
        return True

    async def _write(self, directory: Path) -> bool:
        """Write each pending UTC date to its own file; a date that fails keeps its rows (and
        is retried alone), the others are done. True when every date was written."""
        loop = asyncio.get_running_loop()
        ok = True
        for day in sorted(self._pending):
            parts = list(self._pending[day])
            rows = sum(batch.num_rows for _, batch in parts)
            started = loop.time()
            try:
                await loop.run_in_executor(self._executor, write_day_file, directory,
                                           self.layout.schema, day, [b for _, b in parts])
            except Exception as exc:  # any failure: keep this date's batches, retry later
                self._failed("writing", rows, directory, exc)
                ok = False
                continue
            del self._pending[day][:len(parts)]
            if not self._pending[day]:
                del self._pending[day]
            self._batched_rows -= rows
            self.rows_written += rows
            self._on_written(rows, loop.time() - started)
        self._waiting_since = time.monotonic() if self.depth else None
        if ok:
            self.last_error = None
        await self._release()
        return ok

    def _watermark(self, spool: Spool) -> int:
        """The lowest spool sequence number of a row not yet in the log."""
        firsts = [spool.floor]
        if self._seqs:
            firsts.append(self._seqs[0])  # rows enter the buffer in sequence order
        if self._converting_first is not None:
            firsts.append(self._converting_first)
        firsts += [seq for parts in self._pending.values() for seq, _ in parts]
        firsts += [seq for seq, _, _ in self._rejected]
        return min(firsts)

    async def _release(self) -> None:
        if self.spool is None:
            return
        try:
            await self.spool.release(self._watermark(self.spool))
        except Exception:  # the segments stay; replay skips what the log holds
            logger.exception("could not release spool segments in %s", self.spool.directory)

    def _failed(self, doing: str, rows: int, directory: Path, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.error("%s %d served rows for %s failed: %s", doing, rows, directory,
                     self.last_error)
        self._on_error(exc)

    async def close(self, attempts: int = 3) -> None:
        """Stop the background task and write every buffered row (fallback if need be).

        With a spool, rows the log directory refuses stay in the spool for the next start
        instead of going to the fallback directory.
        """
        # Not cancelled: a write in progress finishes and accounts for its rows first.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for attempt in range(attempts):
            if await self._convert() and (not self._pending or await self._write(self.directory)):
                break
            await asyncio.sleep(0.2 * (attempt + 1))
        if self.spool is not None:
            if self.depth:
                logger.error("%d served rows could not be logged to %s; they stay in the spool "
                             "%s and are logged at the next start", self.depth, self.directory,
                             self.spool.directory)
            self.spool.close()
        else:
            if self._pending and await self._write(self.fallback_directory):
                logger.error("served rows could not be written to %s and were saved in %s",
                             self.directory, self.fallback_directory)
            if self._rows or self._pending or self._rejected:
                self._save_as_json()
        self._executor.shutdown(wait=True)

    def _save_as_json(self) -> None:
        """Last resort: rows neither the schema nor any directory took, as JSON lines."""
        self.fallback_directory.mkdir(parents=True, exist_ok=True)
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        path = self.fallback_directory / f"{stamp}.jsonl"
        with path.open("w") as fh:
            for row in self._rows:
                fh.write(json.dumps(row._asdict(), default=str) + "\n")
            for _, row, error in self._rejected:
                fh.write(json.dumps({**row._asdict(), "error": error}, default=str) + "\n")
            for parts in self._pending.values():
                for _, batch in parts:
                    for record in batch.to_pylist():
                        fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        logger.critical("%d served rows saved as JSON lines in %s (last error: %s)",
                        len(self._rows) + self._batched_rows + len(self._rejected), path,
                        self.last_error)
