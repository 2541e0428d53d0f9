"""`skewless worker`: the loop's jobs on their schedules, each slot run once, each run recorded.

APScheduler fires each job at its slots (one executor thread per job, at most one instance
of a job at a time, a late slot coalesced). A fired slot is first claimed in ``job_runs``
(``skewless.jobs``): a slot another worker claimed, or one whose job still runs its previous
slot, is not run. The job itself is a ``skewless`` command in a child process of its own
session, with a timeout: a hung Feast call is stopped (SIGINT, so the command unwinds and
leaves no partial file, then SIGKILL). A failed attempt is retried with exponential backoff
(tenacity), except one that registered a model version; then the run is recorded. SIGTERM
(or SIGINT) stops the scheduling, lets a running job finish for
``SKEWLESS_WORKER_STOP_GRACE_SECONDS``, then stops it; the run is recorded as interrupted.

Metrics (``SKEWLESS_WORKER_METRICS_PORT``): runs, durations and skipped slots of this
worker, and each job's last success and last outcome as the database has them (whichever
worker ran it), with its expected period, for the staleness alert.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from skewless.errors import Unavailable
from skewless.jobs import ENDED, JOBS, Context, Job, JobRun, JobRuns, Outcome, parse_output
from skewless.schedules import parse_schedule, period_of, slot_of
from skewless.settings import Settings, feast_process_env

log = logging.getLogger("skewless.worker")

MISFIRE_GRACE_SECONDS = 60  # a slot fired later than this (the process was paused) is missed
KILL_AFTER_SECONDS = 10.0  # after SIGINT, a command that has not exited is killed
MAX_BACKOFF_SECONDS = 600.0
ERROR_LINES = 20


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def command(args: list[str]) -> list[str]:
    """A ``skewless`` command line run with this interpreter."""
    return [sys.executable, "-m", "skewless.cli", *args]


@dataclass
class Attempt:
    outcome: Outcome
    error: str | None = None
    produced: dict[str, Any] = field(default_factory=dict)
    log_path: str | None = None
    retryable: bool = False


class Worker:
    """Runs the enabled jobs (those whose schedule is not ``off``) until told to stop."""

    def __init__(self, settings: Settings, store: JobRuns, name: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.name = name or worker_name()
        self.triggers: dict[str, BaseTrigger] = {}
        for job in JOBS.values():
            trigger = parse_schedule(job.schedule(settings))
            if trigger is not None:
                self.triggers[job.name] = trigger
        self.stopping = threading.Event()
        self._children: dict[str, subprocess.Popen[str]] = {}
        self._interrupted: set[str] = set()
        # Re-entrant: a signal handler (stop) may run in the thread that holds it.
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._drainer: threading.Thread | None = None
        self.metrics = WorkerMetrics(self)

    # --- scheduling --------------------------------------------------------------------

    def run(self) -> None:
        """Schedule the enabled jobs and run them until SIGTERM or SIGINT."""
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.handle_signals()
        scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(max(1, len(self.triggers)))},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": MISFIRE_GRACE_SECONDS})
        for name, trigger in self.triggers.items():
            scheduler.add_job(self.run_scheduled, trigger, args=[name], id=name, name=name)

        def missed(event: JobEvent) -> None:
            slot = getattr(event, "scheduled_run_times", None) or [event.scheduled_run_time]
            if event.code == EVENT_JOB_MAX_INSTANCES:  # its previous slot still runs here
                try:
                    self.claim(JOBS[event.job_id], slot[-1], "schedule")  # recorded skipped
                except Unavailable as exc:
                    log.error("%s: slot %s skipped, not recorded: %s", event.job_id,
                              slot[-1].isoformat(), exc)
            else:
                log.warning("%s: slot %s missed (fired more than %d s late)", event.job_id,
                            slot[-1].isoformat(), MISFIRE_GRACE_SECONDS)

        scheduler.add_listener(missed, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        server = self.metrics.serve(self.settings.worker_metrics_port)
        scheduler.start()
        for job in scheduler.get_jobs():
            log.info("%s: %s, next at %s", job.id, JOBS[job.id].schedule(self.settings),
                     job.next_run_time.isoformat())
        if not self.triggers:
            log.warning("every job's schedule is off: nothing to run")
        log.info("worker %s running %d job(s)", self.name, len(self.triggers))
        while not self.stopping.wait(1.0):
            pass
        scheduler.pause()
        if self._drainer is not None:
            self._drainer.join()
        scheduler.shutdown(wait=True)
        if server is not None:
            server.shutdown()
        log.info("worker %s stopped", self.name)

    def run_scheduled(self, name: str) -> None:
        """APScheduler's entry: the slot this firing belongs to, run once."""
        now = datetime.now(UTC)
        try:
            self.run_slot(JOBS[name], slot_of(self.triggers[name], now), "schedule")
        except Unavailable as exc:  # the database is down: the slot is not run, and no
            log.error("%s: not run: %s", name, exc)  # success recorded (the alert sees it)
        except Exception:
            log.exception("%s: the worker failed to run it", name)

    def handle_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: self.stop(signal.Signals(signum).name))

    def stop(self, reason: str = "stop") -> None:
        """Start nothing new; let what runs finish within the grace time, then stop it."""
        with self._lock:
            if self.stopping.is_set():
                return
            self.stopping.set()
            self._drainer = threading.Thread(target=self._drain, name="drain", daemon=True)
        log.info("%s: stopping (running: %s; grace %.0f s)", reason,
                 ", ".join(sorted(self._children)) or "nothing",
                 self.settings.worker_stop_grace_seconds)
        self._drainer.start()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.worker_stop_grace_seconds
        with self._idle:
            while self._children and time.monotonic() < deadline:
                self._idle.wait(max(0.0, min(1.0, deadline - time.monotonic())))
            running = dict(self._children)
            self._interrupted.update(running)
        for name, child in running.items():
            log.warning("%s: still running after the grace time: stopping it", name)
            self._stop_child(child)

    # --- one slot ----------------------------------------------------------------------

    def claim(self, job: Job, slot: datetime, trigger: str) -> JobRun | None:
        """The run of ``slot`` for this worker to do, or None (another worker has it, or the
        job's previous slot still runs: recorded as skipped)."""
        claim = self.store.claim(job.name, slot, self.name, self.deadline(job), trigger)
        if claim.taken:
            log.info("%s: slot %s is %s's", job.name, slot.isoformat(), claim.run.worker)
            self.metrics.skipped.labels(job.name, "taken").inc()
            return None
        if claim.skipped:
            log.warning("%s: slot %s skipped: %s", job.name, slot.isoformat(), claim.run.error)
            self.metrics.skipped.labels(job.name, "overrun").inc()
            return None
        return claim.run

    def run_slot(self, job: Job, slot: datetime, trigger: str = "schedule") -> JobRun | None:
        """Claim ``slot`` of ``job``, run it with retries, record the outcome; None when the
        slot was not this worker's to run."""
        from tenacity import (
            RetryCallState,
            Retrying,
            retry_if_result,
            stop_after_attempt,
            stop_when_event_set,
            wait_exponential,
        )

        if self.stopping.is_set():
            return None
        run = self.claim(job, slot, trigger)
        if run is None:
            return None
        previous = self.store.last_success().get(job.name)
        ctx = Context(self.settings, slot, previous.slot if previous else None)
        log.info("%s: slot %s started (run %d)", job.name, slot.isoformat(), run.id)
        attempts: list[Attempt] = []

        def attempt() -> Attempt:
            if attempts and self.stopping.is_set():  # stopped while waiting to retry
                attempts[-1].retryable = False
                return attempts[-1]
            attempts.append(self.attempt(job, ctx, run.id, len(attempts) + 1))
            return attempts[-1]

        def retrying(state: RetryCallState) -> None:
            assert state.next_action is not None
            log.warning("%s: attempt %d %s; retrying in %.0f s", job.name, state.attempt_number,
                        attempts[-1].outcome.value, state.next_action.sleep)

        last: Attempt = Retrying(
            stop=stop_after_attempt(self.settings.job_retries + 1)
            | stop_when_event_set(self.stopping),
            wait=wait_exponential(multiplier=self.settings.job_retry_backoff_seconds,
                                  max=MAX_BACKOFF_SECONDS),
            retry=retry_if_result(lambda a: a.retryable),
            sleep=self._backoff, before_sleep=retrying,
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        )(attempt)
        finished = self.store.finish(run.id, last.outcome, len(attempts), last.error,
                                     last.produced or None, last.log_path)
        self.metrics.observe(finished)
        (log.info if last.outcome is Outcome.SUCCEEDED else log.error)(
            "%s: slot %s %s after %d attempt(s) in %.1f s%s", job.name, slot.isoformat(),
            last.outcome.value, len(attempts), finished.seconds or 0.0,
            f": {last.error.splitlines()[-1]}" if last.error else "")
        return finished

    def _backoff(self, seconds: float) -> None:
        """Wait before a retry; a stop ends the wait (and the retries)."""
        self.stopping.wait(seconds)

    def deadline(self, job: Job) -> datetime:
        """When a run of ``job`` has surely ended, whatever its attempts: a row still running
        after it belongs to a worker that disappeared."""
        attempts = self.settings.job_retries + 1
        waits = sum(min(self.settings.job_retry_backoff_seconds * 2 ** i, MAX_BACKOFF_SECONDS)
                    for i in range(attempts - 1))
        seconds = (attempts * (self.timeout(job) + KILL_AFTER_SECONDS) + waits
                   + self.settings.worker_stop_grace_seconds + 60)
        return datetime.now(UTC) + timedelta(seconds=seconds)

    def timeout(self, job: Job) -> float:
        return self.settings.job_timeouts.get(job.name, self.settings.job_timeout_seconds)

    def attempt(self, job: Job, ctx: Context, run_id: int, number: int) -> Attempt:
        """One run of the job's command, its stderr (then its stdout) in the attempt's log."""
        log_path = self.settings.jobs_dir / job.name / f"run-{run_id}-attempt-{number}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        registered = self._versions() if job.registers else None
        timed_out = False
        with log_path.open("w+") as output:
            with self._lock:  # a stop either comes before (nothing starts) or sees the child
                if self.stopping.is_set():
                    return Attempt(Outcome.INTERRUPTED, error="the worker was told to stop "
                                   "before the attempt started", log_path=str(log_path))
                child = subprocess.Popen(
                    command(job.command(ctx)), stdout=subprocess.PIPE, stderr=output,
                    text=True, start_new_session=True,
                    env=feast_process_env(self.settings.redis, self.settings))
                self._children[job.name] = child
            try:
                try:
                    stdout, _ = child.communicate(timeout=self.timeout(job))
                except subprocess.TimeoutExpired:
                    timed_out = True
                    self._stop_child(child)
                    stdout, _ = child.communicate()
            finally:
                with self._idle:
                    self._children.pop(job.name, None)
                    interrupted = job.name in self._interrupted
                    self._idle.notify_all()
            output.seek(0)
            stderr = output.read()
            output.write(f"\n--- stdout\n{stdout}")
        result = Attempt(Outcome.SUCCEEDED, log_path=str(log_path),
                         produced=job.produced(ctx))
        doc = parse_output(stdout) if job.summarise else None
        if doc is not None and job.summarise is not None:
            result.produced.update(job.summarise(ctx, doc))
        if child.returncode == 0:
            return result
        result.error = _tail(stderr, stdout)
        result.retryable = True
        if registered is not None:
            new = sorted(set(self._versions() or []) - set(registered))
            if new:  # a retry would register another version
                result.produced["registered"] = new[-1]
                result.retryable = False
        if interrupted:
            result.outcome, result.retryable = Outcome.INTERRUPTED, False
            result.error = "stopped when the worker was told to stop\n" + result.error
            return result
        if timed_out:
            result.outcome = Outcome.TIMED_OUT
            result.error = f"timed out after {self.timeout(job):g} s\n{result.error}"
        else:
            result.outcome = Outcome.FAILED
            found = job.finding(doc) if doc is not None else None
            if found:  # the command did its work and found a problem: retrying changes nothing
                result.retryable = False
                result.error = f"exit code {child.returncode}: {found}"
            else:
                result.error = f"exit code {child.returncode}\n{result.error}"
        return result

    def _versions(self) -> list[str] | None:
        from skewless.registry import Registry

        try:
            with Registry.from_settings(self.settings) as registry:
                return [row.version for row in registry.versions(self.settings.feature_service)]
        except Unavailable:
            return None

    @staticmethod
    def _stop_child(child: subprocess.Popen[str]) -> None:
        """SIGINT to the command's process group (it unwinds: transactions roll back, staged
        files are removed), then SIGKILL if it has not exited."""
        for signum, wait in ((signal.SIGINT, KILL_AFTER_SECONDS), (signal.SIGKILL, None)):
            try:
                os.killpg(child.pid, signum)
            except ProcessLookupError:
                return
            if wait is None:
                return
            try:
                child.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _tail(*outputs: str) -> str:
    """The last lines of the first output that has any: what a failed command said."""
    for output in outputs:
        lines = [line for line in output.splitlines() if line.strip()]
        if lines:
            return "\n".join(lines[-ERROR_LINES:])
    return "(no output)"


class WorkerMetrics:
    """This worker's runs and durations; each job's last success and outcome from the
    database (what every worker's runs left there)."""

    def __init__(self, worker: Worker) -> None:
        self.registry = CollectorRegistry()
        labels = ["job_name"]
        self.runs = Counter("skewless_job_runs", "Runs this worker finished, by outcome",
                            [*labels, "outcome"], registry=self.registry)
        self.duration = Histogram(
            "skewless_job_duration_seconds", "Wall time of the runs this worker finished "
            "(attempts and their backoff)", labels, registry=self.registry,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf")))
        self.skipped = Counter("skewless_job_skipped", "Slots this worker did not run: taken "
                               "by another worker, or the previous slot still running",
                               [*labels, "reason"], registry=self.registry)
        period = Gauge("skewless_job_expected_period_seconds", "Seconds between the job's "
                       "next two slots", labels, registry=self.registry)
        watched = Gauge("skewless_job_watched_since_timestamp_seconds", "When this worker "
                        "started scheduling the job", labels, registry=self.registry)
        now = datetime.now(UTC)
        for name, trigger in worker.triggers.items():
            period.labels(name).set(period_of(trigger, now))
            watched.labels(name).set(now.timestamp())
            for outcome in ENDED:
                self.runs.labels(name, outcome)
        self.registry.register(LastRuns(worker.store, list(worker.triggers)))

    def observe(self, run: JobRun) -> None:
        self.runs.labels(run.job, run.outcome).inc()
        if run.seconds is not None:
            self.duration.labels(run.job).observe(run.seconds)

    def serve(self, port: int) -> Any:
        from prometheus_client import start_http_server

        if not port:
            return None
        server, _thread = start_http_server(port, registry=self.registry)
        log.info("metrics on :%d/metrics", port)
        return server


class LastRuns(Collector):
    """``skewless_job_last_success_timestamp_seconds`` and ``skewless_job_last_outcome`` read
    from ``job_runs`` at each scrape, and whether the database answered."""

    def __init__(self, store: JobRuns, jobs: Iterable[str]) -> None:
        self.store = store
        self.jobs = list(jobs)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("skewless_job_database_up", "Whether the worker could read the "
                               "job runs from the metadata database at this scrape")
        try:
            successes, last = self.store.last_success(), self.store.last_runs()
        except Unavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        success = GaugeMetricFamily(
            "skewless_job_last_success_timestamp_seconds", "When the job's latest successful "
            "run ended (any worker)", labels=["job_name"])
        outcome = GaugeMetricFamily(
            "skewless_job_last_outcome", "1 for the outcome of the job's latest finished run "
            "(any worker), 0 for the others", labels=["job_name", "outcome"])
        for job in self.jobs:
            run = successes.get(job)
            if run is not None and run.ended_at is not None:
                success.add_metric([job], run.ended_at.timestamp())
            latest = last.get(job)
            for value in ENDED:
                outcome.add_metric([job, value],
                                   float(latest is not None and latest.outcome == value))
        yield success
        yield outcome


def run_worker(settings: Settings) -> None:
    """The ``skewless worker`` command's work."""
    with JobRuns.from_settings(settings) as store:
        Worker(settings, store).run()


def run_once(settings: Settings, job: Job, slot: datetime) -> tuple[JobRun | None, bool]:
    """One slot of one job now, as a worker would run it (recorded, retried, once): the
    slot's run, and whether this call ran it (False: it had run, or runs, elsewhere; or
    the job's previous slot still runs)."""
    with JobRuns.from_settings(settings) as store:
        worker = Worker(settings, store)
        worker.handle_signals()
        run = worker.run_slot(job, slot, "manual")
        return (run, True) if run is not None else (store.of_slot(job.name, slot), False)


def job_log(run: JobRun) -> str | None:
    """The run's last attempt's log, when it is still on disk."""
    if run.log_path and Path(run.log_path).exists():
        return Path(run.log_path).read_text(errors="replace")
    return None
