"""Hyperparameter search: Optuna over LightGBM on the time split's validation window.

``skewless experiment --trials N`` runs a seeded TPE search (Optuna's ``TPESampler``) with
median pruning through LightGBM's callback (``optuna-integration``): each trial trains on the
training window and is judged, round by round, on the validation window — never on the
holdout, which stays untouched until the best run is retrained and evaluated. Every trial is
recorded as an experiment run (``skewless.experiments``) as soon as it ends; the best run is
retrained on the training window (the same parameters, the same early stopping: the same
model) and registered as a candidate that names its run.

The same training set, seed and trial count give the same trials, the same pruning and the
same best parameters: the sampler is seeded, LightGBM is deterministic with a fixed thread
count, and trials run one at a time.

With ``SKEWLESS_MLFLOW_TRACKING_URI`` set, the experiment and each run are also logged to
MLflow as they are recorded (``training.mlflow_export``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import optuna
from optuna.trial import FrozenTrial, TrialState

from skewless.contract import FeatureSpec
from skewless.experiments import Experiment, ExperimentRun, Experiments, ExperimentState, RunState
from skewless.registry import Registry, current_user
from skewless.settings import Settings
from training.dataset import TrainingSet
from training.evaluation.plan import EvaluationPlan
from training.mlflow_export import Export, mlflow_exporter
from training.train import (
    EARLY_STOPPING_ROUNDS,
    MAX_ROUNDS,
    PARAMS,
    Matrices,
    Split,
    TrainResult,
    categories_of,
    dataset_identity,
    git_commit,
    library_versions,
    model_parameters,
    time_split,
    train_model,
)

# The gate's metric (higher is better) as LightGBM evaluates it per round.
LIGHTGBM_METRIC = {"roc_auc": "auc", "pr_auc": "average_precision"}
VALIDATION = "validation"
# Trials before the pruner may prune, and rounds of a trial before it is judged.
PRUNER_STARTUP_TRIALS = 5
PRUNER_WARMUP_ROUNDS = 10


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: its range, and whether it is searched on a log scale."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> float | int:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}


SEARCH_SPACE: dict[str, Dimension] = {
    "learning_rate": Dimension(0.01, 0.3, log=True),
    "num_leaves": Dimension(8, 256, log=True, integer=True),
    "min_data_in_leaf": Dimension(10, 1000, log=True, integer=True),
    "feature_fraction": Dimension(0.5, 1.0),
    "bagging_fraction": Dimension(0.5, 1.0),
    "lambda_l2": Dimension(1e-3, 30.0, log=True),
}


def search_settings(seed: int, metric: str, space: dict[str, Dimension]) -> dict[str, Any]:
    """What the experiment records of how it searched."""
    return {
        "sampler": {"name": "TPESampler", "seed": seed},
        "pruner": {"name": "MedianPruner", "n_startup_trials": PRUNER_STARTUP_TRIALS,
                   "n_warmup_steps": PRUNER_WARMUP_ROUNDS},
        "metric": {"name": metric, "lightgbm": LIGHTGBM_METRIC[metric], "window": VALIDATION,
                   "direction": "maximize"},
        "space": {name: d.to_json() for name, d in space.items()},
        "fixed": {k: v for k, v in PARAMS.items() if k not in space},
        "max_rounds": MAX_ROUNDS, "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
    }


class _Steps:
    """A LightGBM callback keeping the validation metric of every round."""

    order = 5  # before early stopping and pruning end the training

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.values: list[float] = []

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        for result in env.evaluation_result_list or []:
            data, name, value = result[0], result[1], result[2]
            if data == VALIDATION and name == self.metric:
                self.values.append(round(float(value), 6))


def search(ts: TrainingSet, split: Split, trials: int, seed: int, metric: str = "roc_auc",
           on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
           space: dict[str, Dimension] | None = None) -> optuna.Study:
    """Optuna's study over ``space`` (default ``SEARCH_SPACE``): ``trials`` trials, one at a
    time, each trained on ``split.train`` and judged on ``split.validation``. A trial that
    raises is recorded as failed (its error in the user attribute ``error``) and the search
    goes on."""
    space = space or SEARCH_SPACE
    from optuna_integration import LightGBMPruningCallback

    features: list[FeatureSpec] = ts.service.features
    matrices = Matrices.of(split, features, categories_of(split.train, features),
                           ts.label_column)
    lgb_metric = LIGHTGBM_METRIC[metric]

    def objective(trial: optuna.Trial) -> float:
        chosen = {name: d.suggest(trial, name) for name, d in space.items()}
        params = {**model_parameters(features, seed, chosen), "metric": lgb_metric}
        steps = _Steps(lgb_metric)
        train_set, valid_set = matrices.datasets()  # binned for this trial, as train_model does
        try:
            booster = lgb.train(
                params, train_set, num_boost_round=MAX_ROUNDS, valid_sets=[valid_set],
                valid_names=[VALIDATION],
                callbacks=[steps, lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False),
                           LightGBMPruningCallback(trial, lgb_metric, valid_name=VALIDATION)],
            )
        except optuna.TrialPruned:
            trial.set_user_attr("steps", {lgb_metric: steps.values})
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            trial.set_user_attr("steps", {lgb_metric: steps.values})
            raise
        trial.set_user_attr("steps", {lgb_metric: steps.values})
        trial.set_user_attr("best_iteration", booster.best_iteration)
        # The rounds trained (the booster returned keeps only those up to the best one).
        trial.set_user_attr("rounds", len(steps.values))
        value = float(booster.best_score[VALIDATION][lgb_metric])
        if not math.isfinite(value):
            raise ValueError(f"validation {metric} is {value}")
        return value

    # A failed trial is recorded with its error (and the CLI prints it): no traceback here.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                           n_warmup_steps=PRUNER_WARMUP_ROUNDS),
    )
    study.optimize(objective, n_trials=trials, n_jobs=1, catch=(Exception,),
                   callbacks=[on_trial] if on_trial else None)
    return study


_STATES = {TrialState.COMPLETE: RunState.COMPLETE, TrialState.PRUNED: RunState.PRUNED,
           TrialState.FAIL: RunState.FAILED}


def run_fields(trial: FrozenTrial) -> dict[str, Any]:
    """An ended trial as an experiment run's columns."""
    started = trial.datetime_start or datetime.now(UTC)
    finished = trial.datetime_complete or datetime.now(UTC)
    steps = trial.user_attrs.get("steps", {})
    metrics = {k: trial.user_attrs[k] for k in ("best_iteration", "rounds")
               if k in trial.user_attrs}
    metrics["rounds"] = metrics.get("rounds", max((len(v) for v in steps.values()), default=0))
    return {
        "number": trial.number, "state": _STATES.get(trial.state, RunState.FAILED).value,
        "params": dict(trial.params), "value": trial.value, "metrics": metrics,
        "steps": steps, "started_at": started.astimezone(UTC),
        "finished_at": finished.astimezone(UTC),
        "duration_seconds": (finished - started).total_seconds(),
        "error": trial.user_attrs.get("error"),
    }


def importances(study: optuna.Study, seed: int) -> dict[str, float] | None:
    """Optuna's parameter importances (fANOVA, seeded); None with fewer than two complete
    trials."""
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {name: round(float(value), 6) for name, value in found.items()}


@dataclass
class ExperimentResult:
    experiment: Experiment
    best: ExperimentRun
    model: TrainResult
    seconds: float
    mlflow: Export  # where the runs were also logged (nothing without the setting)


def run_experiment(settings: Settings, dataset_path: Path, trials: int, seed: int | None = None,
                   name: str | None = None,
                   on_run: Callable[[dict[str, Any]], None] | None = None,
                   space: dict[str, Dimension] | None = None) -> ExperimentResult:
    """Search, record every trial, retrain the best on the training window and register it
    as a candidate naming its run."""
    space = space or SEARCH_SPACE
    seed = settings.seed if seed is None else seed
    metric = settings.gate_metric
    ts = TrainingSet.read(dataset_path)
    split = time_split(ts, settings.holdout_days, settings.validation_days)
    sha256, rows = dataset_identity(dataset_path)
    exporter = mlflow_exporter(settings, ts.service.feature_service)  # reached before the search
    started = time.perf_counter()
    with Experiments.from_settings(settings) as store, Registry.from_settings(settings) as registry:
        experiment = store.start(
            name=name or f"{ts.service.feature_service} {datetime.now(UTC):%Y-%m-%d %H:%M:%S}",
            feature_service=ts.service.feature_service, state=ExperimentState.RUNNING.value,
            metric=metric, seed=seed, trials=trials, search=search_settings(seed, metric, space),
            dataset_uri=str(dataset_path.resolve()), dataset_sha256=sha256, dataset_rows=rows,
            windows=split.windows, git_commit=git_commit(), libraries=library_versions(),
            created_by=current_user(),
        )
        exporter.start(experiment)
        recorded: dict[int, ExperimentRun] = {}

        def record(study: optuna.Study, trial: FrozenTrial) -> None:
            fields = run_fields(trial)
            recorded[trial.number] = store.record_run(experiment.id, **fields)
            exporter.log_run(recorded[trial.number])
            if on_run is not None:
                on_run({**fields, "id": recorded[trial.number].id})

        try:
            study = search(ts, split, trials, seed, metric, on_trial=record, space=space)
            complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
            if not complete:
                raise RuntimeError(f"none of the {trials} trials completed: see the runs' "
                                   f"errors (skewless runs list {experiment.id})")
            best = recorded[study.best_trial.number]
            model = train_model(
                ts, settings.model_dir, settings.holdout_days, settings.validation_days,
                seed=seed, truth_path=settings.resolved_truth_path, dataset_path=dataset_path,
                params=dict(study.best_trial.params),
                experiment_run={"id": best.id, "experiment": experiment.id,
                                "number": best.number},
                evaluation=EvaluationPlan.from_settings(settings),
            )
            row = registry.register(model.directory, reason=f"best run {best.id} of "
                                    f"experiment {experiment.id}")
            holdout = model.holdout.to_json()
            store.finish(experiment.id, state=ExperimentState.COMPLETE.value,
                         best_run_number=best.number, importances=importances(study, seed),
                         model_version=row.version, holdout=holdout)
        except BaseException as exc:
            store.finish(experiment.id, state=ExperimentState.FAILED.value,
                         error=f"{type(exc).__name__}: {exc}"[:2000])
            exporter.fail(f"{type(exc).__name__}: {exc}")
            raise
        finished = store.get(experiment.id)
        exporter.finish(finished, model)
        return ExperimentResult(finished, best, model, time.perf_counter() - started, exporter)
