"""`skewless rollout status|apply`: a challenger against production on the same events, and
the rollout policy that promotes or aborts it.

The predictor logs, for every event it scores while a rollout is open, production's version,
score and model time and the challenger's (``skewless.rollout``). Over the rows logged since
the challenger left candidate, with the current production version:

- **errors**: the share of events the challenger failed (it raised or returned a non-finite
  score), and apart from them the share whose shadow score came later than the shadow's
  budget or was skipped when its queue was full (a challenger too slow for the traffic);
- **latency**: each version's model time per row, p50 and p99;
- **score shift**: PSI of the challenger's scores against production's on the events both
  scored (on production's score deciles), and how often both decide the same, each at its
  own threshold;
- **labels**: each event once (its first scoring), joined with its label when known; the
  paired difference in ROC AUC (challenger − production) and, where both contracts price
  their decisions, in expected cost per event — each with a paired bootstrap 95% interval
  (``evaluation_bootstrap`` resamples, seeded), so both are judged on the same resampled rows.

The policy (every limit its own setting) aborts when, on at least ``rollout_min_events``
events, the error rate, the missing rate, the p99 or the score PSI passes its limit, or when, on at least
``rollout_min_labels`` labels, the AUC interval lies below −``rollout_abort_margin``; it
promotes through the acceptance gate when the interval's lower bound lies above
``rollout_promote_margin`` on at least that many labels and nothing calls for an abort. An
abort sends the challenger back to candidate with the evidence in its transition and the
audit; a promotion records it beside the gate's; a gate refusal holds the challenger where it
is and audits the refusal (``rollout hold``); otherwise the policy waits.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skewless.files import write_json_atomic
from skewless.registry import Registry
from skewless.reports.rollout import (
    Check,
    Comparison,
    Decision,
    Difference,
    Labelled,
    Latency,
    RolloutReport,
)
from skewless.rollout import (
    CHALLENGER_MODEL_US,
    CHALLENGER_OUTCOME,
    CHALLENGER_SCORE,
    CHALLENGER_VERSION,
    ERROR,
    LATE,
    NONFINITE,
    OUTCOMES,
    OVERLOADED,
    PRODUCTION_MODEL_US,
    PRODUCTION_SCORE,
    PRODUCTION_VERSION,
    SCORED,
)
from skewless.settings import Settings
from training.evaluation.metrics import bin_shares
from training.served import REQUEST_ID, ServedLogError, load_served

ACTOR = "skewless rollout"
DECILES = np.linspace(0.1, 0.9, 9)
LEVEL = (0.025, 0.975)


def _utc(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _floats(table: pa.Table, column: str) -> np.ndarray:
    return np.asarray(pc.cast(table[column], pa.float64()).to_numpy(zero_copy_only=False),
                      dtype=float)


def _latency(us: np.ndarray) -> Latency:
    us = us[np.isfinite(us)]
    if not us.size:
        return Latency(rows=0)
    p50, p99 = np.percentile(us, (50, 99)) / 1e3
    return Latency(rows=int(us.size), p50_ms=float(p50), p99_ms=float(p99))


def score_psi(production: np.ndarray, challenger: np.ndarray) -> float:
    """PSI of the challenger's scores against production's, on production's deciles."""
    from training.monitor import psi

    edges = np.unique(np.quantile(production, DECILES))
    return psi(bin_shares(production, edges), bin_shares(challenger, edges))


def paired_interval(y: np.ndarray, challenger: np.ndarray, production: np.ndarray,
                    bootstrap: int, seed: int) -> Difference:
    """ROC AUC of each, and challenger − production with its paired bootstrap interval."""
    from training.evaluation.slices import ALL, auc_difference, auc_or_nan, disaggregate

    frame = disaggregate(y, challenger, np.full(y.size, ALL, dtype=object),
                         {"difference": auc_difference}, bootstrap, seed,
                         sample_params={"production": production})
    value = float(frame.by_group.loc[ALL, "difference"])
    low, high = frame.interval("difference", ALL) if math.isfinite(value) else (None, None)
    return Difference(production=_finite(auc_or_nan(y, production)),
                      challenger=_finite(auc_or_nan(y, challenger)),
                      difference=_finite(value), low=low, high=high)


def cost_interval(challenger_costs: np.ndarray, production_costs: np.ndarray, bootstrap: int,
                  seed: int) -> Difference:
    """Mean cost per event of each, and the paired difference with its bootstrap interval."""
    diff = challenger_costs - production_costs
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, diff.size, diff.size)].mean()
                      for _ in range(bootstrap)]) if bootstrap and diff.size else np.array([])
    low, high = (np.quantile(means, LEVEL) if means.size else (None, None))
    return Difference(production=float(production_costs.mean()),
                      challenger=float(challenger_costs.mean()), difference=float(diff.mean()),
                      low=None if low is None else float(low),
                      high=None if high is None else float(high))


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _threshold(settings: Settings, contract: Any) -> float:
    decision = getattr(contract, "decision", None)
    return float(decision.threshold) if decision is not None else settings.decision_threshold


def _labelled(settings: Settings, rows: pa.Table, known_at: datetime,
              contracts: dict[str, Any], versions: tuple[str, str]) -> Labelled | None:
    """The compared events' labels, the paired ROC AUC and cost differences."""
    from training.dataset import LabelSource
    from training.evaluation.decision import row_costs
    from training.monitor import labelled_events

    id_column = settings.event_id_column
    if id_column not in rows.column_names or not LabelSource.from_settings(
            settings).labels_path.exists():
        return None
    amount = settings.decision_amount_column
    logged_amount = amount if amount and amount in rows.column_names else None
    with_id = rows.filter(pc.is_valid(rows[id_column]))
    if not with_id.num_rows:
        return Labelled(events=0, labels=0, positives=0, outstanding=0)
    joined = labelled_events(settings, with_id, known_at,
                             [PRODUCTION_SCORE, CHALLENGER_SCORE,
                              *([logged_amount] if logged_amount else [])], per=())
    known = np.asarray(pc.is_valid(joined["__label"]).to_numpy(zero_copy_only=False),
                       dtype=bool)
    labelled = joined.filter(pa.array(known))
    y = np.asarray(labelled["__label"].to_numpy(zero_copy_only=False), dtype=int)
    out = Labelled(events=joined.num_rows, labels=int(y.size), positives=int(y.sum()),
                   outstanding=int((~known).sum()))
    if not y.size:
        return out
    production, challenger = (_floats(labelled, PRODUCTION_SCORE),
                              _floats(labelled, CHALLENGER_SCORE))
    bootstrap, seed = settings.evaluation_bootstrap, settings.seed
    out.roc_auc = paired_interval(y, challenger, production, bootstrap, seed)
    policies = [p for v in versions
                if (p := getattr(contracts.get(v), "decision", None)) is not None]
    if len(policies) == len(versions) and all(
            p.amount_column is None or logged_amount is not None for p in policies):
        amounts = (np.nan_to_num(_floats(labelled, logged_amount), nan=0.0)
                   if logged_amount else None)
        costs = []
        for policy, scores in zip(policies, (production, challenger), strict=True):
            missed = (np.clip(amounts, 0.0, None) if policy.amount_column is not None
                      and amounts is not None
                      else np.full(y.size, float(policy.missed_cost or 0.0)))
            costs.append(row_costs(scores, y, missed, policy.threshold, policy.review_fee)[0])
        out.expected_cost_per_event = cost_interval(costs[1], costs[0], bootstrap, seed)
    return out


def compare(settings: Settings, registry: Registry, name: str | None = None,
            log_dir: Path | None = None, now: datetime | None = None,
            store: Any = None) -> Comparison:
    """The challenger of ``name`` (default: the feature service's model) against production
    on the rows logged since its rollout started."""
    name = name or settings.feature_service
    status = registry.rollout(name)
    out = Comparison(name=name, production=status.production, challenger=status.challenger)
    if status.challenger is None or status.production is None:
        return out
    out.stage, out.traffic_percent = status.stage, status.traffic_percent
    started = _utc(status.started_at) if status.started_at else None
    out.started_at = started.isoformat() if started else None
    log_dir = log_dir or settings.feature_log_dir
    if log_dir is None:
        from skewless.contract import logging_destination
        from training.dataset import open_store

        store = store or open_store(settings)
        log_dir = logging_destination(store, settings.feature_service, settings.feature_log_dir)
    columns = [REQUEST_ID, "model_version", "score", PRODUCTION_VERSION, PRODUCTION_SCORE,
               PRODUCTION_MODEL_US, CHALLENGER_VERSION, CHALLENGER_SCORE, CHALLENGER_OUTCOME,
               CHALLENGER_MODEL_US, settings.event_id_column,
               *([settings.decision_amount_column] if settings.decision_amount_column else [])]
    try:
        served = load_served(log_dir, since=started, columns=columns)
    except ServedLogError as exc:
        out.note = str(exc)
        return out
    if CHALLENGER_VERSION not in served.column_names:
        out.note = "the served log has no challenger columns (logged before rollouts)"
        return out
    rows = served.filter(pc.and_(pc.equal(served[CHALLENGER_VERSION], status.challenger),
                                 pc.equal(served[PRODUCTION_VERSION], status.production)))
    events = rows.num_rows
    out.events = events
    if not events:
        out.note = "no events logged with both versions yet"
        return out
    out.answered_by_challenger = int(pc.sum(pc.equal(rows["model_version"],
                                                     status.challenger)).as_py() or 0)
    tally = pc.value_counts(pc.fill_null(rows[CHALLENGER_OUTCOME], "missing"))
    counts = dict(zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist(),
                      strict=True))
    out.outcomes = {o: counts.pop(o, 0) for o in OUTCOMES} | counts
    out.error_rate = (out.outcomes[ERROR] + out.outcomes[NONFINITE]) / events
    out.missing_rate = (out.outcomes[LATE] + out.outcomes[OVERLOADED]) / events
    contracts = {v: registry.get(name, v).contract for v in (status.production,
                                                            status.challenger)}
    out.thresholds = {v: _threshold(settings, c) for v, c in contracts.items()}
    out.latency = {status.production: _latency(_floats(rows, PRODUCTION_MODEL_US)),
                   status.challenger: _latency(_floats(rows, CHALLENGER_MODEL_US))}
    both = rows.filter(pc.and_(pc.equal(rows[CHALLENGER_OUTCOME], SCORED),
                               pc.is_valid(rows[CHALLENGER_SCORE])))
    out.paired = both.num_rows
    if both.num_rows:
        production, challenger = _floats(both, PRODUCTION_SCORE), _floats(both, CHALLENGER_SCORE)
        out.score_psi = score_psi(production, challenger)
        out.agreement = float(np.mean(
            (production >= out.thresholds[status.production])
            == (challenger >= out.thresholds[status.challenger])))
        out.labelled = _labelled(settings, both, now or datetime.now(UTC), contracts,
                                 (status.production, status.challenger))
    return out


def judge(settings: Settings, comparison: Comparison) -> Decision:
    """What the policy says about ``comparison``: abort wins over promote; too little
    evidence waits."""
    c = comparison
    if c.challenger is None:
        return Decision(action="none", reasons=["no challenger"])
    checks: list[Check] = []
    reasons: list[str] = []
    waits: list[str] = []
    if c.events < settings.rollout_min_events:
        waits.append(f"{c.events:,} events of the {settings.rollout_min_events:,} needed "
                     "(rollout_min_events)")
    else:
        latency = c.latency.get(c.challenger)
        p99 = latency.p99_ms if latency is not None else None
        for setting, value, limit, what in (
                ("rollout_max_error_rate", c.error_rate, settings.rollout_max_error_rate,
                 "error rate"),
                ("rollout_max_missing_rate", c.missing_rate, settings.rollout_max_missing_rate,
                 "late or skipped shadow scores"),
                ("rollout_max_latency_p99_ms", p99, settings.rollout_max_latency_p99_ms,
                 "model ms/row p99"),
                ("rollout_max_score_psi", c.score_psi, settings.rollout_max_score_psi,
                 "score PSI against production")):
            breached = value is not None and value > limit
            checks.append(Check(name=setting, value=value, limit=limit, breached=breached))
            if breached:
                assert value is not None
                reasons.append(f"{what} {value:.4g} > {limit:g} ({setting})")
    labelled = c.labelled
    auc = labelled.roc_auc if labelled is not None else None
    labels = labelled.labels if labelled is not None else 0
    if labels < settings.rollout_min_labels:
        waits.append(f"{labels:,} labels of the {settings.rollout_min_labels:,} needed "
                     "(rollout_min_labels)")
    elif auc is None or auc.low is None or auc.high is None:
        waits.append("the labelled events hold one class: no ROC AUC difference yet")
    else:
        worse = auc.high < -settings.rollout_abort_margin
        checks.append(Check(name="rollout_abort_margin", value=auc.high,
                            limit=-settings.rollout_abort_margin, breached=worse))
        interval = f"[{auc.low:+.4f}, {auc.high:+.4f}] on {labels:,} labels"
        if worse:
            reasons.append(f"ROC AUC difference {interval} lies below "
                           f"−{settings.rollout_abort_margin:g} (rollout_abort_margin)")
        elif auc.low > settings.rollout_promote_margin:
            if not reasons and c.events >= settings.rollout_min_events:
                return Decision(action="promote", checks=checks, reasons=[
                    f"ROC AUC difference {interval} lies above "
                    f"{settings.rollout_promote_margin:g} (rollout_promote_margin)"])
        else:
            waits.append(f"ROC AUC difference {interval} is not above "
                         f"{settings.rollout_promote_margin:g} yet")
    if reasons:
        return Decision(action="abort", reasons=reasons, checks=checks)
    return Decision(action="wait", reasons=waits or ["within every limit"], checks=checks)


def _report(settings: Settings, comparison: Comparison, decision: Decision, command: str,
            now: datetime) -> RolloutReport:
    return RolloutReport(feature_service=settings.feature_service,
                         generated_at=datetime.now(UTC).isoformat(),
                         labels_known_at=now.isoformat(), command=command,  # type: ignore[arg-type]
                         comparison=comparison, decision=decision)


def status(settings: Settings, registry: Registry, name: str | None = None,
           log_dir: Path | None = None, now: datetime | None = None) -> RolloutReport:
    """The comparison and what the policy would do, changing nothing."""
    now = now or datetime.now(UTC)
    comparison = compare(settings, registry, name, log_dir, now)
    return _report(settings, comparison, judge(settings, comparison), "status", now)


def apply(settings: Settings, registry: Registry, name: str | None = None,
          log_dir: Path | None = None, now: datetime | None = None) -> RolloutReport:
    """Run the policy once and act on it: abort, promote through the gate, or hold."""
    from skewless.gate import PromotionRefused
    from training.evaluation.gate import promote

    now = now or datetime.now(UTC)
    comparison = compare(settings, registry, name, log_dir, now)
    decision = judge(settings, comparison)
    evidence = {"comparison": comparison.to_json(),
                "checks": [c.to_json() for c in decision.checks]}
    name, challenger = comparison.name, comparison.challenger
    reason = "; ".join(decision.reasons)
    if decision.action == "abort":
        assert challenger is not None
        registry.end_rollout(name, ACTOR, f"aborted by the rollout policy: {reason}",
                             action="abort", evidence=evidence, expected=challenger)
        decision.applied = True
    elif decision.action == "promote":
        assert challenger is not None
        try:
            promote(settings, registry, name, challenger, ACTOR,
                    reason=f"promoted by the rollout policy: {reason}", evidence=evidence)
            decision.applied = True
        except PromotionRefused as exc:
            decision.action, decision.gate, decision.applied = "hold", str(exc), True
            registry.audit(ACTOR, "rollout hold", f"{name}/{challenger}", "held",
                           {"reason": reason, "gate": str(exc), "evidence": evidence})
    return _report(settings, comparison, decision, "apply", now)


def write_report(settings: Settings, report: RolloutReport) -> Path:
    path = settings.rollout_report_path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report.to_json())
    return path
