"""Validation results in the metadata database: each table's expectations, each run.

`skewless validate` (and the check before `skewless materialize` and `skewless dataset`)
stores one row per table it checked (migration 0006), ``passed``, ``failed`` or ``accepted``
(failed, and the step went on with ``--accept-failures --reason``: also an audit event). The
catalog shows the latest per view; the volume rule compares with the latest that was not
``failed``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Float, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from skewless.db import Base, MetadataStore, utcnow
from skewless.errors import SkewlessError
from skewless.expectations import Finding, ValidationReport
from skewless.registry import AUDIT_TEXT_CHARS, Registry, clip, current_user
from skewless.settings import Settings


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"  # the step stopped
    ACCEPTED = "accepted"  # failed, and the step went on: actor and reason say who and why


class ValidationResult(Base):
    """One table's expectations checked once."""

    __tablename__ = "validation_results"
    __table_args__ = (
        CheckConstraint("status IN ('passed', 'failed', 'accepted')",
                        name="ck_validation_results_status"),
        CheckConstraint("status <> 'accepted' OR reason IS NOT NULL",
                        name="ck_validation_results_reason"),
        Index("ix_validation_results_target_at", "target", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(36), index=True)
    step: Mapped[str] = mapped_column(String(50))  # validate, materialize, dataset
    target: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(50))  # feature view, request source
    status: Mapped[str] = mapped_column(String(20))
    schema_ref: Mapped[str] = mapped_column(String(400))
    location: Mapped[str] = mapped_column(Text)
    rows: Mapped[int | None] = mapped_column(BigInteger)
    newest_event: Mapped[datetime | None]
    reference_time: Mapped[datetime]
    findings: Mapped[dict[str, Any]]  # {"findings": [...]}: JSON of a list
    seconds: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def finding_list(self) -> list[Finding]:
        return [Finding.from_json(f) for f in (self.findings or {}).get("findings", [])]

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "step": self.step, "target": self.target,
                "kind": self.kind, "status": self.status, "schema": self.schema_ref,
                "location": self.location, "rows": self.rows,
                "newest_event": self.newest_event.isoformat() if self.newest_event else None,
                "reference_time": self.reference_time.isoformat(),
                "findings": [f.to_json() for f in self.finding_list],
                "seconds": self.seconds, "actor": self.actor, "reason": self.reason,
                "at": self.at.isoformat()}


class ValidationStore(MetadataStore):
    """Validation results: recorded per run, read per table."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ValidationStore:
        from skewless.registry import RegistryError

        return cls(settings.resolved_database_url).check_schema(RegistryError)

    def previous_rows(self, target: str) -> int | None:
        """Rows of the latest result for ``target`` that did not fail: the volume baseline."""
        with self.reading() as session:
            row = session.scalars(
                select(ValidationResult)
                .where(ValidationResult.target == target,
                       ValidationResult.status != Status.FAILED.value)
                .order_by(ValidationResult.at.desc(), ValidationResult.id.desc()).limit(1)
            ).first()
            return row.rows if row is not None else None

    def record(self, report: ValidationReport, actor: str,
               reason: str | None = None) -> str:
        """Store every table's result of ``report``; its failures ``accepted`` when a reason is
        given (and an audit event names who accepted what), else ``failed``. Returns the run id."""
        run_id = str(uuid.uuid4())
        failed = Status.ACCEPTED if reason is not None else Status.FAILED
        with self.session() as session:
            for result in report.results:
                session.add(ValidationResult(
                    run_id=run_id, step=report.step, target=result.target, kind=result.kind,
                    status=(Status.PASSED if result.passed else failed).value,
                    schema_ref=result.schema, location=result.location, rows=result.rows,
                    newest_event=result.newest_event, reference_time=report.reference_time,
                    findings={"findings": [f.to_json() for f in result.findings]},
                    seconds=result.seconds, actor=clip(actor, 200),
                    reason=None if reason is None else clip(reason, AUDIT_TEXT_CHARS)))
            if reason is not None and report.failed:
                session.add(Registry._event(
                    actor, "accept validation failures",
                    ", ".join(r.target for r in report.failed), "accepted",
                    {"run_id": run_id, "step": report.step, "reason": reason,
                     "findings": {r.target: [f.to_json() for f in r.findings[:20]]
                                  for r in report.failed}}))
        return run_id

    def latest(self, target: str) -> ValidationResult | None:
        """The latest result for ``target``, whatever its status."""
        with self.reading() as session:
            return session.scalars(
                select(ValidationResult).where(ValidationResult.target == target)
                .order_by(ValidationResult.at.desc(), ValidationResult.id.desc()).limit(1)
            ).first()

    def history(self, target: str, limit: int = 10) -> list[ValidationResult]:
        """The latest ``limit`` results for ``target``, newest first."""
        with self.reading() as session:
            return list(session.scalars(
                select(ValidationResult).where(ValidationResult.target == target)
                .order_by(ValidationResult.at.desc(), ValidationResult.id.desc()).limit(limit)))


class ValidationFailed(SkewlessError):
    """Expectations failed and nobody accepted it: the step stops (the CLI exits 1)."""

    def __init__(self, report: ValidationReport) -> None:
        failed = "; ".join(
            f"{r.kind} {r.target}: " + ", ".join(f"{f.feature} {f.rule}" for f in r.findings[:3])
            for r in report.failed)
        super().__init__(f"{report.step} stopped: expectations failed ({failed}); fix the "
                         "data, or proceed with --accept-failures --reason TEXT (audited)")
        self.report = report


def check_expectations(settings: Settings, step: str, reference_time: datetime,
                       views: Iterable[str] | None = None, accept_reason: str | None = None,
                       actor: str | None = None,
                       service: str | None = None) -> tuple[ValidationReport, str | None]:
    """Validate the tables ``views`` names (None: every one with expectations; ``service``:
    those the feature service reads) and store the results. Returns the report and the stored
    run's id (None when no table has expectations: nothing is stored). Failures are stored as
    accepted when ``accept_reason`` is given; the caller decides whether a failed report stops
    its step."""
    from skewless.doctor import definitions
    from skewless.expectations import service_views, targets, validate

    snapshot = definitions(settings)
    if service is not None:
        views = service_views(snapshot, service)
    found, notes = targets(settings, snapshot, views)
    if not found:
        return ValidationReport(step, reference_time, notes=notes), None
    with ValidationStore.from_settings(settings) as store:
        report = validate(settings, found, step, reference_time, store.previous_rows, notes)
        run_id = store.record(report, actor or current_user(),
                              accept_reason if not report.passed else None)
    return report, run_id
