"""The shadow: the challenger scored on the served vectors, off the request's critical path.

A request scored by production hands its rows to :class:`ShadowScorer` and is answered at
once; its logged rows wait here for the challenger's scores. One thread scores what is
waiting, in batches, on the vectors production scored (already encoded when both models
encode their inputs alike, the usual case), and leaves the scores in a queue that a ticker
on the event loop drains every few milliseconds — no wake-up of the loop per score. A row
whose score was not back within the budget (``SKEWLESS_SHADOW_BUDGET_MS``) is logged without
it, as ``late``: a slow or hung challenger never holds a row (or, with spool durability, its
answer) much longer than the budget, and a score that arrives after its row was logged is
dropped. A challenger that raises, or
returns a non-finite score, costs its rows their challenger score (``error``, ``nonfinite``)
and nothing else. At most ``max_rows`` rows wait; beyond that a row is logged at once
without a challenger score (``overloaded``).

Ownership: the request path and the ticker run on the event loop and are the only ones to
change a job's ``done`` flag or the list of open jobs; the thread only reads a job's vectors
and appends results, so no lock is needed beyond the thread-safe queues between them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.metrics import Metrics
from service.scoring import Scorer
from skewless.rollout import ERROR, LATE, NONFINITE, SCORED

logger = logging.getLogger(__name__)

BATCH_JOBS = 64  # jobs the thread takes in one go at most
NAP_SECONDS = 0.010  # the thread lets jobs gather this long after the first, at most
TICK_SECONDS = 0.010  # how often the loop collects scores and finishes late rows, at most


@dataclass(eq=False)
class ShadowJob:
    """One request's rows waiting for their challenger scores."""

    scorer: Scorer
    stage: str  # the challenger's stage when the request was served
    # The served vectors: values in the model's feature order, or already encoded rows.
    values: Sequence[Sequence[Any]] | np.ndarray
    rows: list[Any]  # what the finisher logs (opaque here)
    deadline: float  # time.monotonic() after which the rows are logged as late
    logged: asyncio.Future[Any] | None = None  # spool durability: the finisher's result
    done: bool = field(default=False)  # the rows were handed on (loop only)


# (job, per-row scores (None when missing), per-row outcomes, model µs per row or None)
Finisher = Callable[[ShadowJob, list[float | None], list[str], float | None], None]


class ShadowScorer:
    """Scores shadow jobs in a thread; finishes each once, on the loop, in time or as late."""

    def __init__(self, budget_seconds: float, max_rows: int, metrics: Metrics,
                 finish: Finisher) -> None:
        self.budget = budget_seconds
        self._nap = min(NAP_SECONDS, budget_seconds / 5)
        self.max_rows = max_rows
        self.metrics = metrics
        self._finish = finish
        self._queue: queue.SimpleQueue[ShadowJob | None] = queue.SimpleQueue()
        self._open: deque[ShadowJob] = deque()  # submission (so deadline) order
        # (jobs, scores or None, seconds, when they were back), appended by the thread
        self._results: deque[tuple[list[ShadowJob], list[float] | None, float, float]] = deque()
        self.waiting = 0  # rows of open jobs not yet finished
        self._thread: threading.Thread | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._outcomes = {o: metrics.challenger_outcomes.labels(o)
                          for o in (SCORED, LATE, ERROR, NONFINITE)}
        self._seconds = metrics.model_call_seconds.labels("challenger")

    def start(self) -> None:
        """Start the thread and the reaper (on the running loop)."""
        self._thread = threading.Thread(target=self._work, name="shadow scorer", daemon=True)
        self._thread.start()
        # Several times per budget: a late row waits at most 1.25 budgets.
        self._reaper = asyncio.create_task(
            self._reap_every(min(self.budget / 4, TICK_SECONDS)), name="shadow ticker")

    def has_room(self, rows: int) -> bool:
        return self.waiting + rows <= self.max_rows

    def submit(self, job: ShadowJob) -> None:
        """Queue ``job`` (on the loop; the caller checked :meth:`has_room`)."""
        self.waiting += len(job.rows)
        self._open.append(job)
        self._queue.put(job)

    async def stop(self) -> None:
        """Finish every open job now (as late when its score is not back) and stop the
        thread; a hung model call is left behind in its daemon thread."""
        if self._reaper is not None:
            self._reaper.cancel()
        self._queue.put(None)
        self._collect()
        self._reap(math.inf)

    # The loop's side --------------------------------------------------------------------

    async def _reap_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                self._collect()
                self._reap(time.monotonic())
            except Exception:  # never let the ticker die: rows would wait forever
                logger.exception("finishing late shadow rows failed")

    def _reap(self, now: float) -> None:
        open_jobs = self._open
        while open_jobs and (open_jobs[0].done or open_jobs[0].deadline <= now):
            job = open_jobs.popleft()
            if not job.done:
                n = len(job.rows)
                self._outcomes[LATE].inc(n)
                self._done(job, [None] * n, [LATE] * n, None)

    def _collect(self) -> None:
        results = self._results
        while results:
            self._resolve(*results.popleft())

    def _resolve(self, jobs: list[ShadowJob], scores: list[float] | None,
                 seconds: float, arrived: float) -> None:
        """Scores of ``jobs`` back from the thread (None: the call raised)."""
        offset = 0
        us = seconds * 1e6 / max(1, sum(len(j.values) for j in jobs))
        for job in jobs:
            n = len(job.values)
            mine = scores[offset:offset + n] if scores is not None else None
            offset += n
            if job.done or arrived > job.deadline:  # late: _reap logs the rows without it
                continue
            if mine is None:
                self._outcomes[ERROR].inc(n)
                self._done(job, [None] * n, [ERROR] * n, None)
                continue
            finite = [s if math.isfinite(s) else None for s in mine]
            outcomes = [SCORED if s is not None else NONFINITE for s in finite]
            bad = outcomes.count(NONFINITE)
            if bad:
                self._outcomes[NONFINITE].inc(bad)
            self._outcomes[SCORED].inc(n - bad)
            self._done(job, finite, outcomes, us)

    def _done(self, job: ShadowJob, scores: list[float | None], outcomes: list[str],
              us: float | None) -> None:
        job.done = True
        self.waiting -= len(job.rows)
        try:
            self._finish(job, scores, outcomes, us)
        except Exception as exc:
            logger.exception("logging shadow-scored rows failed")
            if job.logged is not None and not job.logged.done():
                job.logged.set_exception(exc)

    # The thread's side ------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            # Under load, jobs gather while it naps: one model call (and one hand-over of
            # the interpreter lock) serves many requests instead of one each.
            time.sleep(self._nap)
            batch = [job]
            while len(batch) < BATCH_JOBS:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            now = time.monotonic()
            live = [j for j in batch if j.deadline > now]  # the rest are reaped on the loop
            if len({id(j.scorer) for j in live}) > 1:  # a swap in between: one call each
                for j in live:
                    self._score([j])
            elif live:
                self._score(live)

    def _score(self, jobs: list[ShadowJob]) -> None:
        scorer = jobs[0].scorer
        n = sum(len(j.values) for j in jobs)
        started = time.perf_counter()
        scores: list[float] | None
        try:
            parts: list[np.ndarray] = [
                j.values if isinstance(j.values, np.ndarray) else scorer.matrix(j.values)
                for j in jobs]
            if n == 1:
                scores = [scorer.predict_one(parts[0][0])]
            else:
                scores = [float(s) for s in scorer.predict(np.vstack(parts))]
            if len(scores) != n:
                raise ValueError(f"{len(scores)} scores for {n} rows")
        except Exception:  # a failing challenger costs its rows their score, nothing else
            logger.exception("the shadow %s failed to score %d rows", scorer.version, n)
            scores = None
        seconds = time.perf_counter() - started
        self._seconds.observe(seconds)
        self._results.append((jobs, scores, seconds, time.monotonic()))
