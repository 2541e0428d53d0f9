"""The shadow: the challenger scored on the served vectors, off the request's critical path.

A request scored by production hands its rows to :class:`ShadowScorer` and is answered at
once; its logged rows wait here for the challenger's scores. One thread scores what is
waiting, in batches (one matrix and one model call per batch), and posts the scores back to
the event loop. A row whose score is not back within the budget (``SKEWLESS_SHADOW_BUDGET_MS``)
is logged without it, as ``late``, by a reaper on the loop: a slow or hung challenger never
holds a row (or, with spool durability, its answer) longer than the budget, and a score that
arrives after its row was logged is dropped and counted. A challenger that raises, or
returns a non-finite score, costs its rows their challenger score (``error``, ``nonfinite``)
and nothing else. At most ``max_rows`` rows wait; beyond that a row is logged at once
without a challenger score (``overloaded``).

Ownership: the request path and the reaper run on the event loop and are the only ones to
change a job's ``done`` flag or the list of open jobs; the thread only reads a job's vectors
and posts results, so no lock is needed beyond the thread-safe queue between them.
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

from service.metrics import Metrics
from service.scoring import Scorer
from skewless.rollout import ERROR, LATE, NONFINITE, SCORED

logger = logging.getLogger(__name__)

BATCH_JOBS = 64  # jobs the thread takes in one go at most


@dataclass(eq=False)
class ShadowJob:
    """One request's rows waiting for their challenger scores."""

    scorer: Scorer
    values: Sequence[Sequence[Any]]  # the served vectors, in the model's feature order
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
        self.max_rows = max_rows
        self.metrics = metrics
        self._finish = finish
        self._queue: queue.SimpleQueue[ShadowJob | None] = queue.SimpleQueue()
        self._open: deque[ShadowJob] = deque()  # submission (so deadline) order
        self.waiting = 0  # rows of open jobs not yet finished
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._outcomes = {o: metrics.challenger_outcomes.labels(o)
                          for o in (SCORED, LATE, ERROR, NONFINITE)}
        self._seconds = metrics.model_call_seconds.labels("challenger")

    def start(self) -> None:
        """Start the thread and the reaper (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="shadow scorer", daemon=True)
        self._thread.start()
        # Checked several times per budget, so a late row waits at most 1.25 budgets.
        self._reaper = asyncio.create_task(self._reap_every(self.budget / 4),
                                           name="shadow reaper")

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
        await asyncio.sleep(0)  # let scores already posted land first
        self._reap(math.inf)

    # The loop's side --------------------------------------------------------------------

    async def _reap_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                self._reap(time.monotonic())
            except Exception:  # never let the reaper die: rows would wait forever
                logger.exception("finishing late shadow rows failed")

    def _reap(self, now: float) -> None:
        open_jobs = self._open
        while open_jobs and (open_jobs[0].done or open_jobs[0].deadline <= now):
            job = open_jobs.popleft()
            if not job.done:
                n = len(job.rows)
                self._outcomes[LATE].inc(n)
                self._done(job, [None] * n, [LATE] * n, None)

    def _resolve(self, jobs: list[ShadowJob], scores: list[float] | None,
                 seconds: float) -> None:
        """Scores of ``jobs`` back from the thread (None: the call raised)."""
        offset = 0
        us = seconds * 1e6 / max(1, sum(len(j.values) for j in jobs))
        for job in jobs:
            n = len(job.values)
            mine = scores[offset:offset + n] if scores is not None else None
            offset += n
            if job.done:  # logged as late already: this score is dropped
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
            by_scorer: dict[int, list[ShadowJob]] = {}
            for j in live:
                by_scorer.setdefault(id(j.scorer), []).append(j)
            for jobs in by_scorer.values():
                self._score(jobs)

    def _score(self, jobs: list[ShadowJob]) -> None:
        scorer = jobs[0].scorer
        values = [v for j in jobs for v in j.values]
        started = time.perf_counter()
        scores: list[float] | None
        try:
            x = scorer.matrix(values)
            scores = ([scorer.predict_one(x[0])] if len(values) == 1
                      else [float(s) for s in scorer.predict(x)])
            if len(scores) != len(values):
                raise ValueError(f"{len(scores)} scores for {len(values)} rows")
        except Exception:  # a failing challenger costs its rows their score, nothing else
            logger.exception("the shadow %s failed to score %d rows", scorer.version,
                             len(values))
            scores = None
        seconds = time.perf_counter() - started
        self._seconds.observe(seconds)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._resolve, jobs, scores, seconds)
            except RuntimeError:  # the loop closed meanwhile: stop() reaped them already
                pass
