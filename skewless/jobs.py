"""The loop's jobs and the record of their runs.

Each job is a ``skewless`` command (``materialize``, ``skew-check``, ``monitor --retrain``,
``rollout apply``, ``logs prune``, ``catalog refresh``) run for one *slot*, a scheduled time
(``skewless.schedules``). Table ``job_runs`` (migration 0008) holds one row per (job, slot):
the database's unique constraint is what lets only one worker of many run a slot, and a row
still ``running`` (before its deadline) is what keeps a job that overran its slot from being
started again by the next one. A row records who ran it, when, its outcome, its error, how
many attempts it took, what it produced (a report, a registered version) and its log.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from skewless.db import Base, MetadataStore, utcnow
from skewless.registry import NotFound, clip
from skewless.schedules import JOB_NAMES
from skewless.settings import Settings


class Outcome(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt failed (a non-zero exit)
    TIMED_OUT = "timed_out"  # ... and the last one ran past its timeout
    INTERRUPTED = "interrupted"  # the worker was told to stop and stopped it
    SKIPPED = "skipped"  # the job's previous slot was still running
    ABANDONED = "abandoned"  # its worker disappeared (past the run's deadline)


OUTCOMES = tuple(o.value for o in Outcome)
ENDED = tuple(o for o in OUTCOMES if o not in (Outcome.RUNNING, Outcome.SKIPPED))  # a run's end


class JobRun(Base):
    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("job", "slot", name="uq_job_runs_job_slot"),
        Index("ix_job_runs_job_started", "job", "started_at"),
        CheckConstraint(f"outcome IN {OUTCOMES}", name="ck_job_runs_outcome"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(50))
    slot: Mapped[datetime]
    trigger: Mapped[str] = mapped_column(String(20))  # schedule or manual
    worker: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    produced: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    log_path: Mapped[str | None] = mapped_column(String(500))

    @property
    def seconds(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "job": self.job, "slot": self.slot.isoformat(),
                "trigger": self.trigger, "worker": self.worker,
                "started_at": self.started_at.isoformat(),
                "ended_at": self.ended_at.isoformat() if self.ended_at else None,
                "seconds": self.seconds, "outcome": self.outcome, "attempts": self.attempts,
                "error": self.error, "produced": self.produced, "log_path": self.log_path}


@dataclass
class Claim:
    """A worker's claim on a slot: ``run`` is its row; ``taken`` when another worker has the
    slot (then ``run`` is that worker's row), ``skipped`` when the job's previous slot is
    still running (``run`` is this slot's row, recorded as skipped)."""

    run: JobRun
    taken: bool = False
    skipped: bool = False


class JobRuns(MetadataStore):
    """The ``job_runs`` table: claiming a slot, finishing a run, and reading them back."""

    @classmethod
    def from_settings(cls, settings: Settings, check: bool = True) -> JobRuns:
        from skewless.errors import Unavailable

        store = cls(settings.resolved_database_url)
        return store.check_schema(Unavailable) if check else store

    def claim(self, job: str, slot: datetime, worker: str, deadline: datetime,
              trigger: str = "schedule") -> Claim:
        """Claim ``slot`` of ``job`` for ``worker``: at most one claim of a slot succeeds,
        whichever worker asks; a slot whose job still runs an earlier slot (before that
        run's deadline) is recorded as skipped. Runs past their deadline are abandoned."""
        try:
            with self.session() as session:
                self._serialise(session, job)
                now = utcnow()  # once this claim holds the lock: rows start in id order
                session.execute(
                    update(JobRun)
                    .where(JobRun.job == job, JobRun.outcome == Outcome.RUNNING,
                           JobRun.deadline_at <= now)
                    .values(outcome=Outcome.ABANDONED, ended_at=now,
                            error="its worker stopped before recording an outcome"))
                busy = session.scalars(
                    select(JobRun).where(JobRun.job == job, JobRun.outcome == Outcome.RUNNING)
                    .order_by(JobRun.slot.desc()).limit(1)).first()
                run = JobRun(job=job, slot=slot, trigger=trigger, worker=worker, started_at=now,
                             deadline_at=deadline, outcome=Outcome.RUNNING)
                if busy is not None:
                    run.outcome, run.ended_at = Outcome.SKIPPED, now
                    run.error = (f"slot {busy.slot.isoformat()} still running on "
                                 f"{busy.worker} (since {busy.started_at.isoformat()})")
                session.add(run)
                session.flush()
        except IntegrityError:
            other = self.of_slot(job, slot)
            assert other is not None  # the row that won
            return Claim(other, taken=True)
        return Claim(run, skipped=busy is not None)

    @staticmethod
    def _serialise(session: Session, job: str) -> None:
        """One claim of a job at a time: SQLite's writers queue for the write lock (BEGIN
        IMMEDIATE, taken here); on PostgreSQL a transaction-scoped advisory lock per job."""
        session.connection()  # begins the transaction
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                            {"key": zlib.crc32(f"skewless-job:{job}".encode())})

    def finish(self, run_id: int, outcome: Outcome, attempts: int, error: str | None,
               produced: dict[str, Any] | None, log_path: str | None) -> JobRun:
        """Record how the run ended."""
        with self.session() as session:
            run = session.get(JobRun, run_id)
            if run is None:
                raise NotFound(f"job run {run_id} not found")
            run.outcome, run.attempts, run.ended_at = outcome, attempts, utcnow()
            run.error = clip(error, 4000) if error else None
            run.produced, run.log_path = produced, log_path
            return run

    def runs(self, job: str | None = None, limit: int = 50,
             outcome: str | None = None) -> list[JobRun]:
        """The latest runs first."""
        query = select(JobRun).order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(limit)
        if job is not None:
            query = query.where(JobRun.job == job)
        if outcome is not None:
            query = query.where(JobRun.outcome == outcome)
        with self.reading() as session:
            return list(session.scalars(query))

    def get(self, run_id: int) -> JobRun:
        with self.reading() as session:
            run = session.get(JobRun, run_id)
        if run is None:
            raise NotFound(f"job run {run_id} not found")
        return run

    def of_slot(self, job: str, slot: datetime) -> JobRun | None:
        with self.reading() as session:
            return session.scalars(select(JobRun).where(JobRun.job == job,
                                                        JobRun.slot == slot)).first()

    def last_success(self) -> dict[str, JobRun]:
        """Each job's latest succeeded run (by slot)."""
        return self._latest([Outcome.SUCCEEDED])

    def last_runs(self) -> dict[str, JobRun]:
        """Each job's latest run that ended (by slot), skipped ones aside."""
        return self._latest(list(ENDED))

    def _latest(self, outcomes: list[str]) -> dict[str, JobRun]:
        latest = (select(JobRun.job, func.max(JobRun.slot).label("slot"))
                  .where(JobRun.outcome.in_(outcomes)).group_by(JobRun.job).subquery())
        query = select(JobRun).join(latest, (JobRun.job == latest.c.job)
                                    & (JobRun.slot == latest.c.slot))
        with self.reading() as session:
            return {run.job: run for run in session.scalars(query)}


# --- the jobs ---------------------------------------------------------------------------

@dataclass
class Context:
    """What a job's command is built from."""

    settings: Settings
    slot: datetime
    previous_success: datetime | None  # the job's latest succeeded slot


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _skew_since(ctx: Context) -> datetime:
    """What was served since the last successful check, at most one monitor window back (a
    finding is checked again each slot until it leaves the window; a long outage does not
    make one check replay months)."""
    floor = ctx.slot - timedelta(days=ctx.settings.monitor_window_days)
    return max(ctx.previous_success, floor) if ctx.previous_success else floor


def _report(path: Any) -> dict[str, Any]:
    return {"report": str(path)}


def _summarise_skew(ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    return {**_report(ctx.settings.skew_report_path), "rows": doc.get("rows"),
            "mismatches": doc.get("mismatches")}


def _summarise_monitor(ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    trigger = doc.get("trigger") or {}
    produced = {**_report(ctx.settings.monitor_report_path), "rows": doc.get("rows"),
                "findings": len(doc.get("findings") or []), "retrain": trigger.get("retrain")}
    retraining = doc.get("retraining")
    if retraining:
        produced["registered"] = retraining.get("candidate")
        produced["retraining"] = retraining.get("outcome")
    return produced


def _summarise_rollout(ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    decision = doc.get("decision") or {}
    return {**_report(ctx.settings.rollout_report_path), "action": decision.get("action"),
            "applied": decision.get("applied")}


def _summarise_prune(ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    return {"deleted_days": len(doc.get("deleted") or []), "cutoff": doc.get("cutoff"),
            "bound_by": doc.get("bound_by"), "dry_run": doc.get("dry_run")}


@dataclass(frozen=True)
class Job:
    """One of the loop's steps as a ``skewless`` command for a slot."""

    name: str
    help: str
    command: Callable[[Context], list[str]]
    # What the run produced, from the command's --json output (None: nothing to read).
    summarise: Callable[[Context, dict[str, Any]], dict[str, Any]] | None = None
    # A job that may register a model version: a failed attempt that registered one is not
    # retried (the retry would register a second).
    registers: bool = False
    produced: Callable[[Context], dict[str, Any]] = field(default=lambda ctx: {})
    # What a failed run found, from its --json output: a finding is not retried (the same
    # data gives the same answer); None when the output names no finding.
    finding: Callable[[dict[str, Any]], str | None] = field(default=lambda doc: None)

    @property
    def setting(self) -> str:
        return "schedule_" + self.name.replace("-", "_")

    def schedule(self, settings: Settings) -> str:
        return str(getattr(settings, self.setting))


JOBS: dict[str, Job] = {job.name: job for job in (
    Job("materialize", "check the feature tables' expectations, then materialize the online "
        "store incrementally up to the slot",
        lambda ctx: ["materialize", "--end", _iso(ctx.slot)],
        produced=lambda ctx: {"materialized_until": _iso(ctx.slot)}),
    Job("skew-check", "replay what was served since the last successful check through the "
        "training path, value by value",
        lambda ctx: ["skew-check", "--since", _iso(_skew_since(ctx)), "--until", _iso(ctx.slot),
                     "--json"],
        _summarise_skew,
        finding=lambda doc: (f"{doc['mismatches']} served values differ from the training "
                             "path's" if doc.get("mismatches") else None)),
    Job("monitor", "drift, data quality and delayed-label performance; retrain through the "
        "gate when the policy is met",
        lambda ctx: ["monitor", "--retrain", "--until", _iso(ctx.slot), "--json"],
        _summarise_monitor, registers=True),
    Job("rollout", "the rollout policy: promote, abort or hold the challenger",
        lambda ctx: ["rollout", "apply", "--now", _iso(ctx.slot), "--json"], _summarise_rollout),
    Job("logs-prune", "delete the served-feature log's days past retention that no reader "
        "needs", lambda ctx: ["logs", "prune", "--json"], _summarise_prune),
    Job("catalog-refresh", "recompute the catalog's statistics",
        lambda ctx: ["catalog", "refresh"],
        produced=lambda ctx: _report(ctx.settings.catalog_stats_path)),
)}
assert tuple(JOBS) == JOB_NAMES


def parse_output(stdout: str) -> dict[str, Any] | None:
    """The JSON document a command printed with --json (None when there is none)."""
    start = stdout.find("{")
    if start < 0:
        return None
    try:
        doc = json.loads(stdout[start:])
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def job_named(name: str) -> Job:
    from skewless.errors import InvalidInput

    if name not in JOBS:
        raise InvalidInput(f"{name!r} is not a job (jobs: {', '.join(JOBS)})")
    return JOBS[name]
