"""The model registry: model versions, their stage changes, and the admin audit.

Its tables (on the metadata database's declarative base, ``skewless.db``) and the few queries
the CLI, the acceptance gate, the admin API and the predictor share. Stages are candidate →
production → archived; the database itself refuses a second production version of a model
name (a partial unique index), so two promotions that race cannot both win, whatever the code
does. A version may also be tried out beside production before it replaces it: ``shadow``
(scored on the same requests, its scores never returned) or ``canary`` (answering a share of
the requests, at most :data:`MAX_CANARY_PERCENT` per cent); together they are the challenger,
and the database holds at most one per model name the same way. A version is registered only
after a child process has read, hashed, parsed and scored
its artefact (``skewless.artifact_check``); the row records when (``artifact_checked_at``),
and nothing in a serving process parses a version without that record: the record holds for
the bytes of the registered sha256, and those are the only bytes a load will parse. A
database that cannot be reached (down, restarting, locked) is
:class:`~skewless.db.DatabaseUnavailable` (503) from every query, never a driver error.
"""

from __future__ import annotations

import getpass
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from skewless.artifact import (
    ArtifactError,
    ArtifactLimits,
    ModelArtifact,
    check_artifact,
    load_artifact,
    read_contract,
)
from skewless.contract import ModelContract, current_fingerprint
from skewless.db import Base, MetadataStore, upgrade, utcnow
from skewless.errors import InvalidInput
from skewless.experiments import ExperimentRun  # noqa: F401  # its table, for the foreign key
from skewless.settings import Settings


class Stage(StrEnum):
    CANDIDATE = "candidate"
    PRODUCTION = "production"
    ARCHIVED = "archived"
    SHADOW = "shadow"  # scored beside production; its scores are never returned
    CANARY = "canary"  # answers ``traffic_percent`` per cent of requests


CHALLENGER_STAGES = (Stage.SHADOW, Stage.CANARY)  # at most one version of a name in either
# A canary answers at most half of the traffic: beyond that it is no longer the version being
# tried out, and promoting it is the honest step (the database holds the same bound).
MAX_CANARY_PERCENT = 50.0


class RegistryError(InvalidInput):
    """A registry operation could not be done; the message says why."""


class NotFound(RegistryError):
    """No such model version (the message names it)."""

    status_code = 404


class Conflict(RegistryError):
    """The registry changed under the operation (another promotion won); retry."""

    status_code = 409


class ArtifactRefused(RegistryError):
    """The artefact check refused a version's artefact (the message says why)."""

    status_code = 409


STAGES = ", ".join(f"'{s.value}'" for s in Stage)
CHALLENGERS = ", ".join(f"'{s.value}'" for s in CHALLENGER_STAGES)


class ContractJSON(TypeDecorator[ModelContract]):
    """A model contract stored as its JSON document and read back typed."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: ModelContract | None, dialect: Any) -> Any:
        return value.to_json() if value is not None else None

    def process_result_value(self, value: Any, dialect: Any) -> ModelContract | None:
        return ModelContract.model_validate(value) if value is not None else None


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
        CheckConstraint(f"stage IN ({STAGES})", name="ck_model_versions_stage"),
        # At most one production version per name, enforced by the database.
        Index("uq_model_versions_one_production", "name", unique=True,
              sqlite_where=text("stage = 'production'"),
              postgresql_where=text("stage = 'production'")),
        # At most one challenger (shadow or canary) per name, enforced by the database too.
        Index("uq_model_versions_one_challenger", "name", unique=True,
              sqlite_where=text(f"stage IN ({CHALLENGERS})"),
              postgresql_where=text(f"stage IN ({CHALLENGERS})")),
        # A traffic share exactly on a canary, above 0 and at most MAX_CANARY_PERCENT.
        CheckConstraint(
            f"(stage = 'canary' AND traffic_percent IS NOT NULL AND traffic_percent > 0 AND "
            f"traffic_percent <= {MAX_CANARY_PERCENT:g}) OR "
            f"(stage <> 'canary' AND traffic_percent IS NULL)",
            name="ck_model_versions_traffic_percent"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    stage: Mapped[str] = mapped_column(String(20), default=Stage.CANDIDATE.value)
    # A canary's share of the requests it answers, in per cent; None in every other stage.
    traffic_percent: Mapped[float | None] = mapped_column(Float)
    artifact_uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    feature_service: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(100))  # "sha256:" and 64 hex digits
    contract: Mapped[ModelContract] = mapped_column(ContractJSON)
    parameters: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    training_window: Mapped[dict[str, Any]]
    baseline: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    # When a check process last read, hashed (as ``sha256``), parsed and scored the artefact;
    # None: never (registered before checks existed), so no serving process may parse it.
    artifact_checked_at: Mapped[datetime | None]
    # The experiment run (a search's trial) it was trained from, when it came from one.
    experiment_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("experiment_runs.id", ondelete="SET NULL",
                   name="fk_model_versions_experiment_run"))

    transitions: Mapped[list[StageTransition]] = relationship(
        back_populates="model_version", order_by="StageTransition.id")

    def summary(self) -> dict[str, Any]:
        """What `models list` shows."""
        return {
            "name": self.name, "version": self.version, "stage": self.stage,
            "traffic_percent": self.traffic_percent, "feature_service": self.feature_service,
            "fingerprint": self.fingerprint,
            "metrics": self.metrics, "created_at": self.created_at.isoformat(),
            "created_by": self.created_by, "artifact_uri": self.artifact_uri,
            "experiment_run": self.experiment_run_id,
        }

    def details(self) -> dict[str, Any]:
        """What `models show` shows: everything, with the stage history."""
        return {
            **self.summary(), "sha256": self.sha256,
            "artifact_checked_at": self.artifact_checked_at.isoformat()
            if self.artifact_checked_at else None, "parameters": self.parameters,
            "training_window": self.training_window, "baseline": self.baseline,
            "features": self.contract.to_json()["features"],
            "decision": self.contract.decision.to_json() if self.contract.decision else None,
            "transitions": [t.to_json() for t in self.transitions],
        }


class StageTransition(Base):
    """Append-only: every stage change of a model version, with who, when, why and evidence."""

    __tablename__ = "stage_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT"), index=True)
    from_stage: Mapped[str | None] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    evidence: Mapped[dict[str, Any]]

    model_version: Mapped[ModelVersion] = relationship(back_populates="transitions")

    def to_json(self) -> dict[str, Any]:
        return {"from": self.from_stage, "to": self.to_stage, "actor": self.actor,
                "at": self.at.isoformat(), "reason": self.reason, "forced": self.forced,
                "evidence": self.evidence}


class AuditEvent(Base):
    """Append-only: every admin call (accepted or refused) and every refused promotion."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "actor": self.actor, "action": self.action,
                "target": self.target, "outcome": self.outcome, "detail": self.detail}


AUDIT_TARGET_CHARS = 1000  # what an audit event keeps of a path
AUDIT_TEXT_CHARS = 2000  # … and of a text in its detail


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    note = f"… ({len(text):,} characters)"
    return text[:limit - len(note)] + note


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def read_contract_file(directory: Path) -> ModelContract:
    contract = read_contract(directory)
    if contract is None or contract.model is None:
        raise RegistryError(f"no contract.json naming a model in {directory}: not a model "
                            "artefact")
    return contract


def not_checked(row: ModelVersion) -> str | None:
    """Why ``row``'s artefact may not be parsed in this process, or None when it may."""
    if row.artifact_checked_at is not None:
        return None
    return (f"model {row.name} version {row.version} has no recorded artefact check (registered "
            f"before artefacts were checked), so it is not parsed here; `skewless models check "
            f"{row.name} {row.version}` checks it in a separate process")


def load_registered(row: ModelVersion, limits: ArtifactLimits | None = None) -> ModelArtifact:
    """A version's artefact, checked: a check process parsed it first, and the bytes parsed
    here are the registered sha256's, of the version the registry recorded."""
    refusal = not_checked(row)
    if refusal:
        raise ArtifactError(refusal)
    artifact = load_artifact(Path(row.artifact_uri), (limits or ArtifactLimits()).max_bytes,
                             sha256=row.sha256)
    if artifact.version != row.version:
        raise ArtifactError(
            f"{row.artifact_uri} holds {artifact.version}, registered as {row.version}")
    return artifact


@dataclass
class RolloutStatus:
    """Where the rollout of one model name stands."""

    name: str
    production: str | None
    challenger: str | None = None
    stage: str | None = None  # shadow or canary
    traffic_percent: float | None = None  # a canary's share of the requests
    since: datetime | None = None  # when the challenger reached its stage and share
    by: str | None = None
    reason: str | None = None
    started_at: datetime | None = None  # when it left candidate
    started_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "production": self.production,
                "challenger": self.challenger, "stage": self.stage,
                "traffic_percent": self.traffic_percent,
                "since": self.since.isoformat() if self.since else None, "by": self.by,
                "reason": self.reason,
                "started_at": self.started_at.isoformat() if self.started_at else None,
                "started_by": self.started_by}


def check_percent(percent: float | None) -> float:
    """A canary's traffic share, when it is above 0 and at most :data:`MAX_CANARY_PERCENT`."""
    if percent is None or not math.isfinite(percent) or not 0 < percent <= MAX_CANARY_PERCENT:
        raise RegistryError(f"traffic percent must be above 0 and at most "
                            f"{MAX_CANARY_PERCENT:g}, not {percent}")
    return float(percent)


def another_challenger(name: str, other: ModelVersion) -> str:
    share = f" at {other.traffic_percent:g}%" if other.traffic_percent is not None else ""
    return (f"model {name} already has a challenger: version {other.version} ({other.stage}"
            f"{share}); end its rollout first (`skewless models end-rollout {name}`)")


class Registry(MetadataStore):
    """Queries and stage changes of the model registry."""

    def __init__(self, url: str, engine: Engine | None = None,
                 limits: ArtifactLimits | None = None) -> None:
        super().__init__(url, engine)
        self.limits = limits or ArtifactLimits()  # what checking an artefact may cost

    @classmethod
    def from_settings(cls, settings: Settings, check: bool = True) -> Registry:
        registry = cls(settings.resolved_database_url,
                       limits=ArtifactLimits.from_settings(settings))
        return registry.check_schema(RegistryError) if check else registry

    # Reads -------------------------------------------------------------------------------

    def versions(self, name: str | None = None,
                 feature_services: list[str] | None = None) -> list[ModelVersion]:
        with self.reading() as session:
            query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.id)
            if name is not None:
                query = query.where(ModelVersion.name == name)
            if feature_services is not None:
                query = query.where(ModelVersion.feature_service.in_(feature_services))
            return list(session.scalars(query))

    def get(self, name: str, version: str) -> ModelVersion:
        with self.reading() as session:
            found = session.scalar(
                select(ModelVersion).where(ModelVersion.name == name,
                                           ModelVersion.version == version))
            if found is None:
                raise NotFound(f"model {name} has no version {version}")
            found.transitions  # noqa: B018  # load the history while the session is open
            return found

    def in_stage(self, name: str, stage: Stage) -> ModelVersion | None:
        """The version of ``name`` in a single-holder ``stage`` (production), if any."""
        with self.reading() as session:
            return session.scalar(select(ModelVersion).where(
                ModelVersion.name == name, ModelVersion.stage == stage.value))

    def version_in_stage(self, name: str, stage: Stage) -> str | None:
        """That version's name only: what the predictor's model slots poll."""
        with self.reading() as session:
            return session.scalar(select(ModelVersion.version).where(
                ModelVersion.name == name, ModelVersion.stage == stage.value))

    def production(self, name: str) -> ModelVersion | None:
        return self.in_stage(name, Stage.PRODUCTION)

    def production_version(self, name: str) -> str | None:
        return self.version_in_stage(name, Stage.PRODUCTION)

    def challenger(self, name: str) -> ModelVersion | None:
        """The version of ``name`` in shadow or canary, if any."""
        with self.reading() as session:
            return session.scalar(self._challenger_query(name))

    def challenger_route(self, name: str) -> tuple[str, str, float | None] | None:
        """The challenger's version, stage and traffic share (what the predictor polls)."""
        with self.reading() as session:
            row = session.execute(select(
                ModelVersion.version, ModelVersion.stage, ModelVersion.traffic_percent,
            ).where(ModelVersion.name == name, ModelVersion.stage.in_(
                [s.value for s in CHALLENGER_STAGES]))).first()
            return None if row is None else (row[0], row[1], row[2])

    def rollout(self, name: str) -> RolloutStatus:
        """Where the rollout of ``name`` stands: production, its challenger, since when and
        by whom; :class:`NotFound` when no version of ``name`` is registered."""
        with self.reading() as session:
            self._known(session, name)
            production = session.scalar(select(ModelVersion.version).where(
                ModelVersion.name == name, ModelVersion.stage == Stage.PRODUCTION.value))
            challenger = session.scalar(self._challenger_query(name))
            if challenger is None:
                return RolloutStatus(name, production)
            history = list(challenger.transitions)
            started = history[-1]
            for transition in reversed(history):  # back to where it left candidate
                if transition.to_stage not in CHALLENGER_STAGES:
                    break
                started = transition
            last = history[-1]
            return RolloutStatus(
                name, production, challenger.version, challenger.stage,
                challenger.traffic_percent, since=last.at, by=last.actor, reason=last.reason,
                started_at=started.at, started_by=started.actor)

    def gate_refusals(self, name: str, version: str, limit: int = 5) -> list[AuditEvent]:
        """The gate's refusals of one version, newest first (a refusal has no transition)."""
        with self.reading() as session:
            return list(session.scalars(
                select(AuditEvent).where(AuditEvent.action == "promote",
                                         AuditEvent.target == f"{name}/{version}",
                                         AuditEvent.outcome.startswith("refused"))
                .order_by(AuditEvent.id.desc()).limit(limit)))

    def audit_events(self, limit: int = 100) -> list[AuditEvent]:
        with self.reading() as session:
            return list(session.scalars(
                select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)))

    # Writes ------------------------------------------------------------------------------

    def register(self, directory: Path, actor: str | None = None,
                 reason: str = "trained") -> ModelVersion:
        """Record a trained artefact as a candidate (its contract.json says what it is), once
        a check process has read, hashed, parsed and scored it; refused otherwise."""
        contract = read_contract_file(directory)
        assert contract.model is not None
        name, version = contract.feature_service, contract.model.version
        with self.reading() as session:  # before the check: it costs a process
            if session.scalar(select(ModelVersion.id).where(
                    ModelVersion.name == name, ModelVersion.version == version)) is not None:
                raise RegistryError(f"model {name} version {version} is already registered")
        try:
            check = check_artifact(directory.resolve(), contract.model.sha256, self.limits,
                                   version=version)
        except ArtifactError as exc:
            raise ArtifactRefused(f"model {name} version {version} not registered: {exc}"
                                  ) from exc
        training = contract.training
        row = ModelVersion(
            name=contract.feature_service, version=contract.model.version,
            stage=Stage.CANDIDATE.value, artifact_uri=str(directory.resolve()),
            sha256=contract.model.sha256, feature_service=contract.feature_service,
            fingerprint=contract.fingerprint, contract=contract,
            parameters=contract.parameters,
            metrics=contract.metrics.to_json() if contract.metrics else {},
            training_window={**training.windows, "cutoff": training.cutoff,
                             "rows": training.rows, "dataset": training.dataset}
            if training else {"cutoff": None, "rows": {}, "dataset": None},
            baseline=contract.baseline.to_json() if contract.baseline else {},
            created_by=actor or current_user(), artifact_checked_at=utcnow(),
            experiment_run_id=training.experiment_run.get("id")
            if training and training.experiment_run else None,
        )
        try:
            with self.session() as session:
                session.add(row)
                session.flush()
                session.add(StageTransition(
                    model_version_id=row.id, from_stage=None, to_stage=Stage.CANDIDATE.value,
                    actor=row.created_by, reason=reason, evidence={"artifact_check": check}))
        except IntegrityError as exc:
            raise RegistryError(
                f"model {row.name} version {row.version} is already registered") from exc
        return row

    def check(self, name: str, version: str, actor: str | None = None) -> ModelVersion:
        """Check a registered version's artefact in a check process and record that it passed
        (audited either way); :class:`ArtifactRefused` with the reason when it did not."""
        row = self.get(name, version)
        target, who = f"{name}/{version}", actor or current_user()
        try:
            outcome = check_artifact(Path(row.artifact_uri), row.sha256, self.limits,
                                     version=row.version)
        except ArtifactError as exc:
            self.audit(who, "check artefact", target, "refused", {"error": str(exc)})
            raise ArtifactRefused(f"model {name} version {version}: {exc}") from exc
        with self.session() as session:
            self._locked(session, name, version).artifact_checked_at = utcnow()
            session.add(self._event(who, "check artefact", target, "passed",
                                    {"artifact_check": outcome}))
        return self.get(name, version)

    def ensure_checked(self, name: str, version: str, actor: str | None = None) -> ModelVersion:
        """The version, its artefact checked (now, if it never was)."""
        row = self.get(name, version)
        return row if row.artifact_checked_at is not None else self.check(name, version, actor)

    def promote(self, name: str, version: str, actor: str, reason: str,
                evidence: dict[str, Any], forced: bool = False,
                expected_production: str | None = None) -> ModelVersion:
        """Make ``version`` production and archive the one it replaces, in one transaction.

        ``expected_production`` is the production version the decision was based on (the
        gate compared against it); if production changed meanwhile, nothing is changed. A
        forced promotion's audit event is written in the same transaction: it exists exactly
        when the promotion does. A version whose artefact was never checked is checked first.
        """
        self.ensure_checked(name, version, actor)
        try:
            with self.session() as session:
                target = self._locked(session, name, version)
                if target.stage == Stage.PRODUCTION.value:
                    raise Conflict(f"model {name} version {version} is already production")
                current = session.scalar(select(ModelVersion).where(
                    ModelVersion.name == name, ModelVersion.stage == Stage.PRODUCTION.value,
                ).with_for_update())
                current_version = current.version if current else None
                if current_version != expected_production:
                    raise Conflict(
                        f"production of {name} changed to {current_version or 'none'} while "
                        f"the promotion of {version} was decided against "
                        f"{expected_production or 'none'}; nothing changed, try again")
                if forced:
                    session.add(self._event(actor, "promote", f"{name}/{version}", "forced",
                                            {"reason": reason}))
                if current is not None:
                    self._move(session, current, Stage.ARCHIVED, actor,
                               f"replaced by {version}: {reason}", {"replaced_by": version},
                               forced)
                    session.flush()  # archive first: the one-production index holds throughout
                ended = ({"ended_rollout": {"stage": target.stage,
                                            "traffic_percent": target.traffic_percent}}
                         if target.stage in CHALLENGER_STAGES else {})
                self._move(session, target, Stage.PRODUCTION, actor, reason,
                           {**evidence, "previous_production": current_version, **ended},
                           forced)
                return target
        except IntegrityError as exc:
            raise Conflict(f"another promotion of {name} committed first; nothing changed "
                           f"({exc.orig})") from exc

    def force_promote(self, name: str, version: str, actor: str, reason: str,
                      evidence: dict[str, Any]) -> ModelVersion:
        """Promote without the gate; audited as forced."""
        return self.promote(name, version, actor, reason, evidence, forced=True,
                            expected_production=self.production_version(name))

    def rollback(self, name: str, actor: str, reason: str) -> ModelVersion:
        """Return production to the version that was production before the current one (its
        artefact checked first if it never was)."""
        with self.reading() as session:
            _, previous_version = self._rollback_target(session, name, lock=False)
        self.ensure_checked(name, previous_version, actor)
        with self.session() as session:
            current, previous_version = self._rollback_target(session, name, lock=True)
            previous = self._locked(session, name, previous_version)
            refusal = not_checked(previous)
            if refusal:  # production moved meanwhile, to a version that was never checked
                raise ArtifactRefused(refusal)
            self._move(session, current, Stage.ARCHIVED, actor, f"rolled back: {reason}",
                       {"rolled_back_to": previous.version}, False)
            session.flush()
            self._move(session, previous, Stage.PRODUCTION, actor, f"rollback: {reason}",
                       {"previous_production": current.version, "rollback": True}, False)
            return previous

    def archive(self, name: str, version: str, actor: str, reason: str) -> ModelVersion:
        with self.session() as session:
            target = self._locked(session, name, version)
            if target.stage == Stage.ARCHIVED.value:
                raise Conflict(f"model {name} version {version} is already archived")
            if target.stage == Stage.PRODUCTION.value:
                raise Conflict(f"model {name} version {version} is production: promote another "
                               "version or roll back instead of leaving none")
            self._move(session, target, Stage.ARCHIVED, actor, reason, {}, False)
            return target

    def shadow(self, name: str, version: str, actor: str, reason: str) -> ModelVersion:
        """Make ``version`` the shadow of ``name``: scored beside production, never answering.

        From candidate (or from canary, taking its traffic away). Refused when another version
        is the challenger, when there is no production version to compare with, or when the
        artefact check refuses it; refusals are audited too."""
        return self._challenge(name, version, Stage.SHADOW, None, actor, reason)

    def canary(self, name: str, version: str, percent: float, actor: str,
               reason: str) -> ModelVersion:
        """Make ``version`` the canary of ``name``, answering ``percent`` per cent of requests
        (above 0, at most :data:`MAX_CANARY_PERCENT`).

        From candidate or shadow; on the canary itself it changes its share. Refused as
        :meth:`shadow` is."""
        return self._challenge(name, version, Stage.CANARY, percent, actor, reason)

    def end_rollout(self, name: str, actor: str, reason: str, *, action: str = "end rollout",
                    evidence: dict[str, Any] | None = None,
                    expected: str | None = None) -> ModelVersion:
        """Send the challenger of ``name`` back to candidate (it stays registered, so it can
        be tried again, promoted or archived); :class:`Conflict` when there is none, or when
        it is not the ``expected`` version (the one a decision was made on). The transition
        and the audit event (``action``: the rollout policy's is ``abort``) carry
        ``evidence``."""
        with self._refusals_audited(actor, action, name, {"reason": reason}), \
                self.session() as session:
            self._known(session, name)
            row = session.scalar(self._challenger_query(name).with_for_update())
            if row is None:
                raise Conflict(f"model {name} has no challenger (shadow or canary): no rollout "
                               "to end")
            if expected is not None and row.version != expected:
                raise Conflict(f"the challenger of {name} changed to {row.version} while the "
                               f"rollout of {expected} was judged; nothing changed")
            ended = {"stage": row.stage, "traffic_percent": row.traffic_percent}
            self._move(session, row, Stage.CANDIDATE, actor, f"rollout ended: {reason}",
                       {"ended_rollout": ended, **({"evidence": evidence} if evidence else {})},
                       False)
            session.add(self._event(actor, action, f"{name}/{row.version}", "done",
                                    {"reason": reason, **ended,
                                     **({"evidence": evidence} if evidence else {})}))
            return row

    def audit(self, actor: str, action: str, target: str, outcome: str,
              detail: dict[str, Any] | None = None) -> None:
        """Record an event; what a caller chose (a path, a name, a reason) is clipped to its
        column, so no call can store more than a few kilobytes or fail on a long value."""
        with self.session() as session:
            session.add(self._event(actor, action, target, outcome, detail))

    # Helpers -----------------------------------------------------------------------------

    def _challenge(self, name: str, version: str, stage: Stage, percent: float | None,
                   actor: str, reason: str) -> ModelVersion:
        """Move ``version`` into a challenger ``stage``; its artefact is checked as a
        production version's is (a check process, then parsed here from the registered
        bytes) before the transaction, and every rule is checked again under its locks."""
        target = f"{name}/{version}"
        detail: dict[str, Any] = {"reason": reason}
        if percent is not None:  # as asked: JSON (so PostgreSQL) holds no NaN or infinity
            detail["traffic_percent"] = percent if math.isfinite(percent) else str(percent)
        with self._refusals_audited(actor, stage.value, target, detail):
            if stage is Stage.CANARY:
                percent = check_percent(percent)
            self._may_challenge(self.get(name, version), stage, percent)
            evidence = self._challenger_artifact(name, version, actor)
            try:
                with self.session() as session:
                    row = self._locked(session, name, version)
                    self._may_challenge(row, stage, percent)
                    production = session.scalar(select(ModelVersion).where(
                        ModelVersion.name == name, ModelVersion.stage == Stage.PRODUCTION.value,
                    ).with_for_update())
                    if production is None:
                        raise Conflict(f"model {name} has no production version for {version} "
                                       f"to challenge: promote a first version instead")
                    other = session.scalar(self._challenger_query(name).where(
                        ModelVersion.version != version).with_for_update())
                    if other is not None:
                        raise Conflict(another_challenger(name, other))
                    evidence.update(
                        production=production.version,
                        same_fingerprint_as_production=(current_fingerprint(row.contract)
                                                        == current_fingerprint(production.contract)),
                        traffic_percent=percent, previous_traffic_percent=row.traffic_percent)
                    self._move(session, row, stage, actor, reason, evidence, False)
                    row.traffic_percent = percent
                    session.add(self._event(actor, stage.value, target, "done",
                                            {**detail, "production": production.version}))
                    return row
            except IntegrityError as exc:  # the one-challenger index: a concurrent call won
                raise Conflict(f"another challenger of {name} committed first; nothing "
                               f"changed ({' '.join(str(exc.orig).split())})") from exc

    @staticmethod
    def _may_challenge(row: ModelVersion, stage: Stage, percent: float | None) -> None:
        """Refused unless ``row`` can move into the challenger ``stage`` (at ``percent``)."""
        where = f"model {row.name} version {row.version}"
        if row.stage == Stage.PRODUCTION.value:
            raise Conflict(f"{where} is already production: only a candidate can challenge it")
        if row.stage == Stage.ARCHIVED.value:
            raise Conflict(f"{where} is archived: only a candidate can be rolled out")
        if row.stage == stage.value == Stage.SHADOW.value:
            raise Conflict(f"{where} is already the shadow")
        if row.stage == stage.value and row.traffic_percent == percent:
            raise Conflict(f"{where} is already the canary at {percent:g}%")

    def _challenger_artifact(self, name: str, version: str, actor: str) -> dict[str, Any]:
        """What the acceptance gate checks of an artefact before it is compared: a check
        process parsed it (now, if it never did), and its registered bytes parse here."""
        row = self.ensure_checked(name, version, actor)
        try:
            load_registered(row, self.limits)
        except ArtifactError as exc:
            raise ArtifactRefused(f"model {name} version {version} may not take traffic: "
                                  f"{exc}") from exc
        assert row.artifact_checked_at is not None
        return {"artifact_checked_at": row.artifact_checked_at.isoformat(),
                "sha256": row.sha256}

    @contextmanager
    def _refusals_audited(self, actor: str, action: str, target: str,
                          detail: dict[str, Any]) -> Iterator[None]:
        """A refused registry change leaves an audit event saying why, then is raised."""
        try:
            yield
        except RegistryError as exc:
            self.audit(actor, action, target, "refused", {**detail, "error": str(exc)})
            raise

    @staticmethod
    def _challenger_query(name: str) -> Any:
        return select(ModelVersion).where(
            ModelVersion.name == name,
            ModelVersion.stage.in_([s.value for s in CHALLENGER_STAGES]))

    @staticmethod
    def _known(session: Session, name: str) -> None:
        if session.scalar(select(ModelVersion.id).where(ModelVersion.name == name)
                          .limit(1)) is None:
            raise NotFound(f"no model named {name} is registered")

    @staticmethod
    def _rollback_target(session: Session, name: str, lock: bool) -> tuple[ModelVersion, str]:
        """The production version of ``name`` and the version it replaced."""
        query = select(ModelVersion).where(ModelVersion.name == name,
                                           ModelVersion.stage == Stage.PRODUCTION.value)
        current = session.scalar(query.with_for_update() if lock else query)
        if current is None:
            raise RegistryError(f"model {name} has no production version to roll back")
        promoted = session.scalar(
            select(StageTransition).where(
                StageTransition.model_version_id == current.id,
                StageTransition.to_stage == Stage.PRODUCTION.value,
            ).order_by(StageTransition.id.desc()).limit(1))
        previous_version = (promoted.evidence or {}).get("previous_production") \
            if promoted else None
        if previous_version is None:
            raise RegistryError(
                f"model {name} version {current.version} replaced no earlier production "
                "version: nothing to roll back to")
        return current, previous_version

    @staticmethod
    def _event(actor: str, action: str, target: str, outcome: str,
               detail: dict[str, Any] | None) -> AuditEvent:
        return AuditEvent(
            actor=clip(actor, 200), action=clip(action, 200),
            target=clip(target, AUDIT_TARGET_CHARS), outcome=clip(outcome, 200),
            detail={k: clip(v, AUDIT_TEXT_CHARS) if isinstance(v, str) else v
                    for k, v in (detail or {}).items()})

    @staticmethod
    def _locked(session: Session, name: str, version: str) -> ModelVersion:
        found = session.scalar(select(ModelVersion).where(
            ModelVersion.name == name, ModelVersion.version == version).with_for_update())
        if found is None:
            raise NotFound(f"model {name} has no version {version}")
        return found

    @staticmethod
    def _move(session: Session, row: ModelVersion, to: Stage, actor: str, reason: str,
              evidence: dict[str, Any], forced: bool) -> None:
        session.add(StageTransition(
            model_version_id=row.id, from_stage=row.stage, to_stage=to.value, actor=actor,
            reason=reason, forced=forced, evidence=evidence))
        row.stage = to.value
        if to is not Stage.CANARY:  # only a canary has a share of the traffic
            row.traffic_percent = None


def bootstrap_production(settings: Settings, directory: Path,
                         reason: str = "first production version") -> ModelVersion:
    """Migrate the database, register ``directory`` if it is not yet (its artefact checked),
    and make it production without the gate (recorded as forced): a first install, a
    fixture, a benchmark."""
    upgrade(settings.resolved_database_url)
    registry = Registry.from_settings(settings)
    try:
        contract = read_contract_file(directory)
        name, version = contract.feature_service, contract.version
        try:
            row = registry.ensure_checked(name, version)
        except NotFound:
            row = registry.register(directory)
        if row.stage != Stage.PRODUCTION.value:
            row = registry.force_promote(name, version, current_user(), reason,
                                         {"gate": "skipped (bootstrap)"})
        return row
    finally:
        registry.close()
