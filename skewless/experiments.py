"""Experiment runs: every trial of a hyperparameter search, recorded in the metadata database.

An *experiment* is one search (``skewless experiment``): the data set it ran on (path,
sha256, rows), its time windows, the metric it maximised on the validation window, the seed,
the sampler and pruner, the code's git commit, the library versions, and — once done — its
best run, Optuna's parameter importances and the model version registered from it. Each
*experiment run* is one trial: its parameters, its metric per boosting round on the
validation window, its final metrics, its state (complete, pruned, failed), start, end and
duration. Runs are written as each trial ends, so a search that is stopped keeps what it
tried.

The tables are ``experiments`` and ``experiment_runs`` (migration 0004); a registered model
version names the run it came from (``model_versions.experiment_run_id``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload

from skewless.db import Base, MetadataStore, utcnow
from skewless.errors import InvalidInput
from skewless.settings import Settings


class RunState(StrEnum):
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"


class ExperimentState(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"  # searched, and the best run registered
    FAILED = "failed"  # stopped by an error (its runs so far are kept)


def _states(enum: type[StrEnum]) -> str:
    return ", ".join(f"'{s.value}'" for s in enum)


class ExperimentNotFound(InvalidInput):
    status_code = 404


class Experiment(Base):
    __tablename__ = "experiments"
    __table_args__ = (
        CheckConstraint(f"state IN ({_states(ExperimentState)})", name="ck_experiments_state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    feature_service: Mapped[str] = mapped_column(String(200), index=True)
    state: Mapped[str] = mapped_column(String(20), default=ExperimentState.RUNNING.value)
    metric: Mapped[str] = mapped_column(String(50))  # maximised on the validation window
    seed: Mapped[int] = mapped_column(Integer)
    trials: Mapped[int] = mapped_column(Integer)  # asked for
    search: Mapped[dict[str, Any]]  # sampler, pruner, search space, fixed parameters
    dataset_uri: Mapped[str] = mapped_column(Text)
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    dataset_rows: Mapped[int] = mapped_column(Integer)
    windows: Mapped[dict[str, Any]]
    git_commit: Mapped[str | None] = mapped_column(String(100))
    libraries: Mapped[dict[str, Any]]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(200))
    best_run_number: Mapped[int | None] = mapped_column(Integer)
    importances: Mapped[dict[str, Any] | None]  # Optuna's, by parameter
    model_version: Mapped[str | None] = mapped_column(String(100))  # registered from the best
    holdout: Mapped[dict[str, Any] | None]  # the registered model's holdout metrics
    error: Mapped[str | None] = mapped_column(Text)

    runs: Mapped[list[ExperimentRun]] = relationship(
        back_populates="experiment", order_by="ExperimentRun.number")

    def summary(self) -> dict[str, Any]:
        counts = {s.value: sum(r.state == s.value for r in self.runs) for s in RunState}
        best = self.best_run
        return {
            "id": self.id, "name": self.name, "feature_service": self.feature_service,
            "state": self.state, "metric": self.metric, "seed": self.seed,
            "trials": self.trials, "runs": counts, "best_run": best.id if best else None,
            "best_value": best.value if best else None,
            "model_version": self.model_version,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }

    def details(self) -> dict[str, Any]:
        return {
            **self.summary(), "search": self.search, "dataset": {
                "uri": self.dataset_uri, "sha256": self.dataset_sha256,
                "rows": self.dataset_rows},
            "windows": self.windows, "git_commit": self.git_commit,
            "libraries": self.libraries, "created_by": self.created_by,
            "importances": self.importances, "holdout": self.holdout, "error": self.error,
            "run_list": [r.summary() for r in self.runs],
        }

    @property
    def best_run(self) -> ExperimentRun | None:
        if self.best_run_number is None:
            return None
        return next((r for r in self.runs if r.number == self.best_run_number), None)


class ExperimentRun(Base):
    __tablename__ = "experiment_runs"
    __table_args__ = (
        UniqueConstraint("experiment_id", "number", name="uq_experiment_runs_number"),
        CheckConstraint(f"state IN ({_states(RunState)})", name="ck_experiment_runs_state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # the trial's number within the search
    state: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict[str, Any]]  # the searched parameters only
    value: Mapped[float | None] = mapped_column(Float)  # the metric, best round
    metrics: Mapped[dict[str, Any]]  # final figures: best iteration, rounds run, …
    steps: Mapped[dict[str, Any]]  # metric name → value per boosting round
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    duration_seconds: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)

    experiment: Mapped[Experiment] = relationship(back_populates="runs")

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "experiment": self.experiment_id, "number": self.number,
                "state": self.state, "value": self.value, "params": self.params,
                "metrics": self.metrics, "duration_seconds": round(self.duration_seconds, 3),
                "error": self.error}

    def details(self) -> dict[str, Any]:
        return {**self.summary(), "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat(), "steps": self.steps}


class Experiments(MetadataStore):
    """Writes and reads of experiments and their runs."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Experiments:
        return cls(settings.resolved_database_url).check_schema(InvalidInput)

    # Writes ------------------------------------------------------------------------------

    def start(self, **fields: Any) -> Experiment:
        experiment = Experiment(**fields)
        with self.session() as session:
            session.add(experiment)
        return experiment

    def record_run(self, experiment_id: int, **fields: Any) -> ExperimentRun:
        run = ExperimentRun(experiment_id=experiment_id, **fields)
        with self.session() as session:
            session.add(run)
        return run

    def finish(self, experiment_id: int, **fields: Any) -> None:
        with self.session() as session:
            experiment = session.get(Experiment, experiment_id)
            if experiment is None:
                raise ExperimentNotFound(f"no experiment {experiment_id}")
            for name, value in fields.items():
                setattr(experiment, name, value)
            experiment.finished_at = utcnow()

    # Reads -------------------------------------------------------------------------------

    def all(self, feature_service: str | None = None, steps: bool = True) -> list[Experiment]:
        """Every experiment with its runs; ``steps=False`` leaves the runs' values per round
        unread (a listing needs none, and they are most of a run's size)."""
        with self.reading() as session:
            runs = selectinload(Experiment.runs)
            query = select(Experiment).order_by(Experiment.id).options(
                runs if steps else runs.defer(ExperimentRun.steps, raiseload=True))
            if feature_service is not None:
                query = query.where(Experiment.feature_service == feature_service)
            return list(session.scalars(query))

    def get(self, experiment_id: int) -> Experiment:
        with self.reading() as session:
            experiment = session.get(Experiment, experiment_id)
            if experiment is None:
                raise ExperimentNotFound(f"no experiment {experiment_id}")
            experiment.runs  # noqa: B018
            return experiment

    def run(self, run_id: int) -> ExperimentRun:
        with self.reading() as session:
            run = session.get(ExperimentRun, run_id)
            if run is None:
                raise ExperimentNotFound(f"no experiment run {run_id}")
            return run

    def runs(self, run_ids: list[int]) -> list[ExperimentRun]:
        with self.reading() as session:
            found = {r.id: r for r in session.scalars(
                select(ExperimentRun).where(ExperimentRun.id.in_(run_ids)))}
        missing = [i for i in run_ids if i not in found]
        if missing:
            raise ExperimentNotFound(f"no experiment run {', '.join(map(str, missing))}")
        return [found[i] for i in run_ids]
