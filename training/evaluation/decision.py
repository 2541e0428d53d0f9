"""The decision: the score threshold that minimises the expected cost of acting on scores.

A missed positive (score below the threshold) costs its amount — the plan's
``amount_column``, read for each event from the training set or the label events (a null
amount costs 0, a negative one is refused) — or the plan's ``missed_cost`` when there is no
amount column; every flagged event (score at or above the threshold) costs ``review_fee``.

The threshold is chosen on the validation window, exactly: every distinct validation score is
a candidate (it flags every row scoring at least it), and so is flagging nothing (a threshold
just above the highest score); their costs come from cumulative sums over the scores sorted
once. The lowest cost wins; on equal costs, the higher threshold (fewer reviews). The holdout
then reports what that threshold costs, with a bootstrap interval of its cost per event that
the monitor can hold online costs against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from skewless.contract import CostInterval, DecisionOutcome, DecisionPolicy
from skewless.errors import InvalidInput
from training.evaluation.plan import EvaluationPlan, event_columns


class DecisionCostError(InvalidInput):
    """The decision's costs cannot be read as given (a negative amount)."""


def decides(plan: EvaluationPlan) -> bool:
    """Whether the plan prices a miss (an amount column or a missed cost): only then is a
    threshold chosen."""
    return plan.amount_column is not None or plan.missed_cost is not None


def missed_costs(frame: pd.DataFrame, plan: EvaluationPlan, id_column: str) -> np.ndarray:
    """What missing each row's event would cost if it were positive."""
    if plan.amount_column is None:
        return np.full(len(frame), float(plan.missed_cost or 0.0))
    column = plan.amount_column
    values = event_columns(frame, id_column, plan.label_source, [column])[column]
    try:
        amounts = pd.to_numeric(values).astype("float64").fillna(0.0).to_numpy()
    except (ValueError, TypeError) as exc:
        raise DecisionCostError(f"decision amount column {column!r} is not numeric: {exc}"
                                ) from exc
    infinite = int((~np.isfinite(amounts)).sum())
    if infinite:
        raise DecisionCostError(
            f"decision amount column {column!r} holds {infinite} infinite value(s); a missed "
            "positive's cost must be a finite amount (SKEWLESS_DECISION_AMOUNT_COLUMN)")
    negative = int((amounts < 0).sum())
    if negative:
        raise DecisionCostError(
            f"decision amount column {column!r} holds {negative} negative value(s) "
            f"(e.g. {amounts[amounts < 0][0]:g}); a missed positive's cost cannot be negative "
            "(SKEWLESS_DECISION_AMOUNT_COLUMN)")
    return amounts


def cost_curve(scores: np.ndarray, y: np.ndarray, missed: np.ndarray, review_fee: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate threshold (ascending) and its total cost.

    The candidates are the distinct scores and, last, the threshold just above the highest
    score (flag nothing). A threshold flags every row with a score at or above it.
    """
    scores = np.asarray(scores, dtype=float)
    lost = np.where(np.asarray(y) == 1, np.asarray(missed, dtype=float), 0.0)
    distinct, group = np.unique(scores, return_inverse=True)
    count = np.bincount(group, minlength=distinct.size).astype(float)
    caught = np.bincount(group, weights=lost, minlength=distinct.size)
    # At distinct[k]: everything from k upwards is flagged (suffix sums).
    flagged = np.cumsum(count[::-1])[::-1]
    caught_above = np.cumsum(caught[::-1])[::-1]
    costs = review_fee * flagged + (lost.sum() - caught_above)
    nothing = np.nextafter(distinct[-1], np.inf)
    return np.append(distinct, nothing), np.append(costs, lost.sum())


def optimal_threshold(scores: np.ndarray, y: np.ndarray, missed: np.ndarray,
                      review_fee: float) -> float:
    """The threshold of least total cost; the highest of equally cheap ones."""
    thresholds, costs = cost_curve(scores, y, missed, review_fee)
    cheapest = np.flatnonzero(costs == costs.min())
    return float(thresholds[cheapest[-1]])


def row_costs(scores: np.ndarray, y: np.ndarray, missed: np.ndarray, threshold: float,
              review_fee: float) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cost at ``threshold``, and which rows it flags."""
    flagged = np.asarray(scores) >= threshold
    missed_positive = (np.asarray(y) == 1) & ~flagged
    return np.where(flagged, review_fee, 0.0) + np.where(missed_positive, missed, 0.0), flagged


def outcome(scores: np.ndarray, y: np.ndarray, missed: np.ndarray, threshold: float,
            review_fee: float, bootstrap: int | None = None, seed: int = 7) -> DecisionOutcome:
    """What ``threshold`` does on a window; with ``bootstrap`` resamples, the 95% interval of
    its cost per event."""
    y = np.asarray(y, dtype=int)
    costs, flagged = row_costs(scores, y, missed, threshold, review_fee)
    interval = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        means = np.array([costs[rng.integers(0, costs.size, costs.size)].mean()
                          for _ in range(bootstrap)])
        low, high = np.quantile(means, (0.025, 0.975))
        interval = CostInterval(low=float(low), high=float(high), level=0.95, resamples=bootstrap,
                                seed=seed)
    return DecisionOutcome(
        rows=int(y.size), positives=int(y.sum()), flagged=int(flagged.sum()),
        missed_positives=int(((y == 1) & ~flagged).sum()), expected_cost=float(costs.sum()),
        expected_cost_per_event=float(costs.mean()) if costs.size else 0.0,
        **({"expected_cost_per_event_interval": interval} if interval else {}))


def choose_decision(plan: EvaluationPlan, validation: pd.DataFrame,
                    validation_scores: np.ndarray, holdout: pd.DataFrame,
                    holdout_scores: np.ndarray, id_column: str, label: str) -> DecisionPolicy:
    """The cost-minimising threshold on the validation window, and what it does there and on
    the holdout."""
    fee = plan.review_fee
    v_missed = missed_costs(validation, plan, id_column)
    v_y = validation[label].to_numpy(dtype=int)
    threshold = optimal_threshold(validation_scores, v_y, v_missed, fee)
    return DecisionPolicy(
        threshold=threshold, chosen_on="validation", review_fee=fee,
        **({"amount_column": plan.amount_column} if plan.amount_column else
           {"missed_cost": plan.missed_cost}),
        validation=outcome(validation_scores, v_y, v_missed, threshold, fee),
        holdout=outcome(holdout_scores, holdout[label].to_numpy(dtype=int),
                        missed_costs(holdout, plan, id_column), threshold, fee,
                        bootstrap=plan.bootstrap, seed=plan.seed),
    )
