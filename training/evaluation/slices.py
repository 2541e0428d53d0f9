"""Metrics broken down by slices and groups: one disaggregation, fairlearn's ``MetricFrame``.

Training's holdout slices (ROC AUC per cell with a bootstrap interval), the gate's paired
comparison of a candidate with production per cell, the inclusion groups' rates (selection,
true and false positive rate, and their smallest ÷ largest ratio) and the monitor's subgroup
cells all go through :func:`disaggregate`. Its bootstrap is fairlearn's: every resample draws
whole rows, with the ``sample_params`` columns (the production scores of a paired
comparison) drawn along, so both models are scored on the same resample. A metric that cannot
be computed on a resample (a single class in a cell) is NaN there, and fairlearn takes the
per-group quantiles ignoring NaN; an interval is then built from the resamples that had both
classes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from fairlearn.metrics import (
    MetricFrame,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from pydantic import BaseModel
from scipy.stats import rankdata

from skewless.contract import Inclusion, InclusionGroup, InclusionRate, SliceCell, Slices
from skewless.errors import InvalidInput

MISSING = "(missing)"
ALL = "(all)"
LEVEL = 0.95  # every interval's coverage
# Cells one slice or group column may break into: more is a configuration mistake (an id
# column), and would cost a bootstrap per cell.
MAX_CELLS = 50
QUANTILES = [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2]
Metric = Callable[..., Any]


class SliceError(InvalidInput):
    """A slice spec cannot be read (band edges that are not increasing numbers)."""


# Slice specs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Subgroup:
    """A column to break metrics down by; numeric ones banded at ``edges``."""

    column: str
    edges: tuple[float, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Subgroup:
        """``channel``, or ``card_activity__txn_count_28d:20,60`` for bands."""
        column, _, bands = spec.partition(":")
        try:
            edges = tuple(float(e) for e in bands.split(",")) if bands else ()
        except ValueError as exc:
            raise SliceError(f"slice {spec!r}: band edges must be numbers, "
                             "e.g. card_activity__txn_count_28d:20,60") from exc
        if list(edges) != sorted(set(edges)):
            raise SliceError(f"slice {spec!r}: band edges must increase")
        return cls(column.strip(), edges)

    @property
    def name(self) -> str:
        return self.column + (" band" if self.edges else "")

    def checked(self, labels: np.ndarray) -> np.ndarray:
        """``labels``, refused when they hold more than :data:`MAX_CELLS` cells."""
        cells = len(set(labels.tolist()))
        if cells > MAX_CELLS:
            raise SliceError(
                f"slice column {self.column!r} has {cells:,} distinct values; at most "
                f"{MAX_CELLS} are broken down (SKEWLESS_SLICES, SKEWLESS_INCLUSION_GROUPS): "
                f"band a numeric column ('{self.column}:e1,e2') or choose a coarser one")
        return labels

    @property
    def bands(self) -> list[str]:
        """The band labels, lowest first (none for a categorical column)."""
        if not self.edges:
            return []
        return [f"< {_edge(self.edges[0])}",
                *(f"{_edge(a)}–{_edge(b)}" for a, b in zip(self.edges, self.edges[1:],
                                                           strict=False)),
                f"≥ {_edge(self.edges[-1])}"]

    def ordered(self, cells: set[str]) -> list[str]:
        """``cells`` in display order: bands lowest first, categories alphabetically."""
        rank = {band: i for i, band in enumerate(self.bands)}
        return sorted(cells, key=lambda c: (rank.get(c, len(rank)), c))

    def labels(self, column: pa.ChunkedArray | pa.Array | pd.Series | np.ndarray) -> np.ndarray:
        """The cell label of every row (``(missing)`` for a null)."""
        if isinstance(column, pd.Series | np.ndarray):
            column = pa.array(np.asarray(column, dtype=object), from_pandas=True) \
                if not self.edges else pa.array(pd.to_numeric(pd.Series(column)),
                                                 from_pandas=True)
        if not self.edges:
            values = pc.fill_null(pc.cast(column, pa.string()), MISSING)
            return np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)
        names = self.bands
        numbers = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        band = np.searchsorted(np.asarray(self.edges), numbers, side="right")
        out = np.asarray(names, dtype=object)[np.minimum(band, len(names) - 1)]
        out[np.isnan(numbers)] = MISSING
        return out


def _edge(value: float) -> str:
    return f"{int(value)}" if value == int(value) else f"{value:g}"


# The disaggregation --------------------------------------------------------------------


@dataclass
class Disaggregation:
    """fairlearn's ``MetricFrame`` of a set of metrics over cells, with bootstrap intervals
    (``low``/``high`` per cell and metric; ``ratio_low``/``ratio_high`` per metric)."""

    frame: MetricFrame
    low: pd.DataFrame | None = None
    high: pd.DataFrame | None = None
    ratio_low: pd.Series | None = None
    ratio_high: pd.Series | None = None

    @property
    def by_group(self) -> pd.DataFrame:
        return self.frame.by_group

    def interval(self, metric: str, cell: Any) -> tuple[float | None, float | None]:
        if self.low is None or self.high is None:
            return None, None
        return _finite(self.low.loc[cell, metric]), _finite(self.high.loc[cell, metric])

    def ratio_interval(self, metric: str) -> list[float | None]:
        if self.ratio_low is None or self.ratio_high is None:
            return [None, None]
        return [_finite(self.ratio_low[metric]), _finite(self.ratio_high[metric])]


def disaggregate(y: np.ndarray, scores: np.ndarray, cells: np.ndarray,
                 metrics: dict[str, Metric], bootstrap: int = 0, seed: int = 7,
                 sample_params: dict[str, np.ndarray] | None = None) -> Disaggregation:
    """``metrics`` per cell of ``cells`` (one label per row) through fairlearn's
    ``MetricFrame``, beside each cell's ``rows`` and ``positives``; every caller goes
    through here.

    With ``bootstrap`` > 0, each metric gets a 95% interval per cell and for the smallest ÷
    largest cell ratio (``MetricFrame.ratio()``): whole rows are resampled, the
    ``sample_params`` (keyword arrays every metric takes, e.g. a second model's scores)
    with them, so a paired comparison scores both on the same resample. NaN results of a
    resample (one class in a cell) are left out of the quantiles. The resamples are drawn
    here rather than by ``MetricFrame(n_boot=...)``: fairlearn 0.15 converts every column
    element by element on each metric call (``np.stack``), about half a second per resample
    and metric on a 40,000-row holdout; the same metrics on index-drawn resamples cost
    milliseconds.
    """
    y = np.asarray(y, dtype=int)
    scores = np.asarray(scores, dtype=float)
    params = {k: np.asarray(v) for k, v in (sample_params or {}).items()}
    counted = {"rows": _rows, "positives": _positives, **metrics}
    frame = MetricFrame(metrics=counted, y_true=y, y_pred=scores,
                        sensitive_features=pd.Series(cells, name="cell"),
                        sample_params={name: params for name in counted} if params else None)
    out = Disaggregation(frame)
    if bootstrap <= 0 or not len(y):
        return out
    groups = frame.by_group.index
    codes = pd.Categorical(cells, categories=groups).codes
    rng = np.random.default_rng(seed)
    draws = np.full((bootstrap, len(groups), len(metrics)), np.nan)
    for b in range(bootstrap):
        rows = rng.integers(0, len(y), len(y))
        drawn = codes[rows]
        for g in range(len(groups)):
            mine = rows[drawn == g]
            if not mine.size:
                continue
            for m, function in enumerate(metrics.values()):
                draws[b, g, m] = function(y[mine], scores[mine],
                                          **{k: v[mine] for k, v in params.items()})
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
        low, high = np.nanquantile(draws, QUANTILES, axis=0)
        ratios = np.nanmin(draws, axis=1) / np.nanmax(draws, axis=1)
        ratio_low, ratio_high = np.nanquantile(ratios, QUANTILES, axis=0)
    names = list(metrics)
    out.low = pd.DataFrame(low, index=groups, columns=names)
    out.high = pd.DataFrame(high, index=groups, columns=names)
    out.ratio_low = pd.Series(ratio_low, index=names)
    out.ratio_high = pd.Series(ratio_high, index=names)
    return out


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(np.sum(y)) < len(y)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): sklearn's value without its
    input checks, which cost more than the AUC itself a few thousand times per training."""
    positives = int(y.sum())
    negatives = y.size - positives
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def auc_or_nan(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, NaN for a single class (a small cell's resample may hold one)."""
    return _auc(y, p) if _both_classes(y) else math.nan


def auc_difference(y: np.ndarray, p: np.ndarray, production: np.ndarray) -> float:
    """AUC(candidate) − AUC(production) on the same rows, NaN for a single class."""
    if not _both_classes(y):
        return math.nan
    return _auc(y, p) - _auc(y, production)


def _rows(y: np.ndarray, p: np.ndarray, **_: Any) -> int:
    return len(y)


def _positives(y: np.ndarray, p: np.ndarray, **_: Any) -> int:
    return int(np.sum(y))


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _cells(spec: Subgroup, columns: pd.DataFrame) -> np.ndarray:
    if spec.column not in columns.columns:
        raise SliceError(f"slice column {spec.column!r} is not among the evaluated columns")
    return spec.checked(spec.labels(columns[spec.column].reset_index(drop=True)))


def _specs(specs: Sequence[str | Subgroup]) -> list[Subgroup]:
    return [s if isinstance(s, Subgroup) else Subgroup.parse(s) for s in specs]


# Slices --------------------------------------------------------------------------------


def _slice_cells(y: np.ndarray, scores: np.ndarray, cells: np.ndarray, column: str,
                 spec: Subgroup, bootstrap: int, seed: int) -> list[SliceCell]:
    frame = disaggregate(y, scores, cells, {"roc_auc": auc_or_nan}, bootstrap, seed)
    by_group = frame.by_group
    out = []
    for cell in spec.ordered(set(by_group.index.tolist())):
        rows, positives = int(by_group.loc[cell, "rows"]), int(by_group.loc[cell, "positives"])
        auc = _finite(by_group.loc[cell, "roc_auc"])
        low, high = frame.interval("roc_auc", cell) if auc is not None else (None, None)
        out.append(SliceCell(
            column=column, value=str(cell), rows=rows, positives=positives, roc_auc=auc,
            low=low, high=high,
            status="ok" if auc is not None else
            ("no positives" if positives == 0 else "a single class")))
    return out


def slice_metrics(y: np.ndarray, scores: np.ndarray, columns: pd.DataFrame,
                  specs: Sequence[str | Subgroup], bootstrap: int = 200,
                  seed: int = 7) -> Slices:
    """ROC AUC with a bootstrap 95% interval, overall and in every cell of every slice.

    ``columns`` holds each spec's column for the rows of ``y``/``scores``, in their order. A
    cell with one class has a ``status`` and no AUC.
    """
    y = np.asarray(y, dtype=int)
    scores = np.asarray(scores, dtype=float)
    overall = _slice_cells(y, scores, np.full(len(y), ALL, dtype=object), ALL,
                           Subgroup(ALL), bootstrap, seed)[0]
    cells: list[SliceCell] = []
    for spec in _specs(specs):
        cells += _slice_cells(y, scores, _cells(spec, columns), spec.name, spec, bootstrap,
                              seed)
    return Slices(overall=overall, cells=cells, bootstrap=bootstrap, level=LEVEL)


class SliceDifference(BaseModel):
    """AUC(candidate) − AUC(production) in one slice cell, with its paired 95% interval
    (``None`` where a cell holds a single class)."""

    column: str
    value: str
    rows: int
    positives: int
    difference: float | None
    low: float | None
    high: float | None


def paired_slice_differences(y: np.ndarray, candidate_scores: np.ndarray,
                             production_scores: np.ndarray, columns: pd.DataFrame,
                             specs: Sequence[str | Subgroup], bootstrap: int = 200,
                             seed: int = 7) -> list[SliceDifference]:
    """Per slice cell, the candidate's ROC AUC minus production's on the same rows, with a
    paired bootstrap 95% interval: each resample scores both models on the same rows."""
    y = np.asarray(y, dtype=int)
    candidate = np.asarray(candidate_scores, dtype=float)
    production = np.asarray(production_scores, dtype=float)
    out: list[SliceDifference] = []
    for spec in _specs(specs):
        frame = disaggregate(
            y, candidate, _cells(spec, columns),
            {"difference": auc_difference},
            bootstrap, seed, sample_params={"production": production})
        by_group = frame.by_group
        for cell in spec.ordered(set(by_group.index.tolist())):
            difference = _finite(by_group.loc[cell, "difference"])
            low, high = (frame.interval("difference", cell) if difference is not None
                         else (None, None))
            out.append(SliceDifference(
                column=spec.name, value=str(cell), rows=int(by_group.loc[cell, "rows"]),
                positives=int(by_group.loc[cell, "positives"]), difference=difference,
                low=low, high=high))
    return out


# Inclusion -----------------------------------------------------------------------------


def _rate(name: str, threshold: float) -> Metric:
    """fairlearn's ``selection_rate``, ``true_positive_rate`` or ``false_positive_rate`` of
    the decisions at ``threshold`` (the same definitions, without sklearn's input checks:
    they run a few thousand times per training), NaN where a resample leaves the rate
    undefined (no positives for the true positive rate, no negatives for the false one)."""

    def rate(y: np.ndarray, p: np.ndarray) -> float:
        flagged = np.asarray(p) >= threshold
        y = np.asarray(y, dtype=int)
        among = {"selection_rate": np.ones(y.size, dtype=bool),
                 "true_positive_rate": y == 1, "false_positive_rate": y == 0}[name]
        return float(flagged[among].mean()) if among.any() else math.nan

    return rate


RATES: dict[str, Metric] = {"selection_rate": selection_rate,
                            "true_positive_rate": true_positive_rate,
                            "false_positive_rate": false_positive_rate}


def inclusion(y: np.ndarray, scores: np.ndarray, threshold: float, groups: pd.DataFrame,
              bootstrap: int = 200, seed: int = 7) -> Inclusion:
    """Per group column: each group's selection, true and false positive rate at
    ``threshold`` with 95% intervals, and per rate the smallest ÷ largest group ratio
    (fairlearn's ``MetricFrame.ratio()``) with its bootstrap 95% interval."""
    y = np.asarray(y, dtype=int)
    scores = np.asarray(scores, dtype=float)
    out: dict[str, InclusionGroup] = {}
    for column in groups.columns:
        spec = Subgroup(str(column))
        frame = disaggregate(
            y, scores, _cells(spec, groups),
            {name: _rate(name, threshold) for name in RATES},
            bootstrap, seed)
        by_group = frame.by_group
        ratio = frame.frame.ratio(method="between_groups")
        values = spec.ordered(set(by_group.index.tolist()))
        rates = {}
        for name in RATES:
            per_group = {}
            for value in values:
                low, high = frame.interval(name, value)
                per_group[str(value)] = InclusionRate(
                    rows=int(by_group.loc[value, "rows"]),
                    positives=int(by_group.loc[value, "positives"]),
                    rate=_finite(by_group.loc[value, name]), low=low, high=high)
            rates[name] = per_group
        out[str(column)] = InclusionGroup(
            rates=rates,
            ratios={name: _finite(ratio[name]) for name in RATES},
            ratio_intervals={name: frame.ratio_interval(name) for name in RATES})
    return Inclusion(threshold=float(threshold), bootstrap=bootstrap, level=LEVEL,
                     groups=out)
