"""A rollout report as `skewless rollout apply` writes it, for the readers' tests (gauges,
catalog): a canary better on its labels, whose promotion the gate refused, so held."""

from __future__ import annotations

from datetime import datetime

from skewless.reports.rollout import (
    Check,
    Comparison,
    Decision,
    Difference,
    Labelled,
    Latency,
    RolloutReport,
)


def held_report(name: str, production: str, challenger: str, generated: datetime,
                gate: str, traffic_percent: float | None = 10.0,
                started_at: str | None = "2026-11-01T08:00:00+00:00",
                feature_service: str | None = None) -> RolloutReport:
    return RolloutReport(
        feature_service=feature_service or name, generated_at=generated.isoformat(),
        labels_known_at=generated.isoformat(), command="apply",
        comparison=Comparison(
            name=name, production=production, challenger=challenger, stage="canary",
            traffic_percent=traffic_percent, started_at=started_at, events=48_213,
            answered_by_challenger=4_790,
            outcomes={"scored": 48_090, "late": 101, "error": 0, "nonfinite": 0,
                      "overloaded": 22},
            error_rate=123 / 48_213, paired=48_090, score_psi=0.0312, agreement=0.9874,
            thresholds={production: 0.41, challenger: 0.38},
            latency={production: Latency(rows=48_213, p50_ms=0.021, p99_ms=0.087),
                     challenger: Latency(rows=48_090, p50_ms=0.034, p99_ms=0.142)},
            labelled=Labelled(
                events=48_213, labels=31_420, positives=612, outstanding=16_793,
                roc_auc=Difference(production=0.9012, challenger=0.9147, difference=0.0135,
                                   low=0.0061, high=0.0208))),
        decision=Decision(
            action="hold", applied=True, gate=gate,
            reasons=["ROC AUC difference [+0.0061, +0.0208] on 31,420 labels lies above 0.005 "
                     "(rollout_promote_margin)"],
            checks=[Check(name="rollout_max_error_rate", value=123 / 48_213, limit=0.01,
                          breached=False)]))
