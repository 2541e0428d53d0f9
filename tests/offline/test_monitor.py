"""`skewless monitor` on the generator's drift scenario, with real parts end to end.

Two worlds of the same volume (same seed; one with drift from day 85 of 110): Feast applied
and materialized into their own redis-server, a first model trained before the drift day and
in production, the last 10 days scored by the real predictor with their event ids. With drift
the amount-driven features are flagged and `skewless monitor --retrain` trains, gates and
promotes a model better on the post-drift holdout; without it, nothing is flagged and no
model is trained. Delayed-label figures are checked against an independent pandas/scipy
computation over the logged rows and the label file.
"""

from __future__ import annotations

import copy
import json
import subprocess
from datetime import datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import rankdata

from skewless.registry import Registry
from skewless.reports.monitor import MonitorReport, VersionReport
from tests.support.debian import ensure_commands
from tests.support.drift_world import serving
from tests.support.service_harness import read_logs
from training.evaluation.slices import SliceError, Subgroup
from training.monitor import (
    categorical_drift,
    default_window,
    monitor,
    offline_online,
    psi,
)

pytestmark = pytest.mark.redis
NAME = "fraud_model_v1"
# Shifted by the drift (amounts × 1.5): every amount aggregate of the card and the merchant.
AMOUNT_DRIVEN = {"card_activity__amount_mean_7d", "card_activity__amount_mean_28d",
                 "card_activity__amount_max_7d", "merchant_stats__merchant_amount_mean_28d"}
# Untouched by it.
UNTOUCHED = {"card_profile__credit_limit", "card_profile__card_type",
             "card_activity__txn_count_7d", "card_activity__distinct_merchants_7d",
             "transaction_features__is_night"}


def rank_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic: the chance a fraud outscores a legitimate one."""
    y = np.asarray(y).astype(bool)
    ranks = rankdata(p)  # ties share their mean rank: a tie counts one half
    n1, n0 = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Σ (recall step) × precision over the distinct score thresholds, highest first."""
    by = pd.DataFrame({"y": np.asarray(y).astype(int), "p": p}).groupby("p")["y"].agg(["sum", "count"])
    by = by.sort_index(ascending=False)
    tp, flagged = by["sum"].cumsum(), by["count"].cumsum()
    recall = tp / tp.iloc[-1]
    return float(((recall - recall.shift(fill_value=0)) * tp / flagged).sum())


def _production_entry(report: MonitorReport) -> VersionReport:
    (entry,) = [v for v in report.versions if v.version == report.production]
    return entry


def test_with_drift_the_drifted_features_are_flagged_and_nothing_else(drifted, steady):
    assert drifted.world.served_rows == steady.world.served_rows > 20_000  # same volume
    entry = _production_entry(drifted.report)
    assert entry.rows == drifted.world.served_rows
    flagged = set(entry.drift.drifted)
    assert AMOUNT_DRIVEN <= flagged
    assert not flagged & UNTOUCHED
    for name in flagged:
        d = entry.drift.features[name]
        assert d.psi >= 0.2 and d.p_value < 0.01
    assert any(f in flagged for f in entry.top_features)
    assert drifted.report.trigger.retrain is True
    assert any("drifted" in line for line in drifted.report.findings)


def test_with_drift_the_trigger_retrains_and_promotes_a_better_model(drifted):
    world, done = drifted.world, drifted.saved["retraining"]
    assert done["outcome"] == "promoted", done
    assert f"retrained (promoted): candidate {done['candidate']}" in drifted.cli.stdout
    registry = Registry.from_settings(world.settings)
    try:
        production = registry.production_version(NAME)
        assert production == done["candidate"] != world.production
        promotion = registry.get(NAME, production).details()["transitions"][-1]
        gate = promotion["evidence"]["gate"]
        audit = [e for e in registry.audit_events(50) if e.action == "retrain"]
    finally:
        registry.close()
    # Better than the model it replaces, on the same holdout, all of it after the drift.
    assert gate["candidate"]["score"] > gate["production"]["score"]
    assert gate["production"]["version"] == world.production
    assert world.drift_from is not None
    assert datetime.fromisoformat(gate["holdout"]["from"]) >= world.drift_from
    assert gate["holdout"]["positives"] >= 100
    assert promotion["actor"] == "skewless monitor"
    assert "monitor: PSI" in promotion["reason"]
    (event,) = audit
    assert (event.actor, event.target, event.outcome) == (
        "skewless monitor", f"{NAME}/{done['candidate']}", "promoted")
    assert event.detail["reasons"] == drifted.saved["trigger"]["reasons"]
    # The new model learned from the drifted weeks.
    assert datetime.fromisoformat(done["window"]["since"]) < world.now - timedelta(days=20)


def test_without_drift_nothing_is_flagged_and_nothing_is_retrained(steady):
    report = steady.report
    (entry,) = report.versions
    assert entry.rows == steady.world.served_rows
    assert entry.drift.drifted == []
    # Below the threshold that flags drift (0.2); the served window's own sampling moves the
    # steady world's PSI around 0.1 from one clock hour's data to the next's.
    threshold = steady.world.settings.monitor_psi_threshold
    assert max(d.psi for d in entry.drift.features.values()) < threshold
    assert entry.prediction_drift.drifted is False
    assert report.findings == []
    # The steady world's online figures sit inside their holdout intervals.
    figures = {o.metric: o for o in entry.performance.offline_online}
    assert set(figures) == {"roc_auc", "expected_cost_per_event"}
    assert all(o.outside is False and o.labelled > 1000 for o in figures.values()), figures
    trigger = report.trigger.to_json()
    assert trigger == {**trigger, "retrain": False, "reasons": []}
    assert "nothing calls for retraining" in steady.cli.stdout
    assert "retraining" not in steady.saved
    registry = Registry.from_settings(steady.world.settings)
    try:
        assert [v.version for v in registry.versions(NAME)] == [steady.world.production]
        assert not [e for e in registry.audit_events(50) if e.action == "retrain"]
    finally:
        registry.close()


def _independent(settings, since: datetime, known_at: datetime) -> pd.DataFrame:
    """Logged rows joined with the labels known at ``known_at``, first scoring per version
    and event, computed with pandas alone."""
    logs = read_logs(settings.feature_log_dir)
    logs = logs[logs["__log_timestamp"] >= pd.Timestamp(since)]
    logs = logs.sort_values("__log_timestamp", kind="stable").drop_duplicates(
        ["model_version", "transaction_id"])
    labels = pd.read_parquet(settings.resolved_labels_path)
    labels = labels[labels["label_timestamp"] <= pd.Timestamp(known_at)]
    labels["transaction_id"] = labels["transaction_id"].astype(str)
    return logs.merge(labels, on="transaction_id", how="left")


def test_delayed_label_performance_per_version_equals_an_independent_computation(drifted):
    world = drifted.world
    # The promoted model serves the last seven days again: two versions in the window.
    stamps = pd.read_parquet(world.settings.resolved_events_path)
    recent = stamps[stamps["event_timestamp"] >= pd.Timestamp(world.now - timedelta(days=7))]
    fields = ["transaction_id", "card_id", "merchant_id", "amount", "channel", "local_hour"]
    rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in recent[fields].to_dict("records")]
    with serving(world.settings) as url, httpx.Client(base_url=url, timeout=120) as http:
        for i in range(0, len(rows), 1000):
            http.post("/predict/batch", json={"rows": rows[i:i + 1000]}).raise_for_status()
    settings = world.settings.model_copy(update={"monitor_min_labels": 600})
    window = default_window(settings, world.served_from, None)
    report = monitor(settings, window)
    joined = _independent(settings, world.served_from, window.labels_known_at)
    versions = {v.version: v for v in report.versions}
    new = drifted.saved["retraining"]["candidate"]
    assert set(versions) == {world.production, new} == set(joined["model_version"])
    for version, entry in versions.items():
        mine = joined[joined["model_version"] == version]
        known = mine[mine["is_fraud"].notna()]
        y, p = known["is_fraud"].astype(int).to_numpy(), known["score"].to_numpy()
        overall = entry.performance.overall
        assert overall.status == "ok"
        assert (overall.labelled, overall.positives, overall.outstanding) == (
            len(known), int(y.sum()), len(mine) - len(known))
        assert overall.outstanding > 0  # the last days' labels are still on their way
        assert overall.roc_auc == pytest.approx(rank_auc(y, p), abs=1e-12)
        assert overall.pr_auc == pytest.approx(average_precision(y, p), abs=1e-12)
        # Each version decides at its own cost-optimal threshold, priced as at training.
        with Registry.from_settings(settings) as registry:
            decision = registry.get(NAME, version).contract.decision
        assert decision is not None and overall.threshold == decision.threshold
        acted = p >= decision.threshold
        assert overall.precision == pytest.approx((y[acted] == 1).mean())
        assert overall.recall == pytest.approx(y[acted].sum() / y.sum())
        missed = known["amount"].to_numpy()[(y == 1) & ~acted].sum()
        cost = (missed + decision.review_fee * acted.sum()) / len(y)
        assert entry.performance.expected_cost_per_event == pytest.approx(cost)
        # … beside the holdout's figures, flagged exactly when outside their intervals.
        figures = {o.metric: o for o in entry.performance.offline_online}
        assert figures["roc_auc"].online == pytest.approx(overall.roc_auc, abs=1e-12)
        assert figures["expected_cost_per_event"].online == pytest.approx(cost)
        assert figures["expected_cost_per_event"].offline == (
            decision.holdout.expected_cost_per_event)
        for o in figures.values():
            assert o.online_low <= o.online <= o.online_high
            assert o.outside == (o.online_high < o.low or o.online_low > o.high)
            assert (f"{version}: online {o.metric}" in " ".join(report.findings)) == o.outside
        # Per channel: cells under the minimum count are said to be so, not given a number.
        cells = entry.performance.subgroups["channel"]
        assert set(cells) == set(known["channel"])
        for channel, cell in cells.items():
            part = known[known["channel"] == channel]
            assert cell.labelled == len(part)
            if len(part) < 600:
                assert cell.status == "fewer than 600 labels" and "roc_auc" not in cell.to_json()
            elif cell.status == "ok":
                assert cell.roc_auc == pytest.approx(
                    rank_auc(part["is_fraud"].astype(int), part["score"]), abs=1e-12)
        # Daily buckets of the served-at time add up to the whole.
        buckets = entry.performance.buckets
        assert sum(b.labelled for b in buckets) == overall.labelled
    assert any(c.status.startswith("fewer than") for v in versions.values()
               for c in v.performance.subgroups["channel"].values())


def test_the_report_is_one_self_contained_html_file(drifted):
    html = drifted.world.settings.monitor_report_path.with_suffix(".html").read_text()
    entry = _production_entry(MonitorReport.from_json(drifted.saved))
    assert "Retraining is due" in html and "promoted" in html
    for name in entry.drift.drifted:
        assert f"<b>{name}</b>: PSI" in html  # its distribution chart
    assert html.count("<svg") >= 3 + len(entry.drift.drifted)
    assert "ROC AUC over time, per model version" in html
    for reference in ("<script", "src=", "href=", "url("):
        assert reference not in html


def test_the_findings_are_prometheus_gauges(drifted):
    tools = ensure_commands({"promtool": "prometheus"})
    settings = drifted.world.settings
    with serving(settings) as url:
        text = httpx.get(f"{url}/metrics").text
    linted = subprocess.run([tools["promtool"], "check", "metrics"], input=text,
                            capture_output=True, text=True, timeout=60)
    assert linted.returncode == 0 and linted.stdout.strip() == "", linted.stdout + linted.stderr
    saved = json.loads(settings.monitor_report_path.read_text())
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples
               if s.name.startswith("skewless_monitor_")}
    for v in saved["versions"]:
        for feature, d in v["drift"]["features"].items():
            key = tuple(sorted({"model_version": v["version"], "feature": feature}.items()))
            assert samples[("skewless_monitor_feature_psi", key)] == pytest.approx(d["psi"])
            assert samples[("skewless_monitor_feature_drifted", key)] == float(d["drifted"])
        checked = [(feature, rule, broken) for feature, q in v["quality"]["features"].items()
                   for rule, broken in q["rules"].items()]
        assert {rule for _, rule, _ in checked} >= {"null_rate", "out_of_range"}
        for feature, rule, broken in checked:
            key = tuple(sorted({"model_version": v["version"], "feature": feature,
                                "rule": rule}.items()))
            assert samples[("skewless_monitor_quality_findings", key)] == float(broken)
        overall = v["performance"]["overall"]
        key = (("model_version", v["version"]),)
        assert samples[("skewless_monitor_roc_auc", key)] == pytest.approx(overall["roc_auc"])
        assert samples[("skewless_monitor_labels", key)] == overall["labelled"]
    assert samples[("skewless_monitor_retrain_due", ())] == 0.0  # it retrained


def test_a_quality_finding_is_a_gauge_of_one_with_its_rule(drifted, tmp_path):
    """The monitor's serving-side findings as the collector exports them: a feature whose
    served null rate rose, a contract feature missing from the log."""
    from service.metrics import MonitorCollector

    doc = copy.deepcopy(drifted.saved)
    version = doc["versions"][0]
    feature = next(f for f, q in version["quality"]["features"].items()
                   if "null_rate" in q["rules"])
    version["quality"]["features"][feature]["rules"]["null_rate"] = True
    version["quality"]["schema"]["missing"] = ["card_profile__gone"]
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps(doc))
    samples = {(s.labels.get("feature"), s.labels.get("rule")): s.value
               for family in MonitorCollector(path).collect()
               if family.name == "skewless_monitor_quality_findings"
               for s in family.samples if s.labels["model_version"] == version["version"]}
    assert samples[(feature, "null_rate")] == 1.0
    assert samples[("card_profile__gone", "missing")] == 1.0
    assert sum(samples.values()) == 2 + sum(
        broken for f, q in version["quality"]["features"].items() if f != feature
        for broken in q["rules"].values()) + sum(
        broken for rule, broken in version["quality"]["features"][feature]["rules"].items()
        if rule != "null_rate")


def test_psi_and_the_categorical_test_on_known_shares():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = (0.6 - 0.5) * np.log(0.6 / 0.5) + (0.4 - 0.5) * np.log(0.4 / 0.5)
    assert psi([0.5, 0.5], [0.6, 0.4]) == pytest.approx(expected)
    drift = categorical_drift({"pos": 70, "online": 20, "kiosk": 10},
                              {"frequencies": {"pos": 0.7, "online": 0.3}})
    assert drift.categories.names == ["pos", "online", "(other)"]
    assert drift.categories.serving == pytest.approx([0.7, 0.2, 0.1])
    assert drift.test == "chi2" and drift.p_value < 1e-6


def test_subgroup_bands_and_bad_specs():
    import pyarrow as pa

    band = Subgroup.parse("card_activity__txn_count_28d:20,60")
    assert band.edges == (20.0, 60.0)
    labels = band.labels(pa.chunked_array([[0, 20, 59, 60, None]], pa.int64()))
    assert labels.tolist() == ["< 20", "20–60", "20–60", "≥ 60", "(missing)"]
    assert band.ordered(set(labels.tolist())) == ["< 20", "20–60", "≥ 60", "(missing)"]
    assert Subgroup.parse("channel").ordered({"pos", "atm", "online"}) == ["atm", "online", "pos"]
    with pytest.raises(SliceError, match="must be numbers"):
        Subgroup.parse("x:1,b")
    with pytest.raises(SliceError, match="must increase"):
        Subgroup.parse("x:5,1")


def test_an_online_figure_is_flagged_only_beyond_both_intervals():
    from types import SimpleNamespace

    from skewless.contract import SliceCell
    from skewless.reports.monitor import Cell

    holdout = SliceCell(column="(all)", value="(all)", rows=9000, positives=600, roc_auc=0.90,
                        low=0.88, high=0.92)
    contract = SimpleNamespace(metrics=SimpleNamespace(slices=SimpleNamespace(overall=holdout)),
                               decision=None)
    cell = Cell(labelled=5000, positives=300, status="ok", roc_auc=0.86)
    cases = {(0.86, 0.84, 0.875): True,   # wholly below the holdout's interval
             (0.87, 0.85, 0.89): False,   # its point outside, its interval meeting it
             (0.91, 0.89, 0.93): False}
    for (value, low, high), outside in cases.items():
        (figure,) = offline_online(contract, cell, {"roc_auc": (value, low, high)})
        assert (figure.metric, figure.offline, figure.low, figure.high) == (
            "roc_auc", 0.90, 0.88, 0.92)
        assert (figure.online, figure.online_low, figure.online_high) == (value, low, high)
        assert figure.outside is outside and figure.labelled == 5000
    # Too few labels online: nothing to compare, nothing flagged.
    (figure,) = offline_online(contract, cell.model_copy(update={"status": "fewer than 200 "
                                                                  "labels"}), {})
    assert figure.online is None and figure.outside is None
