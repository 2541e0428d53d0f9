"""Baselines: fitted on the candidate's split, stored with the version, honest yardsticks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from skewless.contract import FeatureSpec
from skewless.registry import Registry
from training.evaluation.baselines import (
    MAX_TRAIN_ROWS,
    OneRule,
    baseline_inputs,
    best_one_rule,
    evaluate_baselines,
    logistic_regression,
    train_sample,
)
from training.train import time_split

NAMES = {"logistic_regression", "one_rule"}


def test_baselines_are_evaluated_like_the_candidate_and_registered_with_it(demo):
    contract = demo.model.contract
    holdout = contract.metrics.holdout.to_json()
    baselines = contract.metrics.baselines
    assert set(baselines) == NAMES
    train_rows = min(contract.training.rows["train"], MAX_TRAIN_ROWS)
    for name, baseline in baselines.items():
        stored = baseline.to_json()
        assert set(holdout) <= set(stored), name  # the same metrics, Bayes AUC included
        assert stored["rows"] == holdout["rows"] and stored["positives"] == holdout["positives"]
        assert stored["bayes_auc"] == holdout["bayes_auc"]
        assert 0.5 < baseline.roc_auc < 1 and baseline.description
        assert baseline.train_rows == train_rows
    assert baselines["one_rule"].feature in contract.feature_names
    registry = Registry.from_settings(demo.settings)
    try:
        metrics = registry.get(contract.feature_service, contract.version).metrics
    finally:
        registry.close()
    assert (metrics["baselines"]["logistic_regression"]["roc_auc"]
            == baselines["logistic_regression"].roc_auc)
    assert metrics["baselines"]["one_rule"]["feature"] == baselines["one_rule"].feature


def test_logistic_regression_beats_one_fitted_on_shuffled_labels(demo, tmp_path):
    s, ts = demo.settings, demo.training_set
    split = time_split(ts, s.holdout_days, s.validation_days)
    features, label = ts.service.features, ts.label_column
    train = train_sample(split.train, seed=7)
    shuffled = np.random.default_rng(3).permutation(train[label].to_numpy())
    noise = logistic_regression(features, 7).fit(baseline_inputs(train, features), shuffled)
    noise_auc = roc_auc_score(split.holdout[label],
                              noise.predict_proba(baseline_inputs(split.holdout, features))[:, 1])
    stored = demo.model.contract.metrics.baselines["logistic_regression"].roc_auc
    assert stored > noise_auc + 0.1
    # Refitting the same way gives the stored evaluation: it is the baseline of this split.
    again = evaluate_baselines(split.train, split.holdout, features, label, seed=7)
    assert again["logistic_regression"].roc_auc == pytest.approx(stored, abs=1e-9)


def _rule_world(rows: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, list[FeatureSpec]]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "noise": rng.normal(size=rows),
        "signal": rng.normal(size=rows),
        "kind": rng.choice(["a", "b", "c"], rows).astype(object),
    })
    frame.loc[rng.random(rows) < 0.1, "signal"] = np.nan
    frame.loc[rng.random(rows) < 0.1, "kind"] = None
    p = 1 / (1 + np.exp(-(3 * frame["signal"].fillna(2.0) - 1)))
    frame["y"] = (rng.random(rows) < p).astype(int)
    features = [FeatureSpec("noise", "v", "noise", "Float64"),
                FeatureSpec("signal", "v", "signal", "Float64"),
                FeatureSpec("kind", "v", "kind", "String")]
    return frame, features


def test_one_rule_scores_by_the_best_feature_s_bin_rates():
    frame, features = _rule_world()
    x, y = baseline_inputs(frame, features), frame["y"].to_numpy()
    rule, auc = best_one_rule(x, y, features)
    assert rule.feature == "signal" and auc > 0.8
    # Ten quantile bins of the present values, the missing values an eleventh.
    assert len(rule.edges) == 9
    missing = frame["signal"].isna().to_numpy()
    assert rule.missing_rate == pytest.approx(y[missing].mean())
    top = frame["signal"] >= rule.edges[-1]  # a value on an edge is in the bin above it
    assert rule.score(pd.Series([10.0]))[0] == pytest.approx(y[top.to_numpy()].mean())


def test_one_rule_scores_an_unseen_category_the_overall_rate():
    frame, features = _rule_world()
    x, y = baseline_inputs(frame, features), frame["y"].to_numpy()
    rule = OneRule.fit("kind", x["kind"], y, categorical=True)
    scores = rule.score(pd.Series(["a", "zzz", np.nan], dtype=object))
    assert scores[0] == pytest.approx(y[(frame["kind"] == "a").to_numpy()].mean())
    assert scores[1] == pytest.approx(y.mean())
    assert scores[2] == pytest.approx(y[frame["kind"].isna().to_numpy()].mean())


def test_a_large_train_window_is_sampled_seeded_and_in_order():
    frame, features = _rule_world(rows=5000)
    first, second = train_sample(frame, 7, 1000), train_sample(frame, 7, 1000)
    assert len(first) == 1000 and first.index.equals(second.index)
    assert first.index.is_monotonic_increasing
    assert not first.index.equals(train_sample(frame, 8, 1000).index)
    assert train_sample(frame, 7, 10_000) is frame
    result = evaluate_baselines(frame.iloc[:4000], frame.iloc[4000:], features, "y",
                                max_rows=1000)
    assert {b.train_rows for b in result.values()} == {1000}
    assert result["one_rule"].feature == "signal"
