"""Holdout evaluation and the per-feature baseline statistics stored with a model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from skewless.contract import FeatureSpec
from skewless.errors import InvalidInput


class EvaluationError(InvalidInput):
    """The scores cannot be evaluated (a holdout with one class); the message says why."""


QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
PSI_BINS = 10
TOP_CATEGORIES = 50
# A seeded sample of each numeric feature's training values (and of the holdout's scores),
# kept with the baseline for the two-sample KS test of `skewless monitor`.
BASELINE_SAMPLE = 500


def baseline_sample(values: np.ndarray, size: int = BASELINE_SAMPLE, seed: int = 7) -> list[float]:
    """Up to ``size`` values drawn without replacement, to 6 significant digits."""
    if values.size > size:
        values = np.random.default_rng(seed).choice(values, size, replace=False)
    return [float(f"{v:.6g}") for v in values]


def bin_shares(values: np.ndarray, edges: list[float] | np.ndarray) -> list[float]:
    """Shares of ``values`` in the bins ``edges`` make: training fixes the edges, the monitor
    bins served values the same way."""
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"),
                         minlength=len(edges) + 1)
    return [float(c) / max(values.size, 1) for c in counts]


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Observed rate against mean prediction in equal-count bins of the prediction."""
    order = np.argsort(p, kind="stable")
    rows = []
    for chunk in np.array_split(order, bins):
        if chunk.size:
            rows.append(
                {
                    "count": int(chunk.size),
                    "mean_predicted": float(p[chunk].mean()),
                    "observed_rate": float(y[chunk].mean()),
                }
            )
    return rows


def evaluate_scores(
    y: np.ndarray, p: np.ndarray, bayes_p: np.ndarray | None = None
) -> dict[str, Any]:
    """ROC AUC, PR AUC, log loss, Brier, calibration, and the ratio to the Bayes AUC."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    if y.min() == y.max():
        raise EvaluationError("the holdout holds a single class; widen it")
    table = calibration_table(y, p)
    ece = sum(r["count"] * abs(r["mean_predicted"] - r["observed_rate"]) for r in table) / y.size
    metrics: dict[str, Any] = {
        "rows": int(y.size),
        "positives": int(y.sum()),
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "expected_calibration_error": float(ece),
        "calibration": table,
    }
    if bayes_p is not None:
        bayes_auc = float(roc_auc_score(y, bayes_p))
        metrics["bayes_auc"] = bayes_auc
        metrics["auc_to_bayes"] = metrics["roc_auc"] / bayes_auc
    return metrics


def baseline_statistics(df: pd.DataFrame, features: list[FeatureSpec]) -> dict[str, Any]:
    """Per-feature profile of the training rows, with PSI bin edges fixed now."""
    stats: dict[str, Any] = {}
    for f in features:
        column = df[f.name]
        entry: dict[str, Any] = {
            "dtype": f.dtype,
            "count": int(column.size),
            "null_rate": float(column.isna().mean()) if column.size else 0.0,
        }
        if f.is_categorical:
            freq = column.dropna().astype(str).value_counts(normalize=True)
            entry["distinct"] = int(freq.size)
            entry["frequencies"] = {k: float(v) for k, v in freq.head(TOP_CATEGORIES).items()}
        else:
            values = column.dropna().astype(float).to_numpy()
            if values.size:
                qs = np.quantile(values, QUANTILES)
                edges = np.unique(np.quantile(values, np.linspace(0, 1, PSI_BINS + 1))[1:-1])
                entry.update(
                    mean=float(values.mean()),
                    std=float(values.std()),
                    min=float(values.min()),
                    max=float(values.max()),
                    quantiles={str(q): float(v) for q, v in zip(QUANTILES, qs, strict=True)},
                    psi_bin_edges=[float(e) for e in edges],
                    psi_bin_shares=bin_shares(values, edges),
                    sample=baseline_sample(values),
                )
        stats[f.name] = entry
    return stats
