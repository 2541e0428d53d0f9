"""Baselines: simple models on the candidate's split, so its holdout metric has a yardstick.

Both are fitted on the train window and evaluated on the holdout with
:func:`~training.evaluation.metrics.evaluate_scores`, exactly as the candidate is:

- ``logistic_regression``: scikit-learn's logistic regression on every feature — numeric ones
  median-imputed with missing-value indicators and standardised, categorical ones with missing
  values as a category of their own, one-hot encoded (categories unseen in training encode as
  all zeros);
- ``one_rule``: the single feature whose per-bin training positive rate ranks the training
  rows best (ROC AUC), scored by that rate: ten quantile bins of a numeric feature, one bin per
  category of a categorical one, missing values a bin of their own; a value in no training
  bin (an unseen category) scores the overall training rate.

A large train window is sampled (seeded) to at most :data:`MAX_TRAIN_ROWS` rows: a baseline
is a yardstick, and at millions of rows it converges to the same place far more slowly.
Each baseline stores the number of rows it was fitted on (``train_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skewless.contract import BaselineEvaluation, FeatureSpec
from training.evaluation.metrics import evaluate_scores

MAX_TRAIN_ROWS = 200_000
MISSING = "__missing__"  # a categorical feature's missing value, as its own category
ONE_RULE_BINS = 10


def baseline_inputs(df: pd.DataFrame, features: list[FeatureSpec]) -> pd.DataFrame:
    """The features as the baselines read them: floats (NaN for null) and categories as
    strings (NaN for null)."""
    columns: dict[str, Any] = {}
    for f in features:
        column = df[f.name]
        if f.is_categorical:
            columns[f.name] = column.astype(str).where(column.notna(), np.nan).astype(object)
        else:
            columns[f.name] = column.astype("float64").to_numpy(na_value=np.nan)
    return pd.DataFrame(columns, index=df.index)


def train_sample(train: pd.DataFrame, seed: int, max_rows: int = MAX_TRAIN_ROWS) -> pd.DataFrame:
    """At most ``max_rows`` train-window rows, drawn without replacement (seeded), in order."""
    if len(train) <= max_rows:
        return train
    rows = np.sort(np.random.default_rng(seed).choice(len(train), max_rows, replace=False))
    return train.iloc[rows]


def logistic_regression(features: list[FeatureSpec], seed: int) -> Pipeline:
    """The logistic-regression baseline, unfitted."""
    numeric = [f.name for f in features if not f.is_categorical]
    categorical = [f.name for f in features if f.is_categorical]
    encode = ColumnTransformer([
        ("numeric", Pipeline([
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", StandardScaler()),
        ]), numeric),
        ("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING)),
            ("encode", OneHotEncoder(handle_unknown="ignore")),
        ]), categorical),
    ])
    return Pipeline([("encode", encode),
                     ("model", LogisticRegression(max_iter=2000, random_state=seed))])


@dataclass(frozen=True)
class OneRule:
    """One feature's per-bin training positive rate (see the module's docstring)."""

    feature: str
    edges: np.ndarray | None  # numeric: the quantile bin edges; None: categorical
    rates: dict[Any, float]  # bin (or category) → training positive rate
    missing_rate: float
    overall_rate: float

    @classmethod
    def fit(cls, feature: str, values: pd.Series, y: np.ndarray, categorical: bool) -> OneRule:
        edges = None
        if not categorical:
            present = values.dropna().to_numpy(dtype=float)
            edges = np.unique(np.quantile(present, np.linspace(0, 1, ONE_RULE_BINS + 1)[1:-1])
                              ) if present.size else np.array([])
        keys = cls._keys(values, edges)
        label = pd.Series(y, index=values.index, dtype=float)
        overall = float(label.mean())
        missing = keys.isna().to_numpy()
        rates = {k: float(v) for k, v in label[~missing].groupby(keys[~missing]).mean().items()}
        return cls(feature, edges, rates,
                   float(label[missing].mean()) if missing.any() else overall, overall)

    @staticmethod
    def _keys(values: pd.Series, edges: np.ndarray | None) -> pd.Series:
        """Each value's bin (NaN for a missing value)."""
        if edges is None:
            return values
        numbers = values.to_numpy(dtype=float)
        bins = np.searchsorted(edges, numbers, side="right").astype(float)
        bins[np.isnan(numbers)] = np.nan
        return pd.Series(bins, index=values.index)

    def score(self, values: pd.Series) -> np.ndarray:
        keys = self._keys(values, self.edges)
        scores = keys.map(self.rates).astype(float).to_numpy()
        missing = keys.isna().to_numpy()
        scores[missing] = self.missing_rate
        scores[np.isnan(scores)] = self.overall_rate  # in no training bin: unseen category
        return scores


def best_one_rule(x: pd.DataFrame, y: np.ndarray, features: list[FeatureSpec]
                  ) -> tuple[OneRule, float]:
    """The one-feature rule with the best training ROC AUC (the first such feature on a tie),
    and that AUC."""
    best: tuple[OneRule, float] | None = None
    for f in features:
        rule = OneRule.fit(f.name, x[f.name], y, f.is_categorical)
        auc = float(roc_auc_score(y, rule.score(x[f.name])))
        if best is None or auc > best[1]:
            best = (rule, auc)
    if best is None:
        raise ValueError("a one-feature rule needs at least one feature")
    return best


def evaluate_baselines(train: pd.DataFrame, holdout: pd.DataFrame, features: list[FeatureSpec],
                       label: str, bayes: np.ndarray | None = None, seed: int = 7,
                       max_rows: int = MAX_TRAIN_ROWS) -> dict[str, BaselineEvaluation]:
    """The baselines fitted on (a seeded sample of at most ``max_rows`` rows of) the train
    window and evaluated on the holdout; ``bayes`` are the holdout's true probabilities, when
    known, as the candidate's evaluation gets them."""
    sample = train_sample(train, seed, max_rows)
    x_train, y_train = baseline_inputs(sample, features), sample[label].to_numpy(dtype=int)
    x_holdout, y_holdout = baseline_inputs(holdout, features), holdout[label].to_numpy(dtype=int)
    rows = len(sample)

    logistic = logistic_regression(features, seed).fit(x_train, y_train)
    rule, train_auc = best_one_rule(x_train, y_train, features)
    return {
        "logistic_regression": BaselineEvaluation(
            **evaluate_scores(y_holdout, logistic.predict_proba(x_holdout)[:, 1], bayes),
            description="logistic regression on every feature (numeric: median-imputed with "
                        "missing indicators, standardised; categorical: one-hot, missing as "
                        "a category)", train_rows=rows),
        "one_rule": BaselineEvaluation(
            **evaluate_scores(y_holdout, rule.score(x_holdout[rule.feature]), bayes),
            description=f"one feature, {rule.feature}, scored by its per-bin training "
                        f"positive rate (training ROC AUC {train_auc:.4f})",
            train_rows=rows, feature=rule.feature),
    }
