"""LightGBM on a point-in-time training set, split by time, saved with its contract."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from dataclasses import dataclass, replace
from datetime import timedelta
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from skewless.artifact import save_artifact
from skewless.contract import (
    Baseline,
    ContractMetrics,
    Evaluation,
    FeatureSpec,
    Inclusion,
    ModelContract,
    Slices,
    TrainingInfo,
)
from skewless.errors import InvalidInput
from skewless.settings import PROJECT_ROOT
from training.dataset import TrainingSet
from training.evaluation.baselines import evaluate_baselines
from training.evaluation.decision import choose_decision, decides
from training.evaluation.metrics import baseline_sample, baseline_statistics, evaluate_scores
from training.evaluation.plan import EvaluationPlan, event_columns
from training.evaluation.slices import Subgroup, slice_metrics
from training.evaluation.slices import inclusion as included

PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbosity": -1,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
}
class TrainingError(InvalidInput):
    """The training set cannot be split or trained on as it is; the message says what to do."""


MAX_ROUNDS = 2000
EARLY_STOPPING_ROUNDS = 50
LIBRARIES = ("feast", "lightgbm", "optuna", "pandas", "pyarrow", "duckdb", "numpy", "scikit-learn")


@dataclass
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    windows: dict[str, str]


def time_split(ts: TrainingSet, holdout_days: float, validation_days: float) -> Split:
    """Train on earlier events, validate and hold out on the two latest windows."""
    df, col = ts.frame, ts.timestamp_column
    cutoff = pd.Timestamp(ts.cutoff)
    holdout_from = cutoff - timedelta(days=holdout_days)
    validation_from = holdout_from - timedelta(days=validation_days)
    split = Split(
        train=df[df[col] < validation_from],
        validation=df[(df[col] >= validation_from) & (df[col] < holdout_from)],
        holdout=df[df[col] >= holdout_from],
        windows={
            "train_from": df[col].min().isoformat(),
            "validation_from": validation_from.isoformat(),
            "holdout_from": holdout_from.isoformat(),
            "holdout_to": cutoff.isoformat(),
        },
    )
    for name in ("train", "validation", "holdout"):
        part = getattr(split, name)
        if part.empty or part[ts.label_column].nunique() < 2:
            raise TrainingError(
                f"the {name} window has {len(part)} rows and needs both classes; "
                "generate more days or shorten the holdout/validation windows"
            )
    return split


def categories_of(df: pd.DataFrame, features: list[FeatureSpec]) -> dict[str, list[str]]:
    """The category list of each categorical feature, fixed on the training rows."""
    return {
        f.name: sorted(df[f.name].dropna().astype(str).unique().tolist())
        for f in features
        if f.is_categorical
    }


def to_matrix(
    df: pd.DataFrame, features: list[FeatureSpec], categories: dict[str, list[str]]
) -> pd.DataFrame:
    """The model's input frame: floats (NaN for null) and fixed-category columns."""
    columns: dict[str, Any] = {}
    for f in features:
        if f.is_categorical:
            columns[f.name] = pd.Categorical(df[f.name].astype(object), categories=categories[f.name])
        else:
            columns[f.name] = df[f.name].astype("float64").to_numpy(na_value=np.nan)
    return pd.DataFrame(columns, index=df.index)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def dataset_identity(path: Path) -> tuple[str, int]:
    """A training set file's sha256 and row count: what names it whatever its path."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest(), pq.ParquetFile(path).metadata.num_rows


def git_commit(directory: Path = PROJECT_ROOT) -> str | None:
    """The commit of the checkout the code runs from, ``-dirty`` when it has uncommitted
    changes to tracked files; None outside a git checkout (an installed package)."""
    try:
        head = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(directory), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    dirty = status.returncode == 0 and status.stdout.strip() != ""
    return head.stdout.strip() + ("-dirty" if dirty else "")


def model_parameters(features: list[FeatureSpec], seed: int,
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """LightGBM's parameters: the fixed ones, a search's choices over them, the seed and the
    features' monotone constraints."""
    params = {**PARAMS, **(overrides or {}), "seed": seed}
    if any(f.monotone for f in features):
        params["monotone_constraints"] = [f.monotone for f in features]
        params["monotone_constraints_method"] = "advanced"
    return params


@dataclass(frozen=True)
class Matrices:
    """A split's train and validation windows as the model's input frames and labels."""

    train: pd.DataFrame
    train_label: np.ndarray
    validation: pd.DataFrame
    validation_label: np.ndarray

    @classmethod
    def of(cls, split: Split, features: list[FeatureSpec], categories: dict[str, list[str]],
           label: str) -> Matrices:
        return cls(to_matrix(split.train, features, categories), split.train[label].to_numpy(),
                   to_matrix(split.validation, features, categories),
                   split.validation[label].to_numpy())

    def datasets(self) -> tuple[lgb.Dataset, lgb.Dataset]:
        """New LightGBM train and validation sets (validation binned as train). New for
        every training: LightGBM bins a set for the parameters of its first training."""
        train_set = lgb.Dataset(self.train, label=self.train_label, free_raw_data=False)
        valid_set = lgb.Dataset(self.validation, label=self.validation_label,
                                reference=train_set)
        return train_set, valid_set


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that have a value (a contract part keeps only the keys set)."""
    return {k: v for k, v in values.items() if v is not None}


@dataclass
class TrainResult:
    directory: Path
    contract: ModelContract
    booster: lgb.Booster

    @property
    def holdout(self) -> Evaluation:
        """The holdout's metrics, as stored in the contract."""
        assert self.contract.metrics is not None
        return self.contract.metrics.holdout


def holdout_breakdown(ts: TrainingSet, holdout: pd.DataFrame, scores: np.ndarray,
                      plan: EvaluationPlan) -> tuple[Slices, Inclusion | None]:
    """The holdout's ROC AUC with its interval, overall (always: the monitor holds online
    figures against it) and per slice, and the inclusion groups' rates when the plan names
    any; their columns come from the holdout rows or the label events."""
    specs = [Subgroup.parse(s) for s in plan.slices]
    columns = event_columns(holdout, ts.id_column, plan.label_source,
                            [*(s.column for s in specs), *plan.groups])
    y = holdout[ts.label_column].to_numpy()
    slices = slice_metrics(y, scores, columns, specs, plan.bootstrap, plan.seed)
    inclusion = (included(y, scores, plan.threshold, columns[list(plan.groups)],
                          plan.bootstrap, plan.seed) if plan.groups else None)
    return slices, inclusion


def train_model(
    ts: TrainingSet,
    model_dir: Path,
    holdout_days: float,
    validation_days: float,
    seed: int = 7,
    truth_path: Path | None = None,
    dataset_path: Path | None = None,
    params: dict[str, Any] | None = None,
    experiment_run: dict[str, int] | None = None,
    evaluation: EvaluationPlan | None = None,
) -> TrainResult:
    """Fit, early-stop on validation, evaluate on the holdout, save model + contract.

    ``params`` overrides the fixed parameters (a search's best run's, named by
    ``experiment_run``). ``evaluation`` says what is evaluated beside the holdout's overall
    metrics (slices, groups, the decision's costs); without it, only those. The same training
    set, seed and parameters give the same model text, byte for byte (LightGBM runs
    deterministic, its thread count fixed).
    """
    features = ts.service.features
    split = time_split(ts, holdout_days, validation_days)
    categories = categories_of(split.train, features)
    label = ts.label_column
    train_set, valid_set = Matrices.of(split, features, categories, label).datasets()
    params = model_parameters(features, seed, params)
    identity = dataset_identity(dataset_path) if dataset_path else (None, None)
    booster = lgb.train(
        params, train_set, num_boost_round=MAX_ROUNDS, valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    scores = np.asarray(booster.predict(
        to_matrix(split.holdout, features, categories), num_iteration=booster.best_iteration
    ))
    bayes = None
    if truth_path is not None and truth_path.is_file():
        truth = pd.read_parquet(truth_path)
        joined = split.holdout[[ts.id_column]].merge(truth, on=ts.id_column, how="left")
        if joined.iloc[:, 1].notna().all():
            bayes = joined.iloc[:, 1].to_numpy()
    metrics = evaluate_scores(split.holdout[label].to_numpy(), scores, bayes)
    evaluation = evaluation or EvaluationPlan()
    baselines = evaluate_baselines(split.train, split.holdout, features, label, bayes, seed)
    decision = choose_decision(
        evaluation, split.validation, np.asarray(booster.predict(
            to_matrix(split.validation, features, categories),
            num_iteration=booster.best_iteration)),
        split.holdout, scores, ts.id_column, label) if decides(evaluation) else None
    if decision is not None:  # the groups' rates are of the decisions the model will make
        evaluation = replace(evaluation, threshold=decision.threshold)
    slices, inclusion = holdout_breakdown(ts, split.holdout, scores, evaluation)
    contract = ModelContract(
        **ts.service.to_json(),
        categories=categories,
        label=label,
        training=TrainingInfo(
            dataset=str(dataset_path) if dataset_path else None,
            cutoff=ts.cutoff.isoformat(),
            windows=split.windows,
            rows={
                "train": len(split.train),
                "validation": len(split.validation),
                "holdout": len(split.holdout),
            },
            positives={
                "train": int(split.train[label].sum()),
                "validation": int(split.validation[label].sum()),
                "holdout": int(split.holdout[label].sum()),
            },
            **_given(dataset_sha256=identity[0], dataset_rows=identity[1],
                     git_commit=git_commit(), experiment_run=experiment_run),
        ),
        parameters={**params, "num_boost_round": MAX_ROUNDS,
                    "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
                    "best_iteration": booster.best_iteration},
        metrics=ContractMetrics(holdout=Evaluation(**metrics), baselines=baselines,
                                slices=slices, inclusion=inclusion),
        **_given(decision=decision),
        baseline=Baseline(
            features=baseline_statistics(split.train, features),
            holdout_scores={
                "quantiles": {str(q): float(v) for q, v in
                              zip((0.1, 0.25, 0.5, 0.75, 0.9, 0.99),
                                  np.quantile(scores, (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)),
                                  strict=True)},
                "mean": float(scores.mean()),
                "sample": baseline_sample(scores),
            },
        ),
        feature_importance_gain=dict(
            zip(booster.feature_name(),
                (float(v) for v in booster.feature_importance("gain")), strict=True)
        ),
        libraries=library_versions(),
        **_given(staleness=evaluation.staleness),
    )
    directory = save_artifact(booster, contract, model_dir)
    return TrainResult(directory=directory, contract=contract, booster=booster)
