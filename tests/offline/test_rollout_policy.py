"""The rollout's comparison and policy over crafted served logs and labels.

A registry (SQLite) with a production model and a challenger; served-log rows written as the
predictor writes them (production's and the challenger's versions, scores and model times
on every row) with scores drawn so that the challenger is better, worse, shifted, failing or
slow; a label file. Every figure is checked against an independent computation (sklearn's
ROC AUC, numpy quantiles), and each decision against the policy's settings.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from skewless.cli import app as cli
from skewless.db import upgrade
from skewless.gate import GateDecision, PromotionRefused
from skewless.registry import Registry
from skewless.settings import Settings
from tests.support.artifacts import write_artifact
from training import rollout

N = 4_000


@pytest.fixture
def world(tmp_path: Path):
    settings = Settings(repo_path=tmp_path / "repo", var_dir=tmp_path / "var",
                        feature_service="fraud", feature_log_dir=tmp_path / "logs",
                        labels_path=tmp_path / "labels.parquet", evaluation_bootstrap=200,
                        decision_threshold=0.5)
    upgrade(settings.resolved_database_url)
    registry = Registry(settings.resolved_database_url)
    for v in ("v1", "v2"):
        registry.register(write_artifact(tmp_path / "models" / v, v), actor="trainer")
    registry.promote("fraud", "v1", "alice", "first", {}, expected_production=None)
    registry.shadow("fraud", "v2", "bob", "try it")
    yield settings, registry
    registry.close()


def write_log(settings: Settings, production: np.ndarray, challenger: np.ndarray,
              outcomes: list[str] | None = None, challenger_us: np.ndarray | None = None,
              canary: np.ndarray | None = None, production_version: str = "v1",
              start: datetime | None = None) -> list[str]:
    """Rows scored after the rollout started, as the predictor logs them; their event ids."""
    n = production.size
    start = start or datetime.now(UTC) + timedelta(seconds=1)
    outcomes = outcomes or ["scored"] * n
    canary = canary if canary is not None else np.zeros(n, dtype=bool)
    ids = [f"t{i}" for i in range(n)]
    scored = np.array([o == "scored" for o in outcomes])
    us = challenger_us if challenger_us is not None else np.full(n, 40.0)
    table = pa.table({
        "__log_timestamp": pa.array([start + timedelta(milliseconds=i) for i in range(n)],
                                    pa.timestamp("us", tz="UTC")),
        "__request_id": [f"r{i}" for i in range(n)],
        "transaction_id": ids,
        "model_version": np.where(canary & scored, "v2", production_version).tolist(),
        "score": np.where(canary & scored, challenger, production),
        "production_version": [production_version] * n,
        "production_score": production,
        "production_model_us": np.full(n, 20.0),
        "challenger_version": ["v2"] * n,
        "challenger_stage": ["shadow"] * n,
        "challenger_score": pa.array(np.where(scored, challenger, np.nan), mask=~scored),
        "challenger_outcome": outcomes,
        "challenger_model_us": pa.array(us, mask=~scored),
    })
    directory = settings.feature_log_dir / f"__log_date={start.date()}"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / f"part-{len(list(directory.iterdir()))}.parquet")
    return ids


def write_labels(settings: Settings, ids: list[str], y: np.ndarray, known: int) -> None:
    """Labels of the first ``known`` events arrived an hour ago; the rest arrive tomorrow."""
    now = datetime.now(UTC)
    stamps = [now - timedelta(hours=1) if i < known else now + timedelta(days=1)
              for i in range(len(ids))]
    pq.write_table(pa.table({"transaction_id": ids, "is_fraud": y.astype(int),
                             "label_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC"))}),
                   settings.resolved_labels_path)


def scores(seed: int, y: np.ndarray, signal: float, noise: float,
           shift: float = 0.0) -> np.ndarray:
    """A model's scores: ``signal`` apart for the positives, under ``noise``."""
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-(signal * y + rng.normal(0, noise, y.size) + shift - 2)))


def labels(seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random(N) < 0.1).astype(int)


def test_the_comparison_equals_an_independent_computation(world):
    settings, registry = world
    y = labels()
    production, challenger = scores(2, y, 1.5, 1.5), scores(3, y, 3, 1.4)
    outcomes = ["scored"] * N
    for i in range(0, 40):
        outcomes[i * 7] = ("error", "late", "nonfinite", "overloaded")[i % 4]
    ids = write_log(settings, production, challenger, outcomes,
                    challenger_us=np.linspace(10, 1000, N))
    write_labels(settings, ids, y, known=3_000)
    report = rollout.status(settings, registry)
    c = report.comparison
    assert (c.challenger, c.production, c.stage, c.events) == ("v2", "v1", "shadow", N)
    assert c.outcomes == {"scored": N - 40, "late": 10, "error": 10, "nonfinite": 10,
                          "overloaded": 10}
    assert c.error_rate == pytest.approx(20 / N) and c.missing_rate == pytest.approx(20 / N)
    ok = np.array([o == "scored" for o in outcomes])
    assert c.paired == ok.sum()
    p, q = production[ok], challenger[ok]
    assert c.agreement == pytest.approx(np.mean((p >= 0.5) == (q >= 0.5)))
    edges = np.unique(np.quantile(p, np.linspace(0.1, 0.9, 9)))
    shares = [np.clip(np.bincount(np.searchsorted(edges, v, side="right"),
                                  minlength=edges.size + 1) / v.size, 1e-4, None) for v in (p, q)]
    assert c.score_psi == pytest.approx(float(np.sum((shares[1] - shares[0])
                                                     * np.log(shares[1] / shares[0]))))
    assert c.latency["v2"].p99_ms == pytest.approx(
        np.percentile(np.linspace(10, 1000, N)[ok], 99) / 1e3)
    assert c.latency["v1"].p50_ms == pytest.approx(0.02)
    known = ok & (np.arange(N) < 3_000)
    labelled = c.labelled
    assert labelled is not None and labelled.labels == known.sum()
    assert labelled.outstanding == (ok & (np.arange(N) >= 3_000)).sum()
    assert labelled.positives == y[known].sum()
    auc = labelled.roc_auc
    assert auc.production == pytest.approx(roc_auc_score(y[known], production[known]))
    assert auc.challenger == pytest.approx(roc_auc_score(y[known], challenger[known]))
    assert auc.difference == pytest.approx(auc.challenger - auc.production)
    assert auc.low < auc.difference < auc.high and auc.low > 0  # the better one, clearly
    assert labelled.expected_cost_per_event is None  # neither contract prices decisions


def test_a_clearly_better_challenger_is_promoted_on_enough_labels_only(world):
    settings, registry = world
    y = labels()
    ids = write_log(settings, scores(2, y, 1.5, 1.5), scores(3, y, 3, 1.4))
    write_labels(settings, ids, y, known=3_000)
    assert rollout.judge(settings, rollout.compare(settings, registry)).action == "promote"
    strict = settings.model_copy(update={"rollout_min_labels": 3_001})
    decision = rollout.judge(strict, rollout.compare(strict, registry))
    assert decision.action == "wait" and "3,000 labels of the 3,001" in decision.reasons[0]
    picky = settings.model_copy(update={"rollout_promote_margin": 0.5})
    assert rollout.judge(picky, rollout.compare(picky, registry)).action == "wait"


def test_a_gate_refusal_holds_the_challenger_and_is_audited(world, monkeypatch):
    settings, registry = world
    y = labels()
    ids = write_log(settings, scores(2, y, 1.5, 1.5), scores(3, y, 3, 1.4))
    write_labels(settings, ids, y, known=3_000)

    def refuse(*args, **kwargs):
        raise PromotionRefused("candidate v2 refused: worse on the slice channel=web",
                               GateDecision(accepted=False, metric="roc_auc", margin=0.0,
                                            candidate={"version": "v2"}, production=None))

    monkeypatch.setattr("training.evaluation.gate.decide", refuse)
    report = rollout.apply(settings, registry)
    assert (report.decision.action, report.decision.applied) == ("hold", True)
    assert "channel=web" in (report.decision.gate or "")
    assert registry.rollout("fraud").challenger == "v2"  # neither promoted nor removed
    held = [e for e in registry.audit_events() if e.action == "rollout hold"]
    assert len(held) == 1 and held[0].target == "fraud/v2"
    assert held[0].detail["evidence"]["comparison"]["labelled"]["labels"] == 3_000


@pytest.mark.parametrize("case", ["errors", "missing", "latency", "shift", "worse"])
def test_the_policy_aborts_on_each_limit_with_the_evidence_in_the_history(world, case):
    settings, registry = world
    y = labels()
    production = scores(2, y, 3, 1.0)
    challenger, outcomes, us = scores(3, y, 3, 1.0), None, None
    if case == "errors":
        outcomes = ["error" if i % 50 == 0 else "scored" for i in range(N)]  # 2% > 1%
    elif case == "missing":  # 6% > 5%, none failed
        outcomes = [("late", "overloaded")[i % 2] if i % 50 < 3 else "scored" for i in range(N)]
    elif case == "latency":
        us = np.full(N, 30_000.0)  # 30 ms a row > 25
    elif case == "shift":
        challenger = scores(3, y, 3, 1.0, shift=2.5)
    else:
        challenger = np.random.default_rng(9).random(N)  # learned nothing
        settings = settings.model_copy(update={"rollout_max_score_psi": 100.0})
    ids = write_log(settings, production, challenger, outcomes, challenger_us=us)
    write_labels(settings, ids, y, known=N)
    report = rollout.apply(settings, registry)
    decision = report.decision
    assert (decision.action, decision.applied) == ("abort", True), decision.reasons
    setting = {"errors": "rollout_max_error_rate", "missing": "rollout_max_missing_rate",
               "latency": "rollout_max_latency_p99_ms",
               "shift": "rollout_max_score_psi", "worse": "rollout_abort_margin"}[case]
    assert [c.name for c in decision.checks if c.breached] == [setting]
    assert registry.rollout("fraud").challenger is None
    assert registry.get("fraud", "v2").stage == "candidate"
    last = registry.get("fraud", "v2").details()["transitions"][-1]
    assert last["actor"] == "skewless rollout" and setting in last["reason"]
    assert last["evidence"]["evidence"]["comparison"]["events"] == N
    aborted = [e for e in registry.audit_events() if e.action == "abort"]
    assert len(aborted) == 1 and aborted[0].detail["evidence"]["checks"]


def test_too_few_events_wait_and_only_this_rollouts_rows_count(world):
    settings, registry = world
    y = labels()[:300]
    bad = ["error"] * 300
    write_log(settings, scores(2, y, 3, 1.0), scores(3, y, 3, 1.0), bad)
    assert rollout.judge(settings, rollout.compare(settings, registry)).action == "wait"
    # Rows from before the rollout started, or against another production version, are not
    # this rollout's evidence.
    write_log(settings, scores(2, labels(), 3, 1.0), scores(3, labels(), 3, 1.0),
              ["error"] * N, start=datetime.now(UTC) - timedelta(days=1))
    write_log(settings, scores(2, labels(), 3, 1.0), scores(3, labels(), 3, 1.0),
              ["error"] * N, production_version="v0")
    c = rollout.compare(settings, registry)
    assert c.events == 300 and rollout.judge(settings, c).action == "wait"


def test_without_a_challenger_there_is_nothing_to_decide_and_the_cli_says_so(world,
                                                                             monkeypatch):
    settings, registry = world
    registry.end_rollout("fraud", "bob", "done")
    assert rollout.apply(settings, registry).decision.action == "none"
    for key, value in {"SKEWLESS_VAR_DIR": settings.var_dir,
                       "SKEWLESS_REPO_PATH": settings.repo_path,
                       "SKEWLESS_FEATURE_SERVICE": "fraud",
                       "SKEWLESS_FEATURE_LOG_DIR": settings.feature_log_dir,
                       "SKEWLESS_LABELS_PATH": settings.resolved_labels_path}.items():
        monkeypatch.setenv(key, str(value))
    result = CliRunner().invoke(cli, ["rollout", "status", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["decision"]["action"] == "none" and doc["comparison"]["challenger"] is None
    assert json.loads(settings.rollout_report_path.read_text()) == doc


def test_the_monitor_report_carries_the_comparison(world):
    from training.monitor import default_window, monitor
    from training.monitor_report import render_html

    settings, registry = world
    y = labels()
    ids = write_log(settings, scores(2, y, 1.5, 1.5), scores(3, y, 3, 1.4))
    write_labels(settings, ids, y, known=3_000)
    now = datetime.now(UTC) + timedelta(minutes=1)
    report = monitor(settings, default_window(settings, None, now), settings.feature_log_dir)
    expected = rollout.compare(settings, registry, now=now)
    assert report.rollout is not None
    assert report.rollout.comparison.to_json() == expected.to_json()
    assert report.rollout.decision.action == "promote"
    html = render_html(report)
    assert "Rollout: v2 (shadow) against v1" in html
    assert f"{expected.labelled.roc_auc.difference:+.4f}" in html
