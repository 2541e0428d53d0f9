"""`skewless backtest`: train at past cut-offs, score the days that follow, see the model age.

The cut-offs are c_k = T − k·step for k = 1..n, where T is the latest event whose label is
known now, minus the horizon: every evaluation window [c_k, c_k + horizon) ends a step or more
before the latest labelled event. (Labels of the last days before it may still be arriving;
the later the event, the likelier, so the step is a margin as well.)

One point-in-time retrieval serves every cut-off: the label events known now, each with the
features known at its own time. The training set of c_k is its rows whose event happened
before c_k and whose label had arrived by then — exactly the rows ``build_training_set(settings,
cutoff=c_k)`` returns, with the same features, since an event's point-in-time features do not
depend on the cut-off, only which events are in the set. Training then splits it by time as
``skewless train`` does: train, validation and holdout windows all end at c_k. Every model is
trained with the fixed parameters into a scratch directory and never registered.

The evaluation set is the rows from the earliest cut-off on, with the labels known now: the
model of c_k scores its events in [c_k, c_k + horizon), each bucketed by its age, the whole
days from c_k to the event. A point of the decay curve is the mean over the cut-offs of each
model's metric on its own events of that age: a served model ranks its own events, and
pooling the scores of several models into one ranking would also measure how their score
scales differ. Its 95% interval is the bootstrap's (rows resampled within each cut-off).

The maximum useful age is the first age whose metric is below the fresh model's (age 0) by
more than the margin; when no age falls, the horizon, as a lower bound.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import ValidationError
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score

from skewless.contract import Staleness
from skewless.errors import InvalidInput
from skewless.files import write_json_atomic, write_text_atomic
from skewless.reports.backtest import AgePoint, BacktestReport, CutoffRun

if TYPE_CHECKING:
    from skewless.settings import Settings
    from training.dataset import TrainingSet

logger = logging.getLogger(__name__)
DAY_SECONDS = 86_400.0
AGGREGATION = "mean over cut-offs of each model's metric on its own events"


class BacktestError(InvalidInput):
    """Too little labelled history for the cut-offs asked for; the message says what to do."""


@dataclass(frozen=True)
class Cell:
    """One cut-off's labelled events at one age, as its model scored them."""

    y: np.ndarray
    p: np.ndarray

    @property
    def judged(self) -> bool:
        return self.y.size > 0 and 0 < int(self.y.sum()) < self.y.size


def backtest_dir(settings: Settings) -> Path:
    return settings.var_dir / "backtest"


def report_path(settings: Settings) -> Path:
    """The latest backtest report of the settings' feature service."""
    return backtest_dir(settings) / f"{settings.feature_service}.json"


def cutoffs_for(latest: datetime, cutoffs: int, step_days: float,
                horizon_days: float) -> list[datetime]:
    """c_k = (latest − horizon) − k·step for k = 1..cutoffs, earliest first."""
    anchor = latest - timedelta(days=horizon_days)
    return sorted(anchor - k * timedelta(days=step_days) for k in range(1, cutoffs + 1))


def known_at(ts: TrainingSet, cutoff: datetime, label_timestamp_column: str) -> TrainingSet:
    """The rows of ``ts`` a team had at ``cutoff``: events before it, labels arrived by it."""
    from training.dataset import TrainingSet

    frame = ts.frame
    stamp = pd.Timestamp(cutoff)
    keep = (frame[ts.timestamp_column] < stamp) & (frame[label_timestamp_column] <= stamp)
    return TrainingSet(frame=frame[keep].reset_index(drop=True), service=ts.service,
                       cutoff=cutoff, label_column=ts.label_column,
                       timestamp_column=ts.timestamp_column, id_column=ts.id_column,
                       origin=ts.origin)


def metric_value(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    if metric == "roc_auc":
        return float(_rank_auc(y[None, :], p[None, :])[0])
    return float(average_precision_score(y, p))


def _rank_auc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``y``/``p`` (the Mann-Whitney statistic; NaN for one class)."""
    ranks = rankdata(p, axis=1)
    positives = y.sum(axis=1)
    negatives = y.shape[1] - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = ((ranks * y).sum(axis=1) - positives * (positives + 1) / 2) / (positives
                                                                              * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def bootstrap_values(metric: str, cell: Cell, draws: int,
                     rng: np.random.Generator) -> np.ndarray:
    """The metric on ``draws`` resamples of the cell's rows (NaN where one class is left)."""
    index = rng.integers(0, cell.y.size, size=(draws, cell.y.size))
    y, p = cell.y[index], cell.p[index]
    if metric == "roc_auc":
        return _rank_auc(y, p)
    out = np.full(draws, np.nan)
    for i in range(draws):
        if 0 < y[i].sum() < y[i].size:
            out[i] = average_precision_score(y[i], p[i])
    return out


def age_point(age: int, cells: list[Cell], metric: str, draws: int,
              rng: np.random.Generator) -> AgePoint:
    """One point of the curve: the mean of the judged cut-offs' metrics and its interval."""
    values = [metric_value(metric, c.y, c.p) if c.judged else None for c in cells]
    judged = [(c, v) for c, v in zip(cells, values, strict=True) if v is not None]
    low = high = mean = None
    if judged:
        mean = float(np.mean([v for _, v in judged]))
        boot = np.nanmean(np.vstack([bootstrap_values(metric, c, draws, rng)
                                     for c, _ in judged]), axis=0)
        boot = boot[np.isfinite(boot)]
        if boot.size:
            low, high = (float(v) for v in np.quantile(boot, (0.025, 0.975)))
    return AgePoint(age_days=age, rows=int(sum(c.y.size for c in cells)),
                    positives=int(sum(c.y.sum() for c in cells)), metric=mean, low=low,
                    high=high, per_cutoff=values)


def max_useful_age(curve: list[AgePoint], margin: float,
                   horizon_days: float) -> tuple[float, float, float, bool]:
    """(fresh, threshold, max age in days, at least): the first age below fresh − margin."""
    fresh = curve[0].metric if curve else None
    if fresh is None:
        raise BacktestError("the models' first day after their cut-offs holds no labelled "
                            "events of both classes: generate or wait for more labels")
    threshold = fresh - margin
    for point in curve[1:]:
        if point.metric is not None and point.metric < threshold:
            return fresh, threshold, float(point.age_days), False
    return fresh, threshold, float(horizon_days), True


def run_backtest(settings: Settings, now: datetime | None = None, store=None,
                 on_cutoff: Callable[[CutoffRun], None] | None = None) -> BacktestReport:
    """Train at the past cut-offs, score the horizon after each, and find the maximum age."""
    from training.dataset import LabelSource, build_training_set, latest_labelled_event
    from training.train import TrainingError, to_matrix, train_model

    started = time.perf_counter()
    now = now or datetime.now(UTC)
    source = LabelSource.from_settings(settings)
    latest = latest_labelled_event(source, now)
    if latest is None:
        raise BacktestError(f"no event has a label known at {now.isoformat()}")
    cutoffs = cutoffs_for(latest, settings.backtest_cutoffs, settings.backtest_step_days,
                          settings.backtest_horizon_days)
    known = build_training_set(settings, cutoff=now, store=store, source=source)
    horizon = timedelta(days=settings.backtest_horizon_days)
    ages = math.ceil(settings.backtest_horizon_days)
    frame, col = known.frame, known.timestamp_column
    label = known.label_column
    features = known.service.features
    runs: list[CutoffRun] = []
    cells: list[list[Cell]] = []  # per cut-off, per age
    with tempfile.TemporaryDirectory(prefix="skewless-backtest-") as scratch:
        for cutoff in cutoffs:
            ts = known_at(known, cutoff, source.label_timestamp_column)
            try:
                result = train_model(ts, Path(scratch), settings.holdout_days,
                                     settings.validation_days, seed=settings.seed)
            except TrainingError as exc:
                raise BacktestError(
                    f"cannot train at the cut-off {cutoff.isoformat()}: {exc}; use fewer "
                    "cut-offs (SKEWLESS_BACKTEST_CUTOFFS) or a shorter step") from exc
            window = frame[(frame[col] >= pd.Timestamp(cutoff))
                           & (frame[col] < pd.Timestamp(cutoff + horizon))]
            scores = np.asarray(result.booster.predict(
                to_matrix(window, features, result.contract.categories),
                num_iteration=result.booster.best_iteration))
            age = ((window[col] - pd.Timestamp(cutoff)).dt.total_seconds()
                   // DAY_SECONDS).astype(int).to_numpy()
            y = window[label].to_numpy().astype(int)
            cells.append([Cell(y[age == a], scores[age == a]) for a in range(ages)])
            training = result.contract.training
            assert training is not None
            holdout = result.holdout
            run = CutoffRun(
                cutoff=cutoff.isoformat(), train_rows=sum(training.rows.values()),
                train_positives=sum(training.positives.values()),
                holdout_metric=float(getattr(holdout, settings.gate_metric) or math.nan),
                best_iteration=int(result.booster.best_iteration),
                evaluated_rows=int(y.size), evaluated_positives=int(y.sum()))
            runs.append(run)
            if on_cutoff is not None:
                on_cutoff(run)
    rng = np.random.default_rng(settings.seed)
    curve = [age_point(a, [per_cutoff[a] for per_cutoff in cells], settings.gate_metric,
                       settings.evaluation_bootstrap, rng) for a in range(ages)]
    fresh, threshold, max_days, at_least = max_useful_age(
        curve, settings.staleness_margin, settings.backtest_horizon_days)
    return BacktestReport(
        feature_service=settings.feature_service, generated_at=datetime.now(UTC).isoformat(),
        labels_known_at=now.isoformat(), latest_labelled_event=latest.isoformat(),
        metric=settings.gate_metric, aggregation=AGGREGATION,
        step_days=settings.backtest_step_days, horizon_days=settings.backtest_horizon_days,
        margin=settings.staleness_margin, bootstrap=settings.evaluation_bootstrap,
        seed=settings.seed, cutoffs=runs, curve=curve, fresh=fresh, threshold=threshold,
        max_age_days=max_days, max_age_seconds=max_days * DAY_SECONDS, at_least=at_least,
        seconds=round(time.perf_counter() - started, 1))


def write_backtest(settings: Settings, report: BacktestReport) -> tuple[Path, Path]:
    """The report as ``<feature service>.json`` (what training reads), a dated copy beside
    it, and the self-contained ``<feature service>.html``; each replaced atomically."""
    from training.evaluation.backtest_report import render_html

    directory = backtest_dir(settings)
    doc = report.to_json()
    stamp = datetime.fromisoformat(report.generated_at).strftime("%Y%m%dT%H%M%SZ")
    write_json_atomic(directory / f"{report.feature_service}-{stamp}.json", doc)
    return (write_json_atomic(report_path(settings), doc),
            write_text_atomic(directory / f"{report.feature_service}.html", render_html(report)))


def read_staleness(settings: Settings) -> Staleness | None:
    """The maximum useful age of the latest backtest report, or None when there is none (or
    it cannot be read: a model is trained without it rather than not at all)."""
    path = report_path(settings)
    try:
        report = BacktestReport.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError) as exc:
        logger.warning("ignoring the backtest report %s: %s", path, exc)
        return None
    return Staleness(max_age_seconds=report.max_age_seconds, at_least=report.at_least,
                     margin=report.margin, metric=report.metric,
                     backtest_at=report.generated_at, report=str(path))
