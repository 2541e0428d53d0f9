"""The decision threshold: the exact cost minimum on validation, checked by brute force."""

from __future__ import annotations

import numpy as np
import pytest

from skewless.registry import Registry
from training.evaluation.decision import (
    DecisionCostError,
    choose_decision,
    cost_curve,
    decides,
    missed_costs,
    optimal_threshold,
)
from training.evaluation.plan import EvaluationPlan, event_columns
from training.train import time_split, to_matrix


def brute_force(scores, y, missed, fee, chunk=512):
    """Every candidate threshold's cost counted directly; the cheapest, highest on a tie."""
    scores, y, missed = (np.asarray(a, dtype=float) for a in (scores, y, missed))
    candidates = sorted(set(scores.tolist())) + [np.nextafter(scores.max(), np.inf)]
    costs = []
    for start in range(0, len(candidates), chunk):
        t = np.asarray(candidates[start:start + chunk])[:, None]
        flagged = scores[None, :] >= t
        costs.extend((fee * flagged.sum(axis=1)
                      + (np.where(~flagged & (y[None, :] == 1), missed[None, :], 0.0)
                         ).sum(axis=1)).tolist())
    best = min(costs)
    return max(c for c, cost in zip(candidates, costs, strict=True) if cost == best), best


def plain_cost(scores, y, missed, fee, threshold):
    return sum(fee if s >= threshold else (m if label == 1 else 0.0)
               for s, label, m in zip(scores, y, missed, strict=True))


@pytest.mark.parametrize("seed", range(20))
def test_threshold_is_the_brute_force_minimum_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    scores = np.round(rng.random(n), 1 + seed % 3)  # few distinct values: many ties
    y = (rng.random(n) < scores).astype(int)
    missed = rng.integers(0, 40, n).astype(float)
    fee = float(rng.integers(0, 8))
    threshold, cost = brute_force(scores, y, missed, fee)
    assert optimal_threshold(scores, y, missed, fee) == threshold
    assert plain_cost(scores, y, missed, fee, threshold) == cost
    thresholds, costs = cost_curve(scores, y, missed, fee)
    assert costs.min() == cost


def test_flag_everything_or_nothing_when_costs_say_so():
    scores, y = np.array([0.1, 0.2, 0.2, 0.9]), np.array([1, 0, 1, 1])
    # Reviews are free: flag everything (the lowest score).
    assert optimal_threshold(scores, y, np.full(4, 10.0), 0.0) == 0.1
    # A review costs more than any miss: flag nothing, not even the top score.
    nothing = optimal_threshold(scores, y, np.full(4, 1.0), 100.0)
    assert nothing > 0.9 and not (scores >= nothing).any()
    # A tie at 0.2 flags both rows or neither.
    assert optimal_threshold(scores, y, np.array([0, 0, 3, 100.0]), 2.0) == 0.9
    assert optimal_threshold(scores, y, np.array([0, 0, 5, 100.0]), 2.0) == 0.2


def test_demo_threshold_is_the_brute_force_minimum_on_validation(demo):
    s, ts, model = demo.settings, demo.training_set, demo.model
    policy = model.contract.decision
    assert policy is not None and policy.amount_column == "amount"
    assert policy.review_fee == 5.0 and policy.chosen_on == "validation"
    split = time_split(ts, s.holdout_days, s.validation_days)
    features = ts.service.features
    categories = model.contract.categories
    scores = model.booster.predict(to_matrix(split.validation, features, categories),
                                   num_iteration=model.booster.best_iteration)
    plan = EvaluationPlan.from_settings(s)
    amounts = event_columns(split.validation, ts.id_column, plan.label_source,
                            ["amount"])["amount"].fillna(0).to_numpy(dtype=float)
    y = split.validation[ts.label_column].to_numpy()
    threshold, cost = brute_force(scores, y, amounts, 5.0)
    assert policy.threshold == threshold
    assert policy.validation.expected_cost == pytest.approx(cost, rel=1e-9)
    assert policy.validation.rows == len(split.validation)
    assert policy.validation.flagged == int((scores >= threshold).sum())
    assert policy.validation.missed_positives == int(((y == 1) & (scores < threshold)).sum())
    holdout = policy.holdout
    interval = holdout.expected_cost_per_event_interval
    assert holdout.rows == len(split.holdout) and interval.resamples == s.evaluation_bootstrap
    assert interval.low < holdout.expected_cost_per_event < interval.high
    registry = Registry.from_settings(s)
    try:
        stored = registry.get(model.contract.feature_service, model.contract.version).contract
    finally:
        registry.close()
    assert stored.decision == policy


def test_no_cost_configured_means_no_decision():
    assert not decides(EvaluationPlan())
    assert decides(EvaluationPlan(missed_cost=100.0))
    assert decides(EvaluationPlan(amount_column="amount"))


def test_a_fixed_missed_cost_prices_every_miss(demo):
    s, ts, model = demo.settings, demo.training_set, demo.model
    split = time_split(ts, s.holdout_days, s.validation_days)
    plan = EvaluationPlan(missed_cost=200.0, review_fee=5.0, bootstrap=20)
    features, categories = ts.service.features, model.contract.categories
    validation, holdout = (model.booster.predict(to_matrix(part, features, categories),
                                                 num_iteration=model.booster.best_iteration)
                           for part in (split.validation, split.holdout))
    policy = choose_decision(plan, split.validation, validation, split.holdout, holdout,
                             ts.id_column, ts.label_column)
    y = split.validation[ts.label_column].to_numpy()
    assert policy.threshold == brute_force(validation, y, np.full(len(y), 200.0), 5.0)[0]
    assert policy.missed_cost == 200.0 and policy.amount_column is None


def test_negative_or_infinite_amounts_are_refused_naming_the_column(demo):
    frame = demo.training_set.frame.head(50).copy()
    frame["loss"] = 1.0
    frame.loc[frame.index[3], "loss"] = -2.0
    frame.loc[frame.index[4], "loss"] = None
    plan = EvaluationPlan(amount_column="loss")
    with pytest.raises(DecisionCostError, match="'loss'.*negative"):
        missed_costs(frame, plan, demo.training_set.id_column)
    frame.loc[frame.index[3], "loss"] = float("inf")
    with pytest.raises(DecisionCostError, match="'loss'.*1 infinite"):
        missed_costs(frame, plan, demo.training_set.id_column)
    frame.loc[frame.index[3], "loss"] = 2.0
    costs = missed_costs(frame, plan, demo.training_set.id_column)
    assert costs[4] == 0.0 and costs[3] == 2.0  # a null amount costs nothing
