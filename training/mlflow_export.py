"""Runs mirrored to MLflow, for teams that track their models there.

When ``SKEWLESS_MLFLOW_TRACKING_URI`` is set (and the ``mlflow`` extra installed), what
``skewless experiment`` records in the metadata database is also logged to that MLflow
tracking server; unset, MLflow is never imported. The metadata database stays
the record: MLflow gets a copy, laid out the way MLflow users read runs.

* **One MLflow experiment per feature service** (``SKEWLESS_MLFLOW_EXPERIMENT``, by default
  the feature service's name, created when missing). A feature service is one model's inputs
  (``fraud_model_v1``): every search of that model lands in one table, comparable across
  searches, while a new feature service version starts a new one.
* **A parent run per Skewless experiment** (one search), named as the experiment: the
  search's settings as parameters (seed, trials, metric, sampler, pruner, rounds, the fixed
  LightGBM parameters, the time windows), ``skewless.*`` tags (experiment id, feature
  service, data set sha256, git commit). When the search ends: the best run's
  ``validation_<metric>``, the registered model's ``holdout_*`` metrics, Optuna's
  ``importance_<parameter>``, the model version, and ``experiment.json`` (what
  ``skewless runs show`` prints of the experiment).
* **A nested child run per trial** (``trial N``), logged as the trial ends: its searched
  parameters; ``validation_<lightgbm metric>`` per boosting round (step = round, from 1);
  ``validation_<metric>`` (its best round), ``best_iteration``, ``rounds``,
  ``duration_seconds``; tags ``skewless.state`` (complete, pruned, failed), ``skewless.run_id``
  and the parent's; its MLflow status FINISHED, KILLED (pruned) or FAILED, with the start and
  end the database holds.
* **The model on the best child run**: the registered model's ``model.txt`` and
  ``contract.json`` under ``model/`` (the best trial's parameters retrained: the same model),
  its ``holdout_*`` metrics and version.

An MLflow that cannot be reached, or refuses the experiment, when the command starts stops it
before anything is trained (:class:`MlflowUnavailable`, naming the URI). One that fails later
costs no Skewless record: the failure is logged as a warning, nothing more is sent to MLflow
for that command (one failing call, not one per trial), the parent run is marked failed if
MLflow still answers, and the command completes. How long an unreachable server is retried
is MLflow's own setting (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from skewless.artifact import CONTRACT_FILE, MODEL_FILE
from skewless.errors import InvalidInput, Unavailable
from skewless.experiments import Experiment, ExperimentRun, RunState
from skewless.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from training.train import TrainResult

logger = logging.getLogger(__name__)

EXTRA = "pip install 'skewless[mlflow]'"
ARTIFACT_DIR = "model"
# MLflow's limits: entities per log_batch call (of which parameters, and tags, at most
# BATCH_NAMED each), and characters of a tag value.
BATCH = 1000
BATCH_NAMED = 100
TAG_CHARS = 5000
_STATUS = {RunState.COMPLETE.value: "FINISHED", RunState.PRUNED.value: "KILLED",
           RunState.FAILED.value: "FAILED"}


class MlflowUnavailable(Unavailable):
    """MLflow is set but cannot be used: the command stops before it trains anything."""


def _password(uri: str) -> str | None:
    try:
        return urlsplit(uri).password or None
    except ValueError:
        return None


def redacted(uri: str) -> str:
    """``uri`` with the password it may hold (``https://user:pass@host``) hidden."""
    if _password(uri) is None:
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _scrubbed(text: str, uri: str) -> str:
    """``text`` (an error of MLflow's, which may quote the URL) without ``uri``'s password."""
    password = _password(uri)
    return text.replace(password, "***") if password else text


def _ms(moment: datetime | None) -> int:
    """Milliseconds since the epoch, as MLflow counts; a naive time is UTC."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _numbers(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of ``values`` (lists, texts and None left out), keys prefixed."""
    return {f"{prefix}{key}": float(value) for key, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value)}


class Export:
    """No MLflow tracking URI: every call does nothing, and nothing imports MLflow."""

    error: str | None = None

    def start(self, experiment: Experiment) -> None:
        """A search started (its row just written)."""

    def log_run(self, run: ExperimentRun) -> None:
        """A trial ended (its row just written)."""

    def finish(self, experiment: Experiment, model: TrainResult) -> None:
        """The search ended and its best run's model was registered."""

    def fail(self, error: str) -> None:
        """The search stopped with ``error``."""

    def describe(self) -> str | None:
        """Where the runs went, or why they stopped going there; None without MLflow."""
        return None


class MlflowExport(Export):
    """Logs to one MLflow experiment through ``client``; see the module's docstring."""

    def __init__(self, client: MlflowClient, uri: str, experiment_id: str,
                 experiment_name: str) -> None:
        self.client = client
        self.uri = uri
        self.experiment_id = experiment_id
        self.experiment_name = experiment_name
        self.parent: str | None = None  # the MLflow run of the Skewless experiment
        self.children: dict[int, str] = {}  # trial number → its MLflow run
        self.tags: dict[str, str] = {}  # set on every run of the Skewless experiment
        self.metric = ""  # the experiment's, as its runs' final value is named

    # The calls the commands make: none raises -------------------------------------------------

    def start(self, experiment: Experiment) -> None:
        self._attempt("starting the parent run", lambda: self._start(experiment))

    def log_run(self, run: ExperimentRun) -> None:
        self._attempt(f"logging trial {run.number}", lambda: self._log_run(run))

    def finish(self, experiment: Experiment, model: TrainResult) -> None:
        if self.error is None:
            self._attempt("logging the best run's model", lambda: self._finish(experiment, model))
        if self.error is not None:
            self._close_failed(self.error)

    def fail(self, error: str) -> None:
        if self.error is None:
            self._attempt("marking the parent run failed", lambda: self._terminate_failed(error))
        else:
            self._close_failed(self.error)

    def describe(self) -> str:
        where = f"MLflow {redacted(self.uri)}, experiment {self.experiment_name!r} " \
                f"(id {self.experiment_id})"
        if self.error is not None:
            return f"{where}: logging stopped ({self.error}); the metadata database holds " \
                   "every run"
        run = self.parent
        if run is None:
            return where
        shown = redacted(self.uri)
        if shown.startswith(("http://", "https://")):  # the tracking UI's page of the run
            return f"{where}, run {run}: {shown.rstrip('/')}/#/experiments/" \
                   f"{self.experiment_id}/runs/{run}"
        return f"{where}, run {run}"

    # What they send ------------------------------------------------------------------------

    def _attempt(self, what: str, call: Callable[[], None]) -> None:
        """``call``, unless an earlier one failed; a failure is warned about, never raised."""
        if self.error is not None:
            return
        try:
            call()
        except Exception as exc:  # any failure of MLflow must not stop the command
            self.error = _scrubbed(f"{what}: {type(exc).__name__}: {exc}", self.uri)[:2000]
            logger.warning("MLflow at %s failed while %s; nothing more is sent there for this "
                           "command, which goes on (the metadata database holds every run)",
                           redacted(self.uri), self.error)

    def _start(self, experiment: Experiment) -> None:
        self.metric = experiment.metric
        self.tags = {
            "skewless.experiment_id": str(experiment.id),
            "skewless.feature_service": experiment.feature_service,
            "skewless.dataset_sha256": experiment.dataset_sha256,
            **_source("skewless experiment", experiment.git_commit),
            "mlflow.user": experiment.created_by,
        }
        search = experiment.search
        params: dict[str, Any] = {
            "seed": experiment.seed, "trials": experiment.trials, "metric": experiment.metric,
            "sampler": search["sampler"]["name"], "pruner": search["pruner"]["name"],
            "max_rounds": search["max_rounds"],
            "early_stopping_rounds": search["early_stopping_rounds"],
            "dataset_rows": experiment.dataset_rows,
            **{f"fixed.{k}": v for k, v in search["fixed"].items()},
            **{f"window.{k}": v for k, v in experiment.windows.items()},
        }
        run = self.client.create_run(
            self.experiment_id, start_time=_ms(experiment.started_at), run_name=experiment.name,
            tags={**self.tags, "skewless.state": "running",
                  "skewless.dataset_uri": experiment.dataset_uri})
        self.parent = run.info.run_id
        self._log(self.parent, params=params)

    def _log_run(self, run: ExperimentRun) -> None:
        if self.parent is None:
            return
        child = self.client.create_run(
            self.experiment_id, start_time=_ms(run.started_at), run_name=f"trial {run.number}",
            tags={**self.tags, "mlflow.parentRunId": self.parent,
                  "skewless.run_id": str(run.id), "skewless.trial": str(run.number),
                  "skewless.state": run.state,
                  **({"skewless.error": run.error[:TAG_CHARS]} if run.error else {})})
        run_id = self.children[run.number] = child.info.run_id
        finals = _numbers({**run.metrics, "duration_seconds": run.duration_seconds,
                           f"validation_{self.metric}": run.value})
        stamp = _ms(run.finished_at)
        self._log(run_id, params=run.params, metrics=finals, timestamp=stamp,
                  series={f"validation_{name}": values for name, values in run.steps.items()})
        self.client.set_terminated(run_id, _STATUS.get(run.state, "FAILED"), end_time=stamp)

    def _finish(self, experiment: Experiment, model: TrainResult) -> None:
        if self.parent is None:
            return
        best = experiment.best_run
        holdout = _numbers(model.holdout.to_json(), "holdout_")
        version = model.contract.version
        tags = {"skewless.model_version": version}
        if best is not None and best.number in self.children:
            child = self.children[best.number]
            self._log_model(child, model.directory)
            self._log(child, metrics=holdout, tags={**tags, "skewless.best": "true"})
            tags["skewless.best_run_id"] = str(best.id)
            tags["skewless.best_mlflow_run_id"] = child
        parent_metrics = {**holdout, **_numbers(experiment.importances or {}, "importance_")}
        if best is not None and best.value is not None:
            parent_metrics[f"validation_{experiment.metric}"] = best.value
        self._log(self.parent, metrics=parent_metrics,
                  tags={**tags, "skewless.state": experiment.state})
        self.client.log_dict(self.parent, experiment.details(), "experiment.json")
        self.client.set_terminated(self.parent, "FINISHED", end_time=_ms(experiment.finished_at))

    def _terminate_failed(self, error: str) -> None:
        if self.parent is None:
            return
        self._log(self.parent, tags={"skewless.state": "failed",
                                     "skewless.error": error[:TAG_CHARS]})
        self.client.set_terminated(self.parent, "FAILED")

    def _close_failed(self, error: str) -> None:
        """One try to leave the parent run failed rather than running forever; MLflow may be
        the reason for ``error``, so a failure here is only noted."""
        if self.parent is None:
            return
        try:
            self._log(self.parent, tags={"skewless.state": "incomplete",
                                         "skewless.export_error": error[:TAG_CHARS]})
            self.client.set_terminated(self.parent, "FAILED")
        except Exception as exc:  # the warning already went out
            logger.debug("could not mark the MLflow run %s failed: %s", self.parent,
                         _scrubbed(str(exc), self.uri))

    def _log_model(self, run_id: str, directory: Path) -> None:
        for name in (MODEL_FILE, CONTRACT_FILE):
            self.client.log_artifact(run_id, str(directory / name), ARTIFACT_DIR)

    def _log(self, run_id: str, params: dict[str, Any] | None = None,
             metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None,
             series: dict[str, list[float]] | None = None, timestamp: int | None = None) -> None:
        """Parameters, tags, final metrics and per-round series in as few calls as MLflow's
        batch limit allows."""
        from mlflow.entities import Metric, Param, RunTag

        stamp = timestamp if timestamp is not None else _ms(None)
        points: list[Metric] = [Metric(k, v, stamp, 0) for k, v in (metrics or {}).items()]
        for key, values in (series or {}).items():
            points += [Metric(key, float(v), stamp, step)
                       for step, v in enumerate(values, start=1)]
        given = [Param(k, _text(v)) for k, v in (params or {}).items()]
        labels = [RunTag(k, v) for k, v in (tags or {}).items()]
        while given or labels or points:
            p, given = given[:BATCH_NAMED], given[BATCH_NAMED:]
            t, labels = labels[:BATCH_NAMED], labels[BATCH_NAMED:]
            room = BATCH - len(p) - len(t)
            m, points = points[:room], points[room:]
            self.client.log_batch(run_id, metrics=m, params=p, tags=t)


def _source(command: str, commit: str | None) -> dict[str, str]:
    """The tags naming the code that ran: the command and, when known, its git commit (MLflow
    shows ``mlflow.source.git.commit``; ``skewless.git_commit`` keeps a ``-dirty`` mark)."""
    tags = {"mlflow.source.name": command}
    if commit:
        tags |= {"skewless.git_commit": commit,
                 "mlflow.source.git.commit": commit.removesuffix("-dirty")}
    return tags


def _text(value: Any) -> str:
    """A parameter's value as MLflow stores it: ``str`` of a scalar, JSON of the rest."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def mlflow_exporter(settings: Settings, feature_service: str) -> Export:
    """The export the settings ask for: none without ``mlflow_tracking_uri``; else an
    :class:`MlflowExport` to the feature service's MLflow experiment, reached now (created
    when missing) so that a wrong URI or a down server stops the command before it trains.

    Raises:
        InvalidInput: the URI is set but the ``mlflow`` extra is not installed, or the
            experiment is deleted in MLflow.
        MlflowUnavailable: MLflow cannot be reached or refuses the experiment.
    """
    uri = settings.mlflow_tracking_uri
    if not uri:
        return Export()
    shown = redacted(uri)
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError as exc:
        raise InvalidInput(
            f"SKEWLESS_MLFLOW_TRACKING_URI is set ({shown}) but MLflow's client is not "
            f"installed ({exc}): {EXTRA}, or unset it to record runs in the metadata database "
            "only") from exc
    name = settings.mlflow_experiment.replace("{feature_service}", feature_service)
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                created = client.create_experiment(
                    name, artifact_location=settings.mlflow_artifact_location,
                    tags={"skewless.feature_service": feature_service})
                found = client.get_experiment(created)
            except MlflowException:
                found = client.get_experiment_by_name(name)  # created meanwhile elsewhere
                if found is None:
                    raise
    except Exception as exc:
        unavailable = MlflowUnavailable(
            f"MLflow at {shown} (SKEWLESS_MLFLOW_TRACKING_URI) cannot be used: "
            + _scrubbed(f"{type(exc).__name__}: {exc}", uri)[:1500]
            + " — nothing was started; fix the URI or the server, or unset it to record runs "
            "in the metadata database only")
        # MLflow's own error quotes the URL: not chained when that shows a password.
        raise unavailable from (None if _password(uri) else exc)
    if found.lifecycle_stage != "active":
        raise InvalidInput(
            f"the MLflow experiment {name!r} (id {found.experiment_id}) at {shown} is deleted: "
            f"restore it in MLflow, or log to another one (SKEWLESS_MLFLOW_EXPERIMENT)")
    return MlflowExport(client, uri, found.experiment_id, name)
