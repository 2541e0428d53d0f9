"""The ``skewless_rollout_*`` gauges: the last rollout report as /metrics exports it.

A report is written as `skewless rollout status|apply` writes it; the exposition is parsed
back and every gauge compared with the report's figures, and promtool's linter accepts it.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import Metrics
from skewless.files import write_json_atomic
from skewless.reports.rollout import Comparison, Decision, Latency, RolloutReport
from tests.support import rollout_reports
from tests.support.debian import ensure_commands

GENERATED = datetime(2026, 11, 3, 9, 30, 15, 250000, tzinfo=UTC)


def held_report() -> RolloutReport:
    """v7 on a 10% canary against v6: better on its labels, but refused by the gate."""
    return rollout_reports.held_report(
        "fraud_model_v1", "v6", "v7", GENERATED,
        gate="slice card_type=prepaid: ROC AUC 0.81 under the floor 0.85")


def write(path: Path, report: RolloutReport) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report.to_json())
    return path


def scrape(metrics: Metrics) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
    """The exposition, and each ``skewless_rollout_*`` sample by metric name."""
    body, _ = metrics.render()
    text = body.decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("skewless_rollout_"):
                samples.setdefault(s.name, []).append((s.labels, s.value))
    return text, samples


def one(samples, name: str) -> tuple[dict[str, str], float]:
    (found,) = samples[name]
    return found


def test_every_gauge_equals_the_report(tmp_path):
    report = held_report()
    path = write(tmp_path / "rollout" / "fraud_model_v1.json", report)
    _, samples = scrape(Metrics(rollout_report=path))
    c, pair = report.comparison, {"model": "fraud_model_v1", "challenger": "v7"}
    assert one(samples, "skewless_rollout_events") == (pair, c.events)
    assert one(samples, "skewless_rollout_error_rate") == (pair, pytest.approx(c.error_rate))
    assert one(samples, "skewless_rollout_score_psi") == (pair, 0.0312)
    assert one(samples, "skewless_rollout_agreement") == (pair, 0.9874)
    assert one(samples, "skewless_rollout_labels") == (pair, 31_420)
    seconds = {(labels["version"], labels["percentile"]): value
               for labels, value in samples["skewless_rollout_model_seconds"]}
    assert seconds == pytest.approx({("v6", "50"): 0.021e-3, ("v6", "99"): 0.087e-3,
                                     ("v7", "50"): 0.034e-3, ("v7", "99"): 0.142e-3})
    assert all(labels == {**pair, "version": labels["version"], "percentile": labels["percentile"]}
               for labels, _ in samples["skewless_rollout_model_seconds"])
    auc = samples["skewless_rollout_auc_difference"]
    assert all(labels == {**pair, "bound": labels["bound"]} for labels, _ in auc)
    assert {labels["bound"]: value for labels, value in auc} == {
        "estimate": 0.0135, "low": 0.0061, "high": 0.0208}
    assert samples["skewless_rollout_decision"] == [({**pair, "action": "hold"}, 1.0)]
    assert one(samples, "skewless_rollout_decision_applied") == (pair, 1.0)
    assert one(samples, "skewless_rollout_report_timestamp_seconds") == (
        {"model": "fraud_model_v1"}, GENERATED.timestamp())


def test_unknown_figures_are_not_exported(tmp_path):
    """A rollout just started: nothing scored by both yet, no labels; due to abort (status)."""
    report = held_report()
    c = report.comparison
    c.error_rate = c.score_psi = c.agreement = c.labelled = None
    c.latency = {"v6": Latency(rows=40, p50_ms=0.02, p99_ms=0.09), "v7": Latency(rows=0)}
    report.decision = Decision(action="abort", reasons=["error rate 1 > 0.01"])
    report.command = "status"
    path = write(tmp_path / "rollout.json", report)
    _, samples = scrape(Metrics(rollout_report=path))
    assert set(samples) == {"skewless_rollout_events", "skewless_rollout_model_seconds",
                            "skewless_rollout_decision", "skewless_rollout_decision_applied",
                            "skewless_rollout_report_timestamp_seconds"}
    assert {(labels["version"], labels["percentile"])
            for labels, _ in samples["skewless_rollout_model_seconds"]} == {
        ("v6", "50"), ("v6", "99")}
    assert samples["skewless_rollout_decision"] == [
        ({"model": "fraud_model_v1", "challenger": "v7", "action": "abort"}, 1.0)]
    assert one(samples, "skewless_rollout_decision_applied")[1] == 0.0


def test_without_a_challenger_only_the_reports_time(tmp_path):
    report = RolloutReport(
        feature_service="fraud_model_v1", generated_at=GENERATED.isoformat(),
        labels_known_at=GENERATED.isoformat(), command="status",
        comparison=Comparison(name="fraud_model_v1", production="v6", challenger=None),
        decision=Decision(action="none", reasons=["no challenger"]))
    path = write(tmp_path / "rollout.json", report)
    _, samples = scrape(Metrics(rollout_report=path))
    assert samples == {"skewless_rollout_report_timestamp_seconds": [
        ({"model": "fraud_model_v1"}, GENERATED.timestamp())]}


def test_without_a_report_nothing(tmp_path):
    path = tmp_path / "rollout.json"
    metrics = Metrics(rollout_report=path)
    assert scrape(metrics)[1] == {}
    path.write_text("{not json")
    assert scrape(metrics)[1] == {}
    write(path, held_report())  # appears while the service runs
    assert "skewless_rollout_decision" in scrape(metrics)[1]


def test_the_exposition_passes_promtools_linter(tmp_path):
    promtool = ensure_commands({"promtool": "prometheus"})["promtool"]
    text, samples = scrape(Metrics(rollout_report=write(tmp_path / "r.json", held_report())))
    assert len(samples) == 10
    linted = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout.strip() == linted.stderr.strip() == ""
