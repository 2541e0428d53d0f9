"""`skewless backtest` on a drifting world: models trained before the drift decay after it.

The generator's concept drift (from day 52 of 70, ``end`` = now) on the categories a model
learns to think safe — groceries and fuel gain fraud risk — in its own Feast repo. Three
cut-offs three days apart, all a few days before the drift, each model evaluated over the 16
days after it: its first days are before the drift, its last ones after it. The maximum
useful age found is then stored with the next model, and the predictor exports it beside the
model's age.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from skewless.contract import Staleness, resolve_service
from skewless.feast_cli import open_store, run_feast
from skewless.registry import Registry, bootstrap_production
from skewless.reports.backtest import BacktestReport
from skewless.settings import Settings
from tests.support.demo import copy_feature_repo
from tests.support.drift_world import hour_now, serving
from training.dataset import LabelSource, build_training_set, load_label_events
from training.evaluation.backtest import (
    cutoffs_for,
    read_staleness,
    report_path,
    run_backtest,
    write_backtest,
)
from training.evaluation.plan import EvaluationPlan
from training.generate import GenerateConfig, generate, write_generated
from training.pipeline import PipelinePaths, build_feature_tables
from training.train import TrainResult, train_model

pytestmark = [pytest.mark.redis, pytest.mark.slow]
# Three cut-offs three days apart, each a few days before the drift, evaluated over 16 days:
# the models' first days are before the drift, their last ones all after it.
CUTOFFS, STEP, HORIZON = 3, 3.0, 16.0
CARDS, DAYS, DRIFT_DAY = 600, 70, 52
DRIFT = {"drift_categories": ("grocery", "fuel"), "drift_bonus": 2.5}


@dataclass
class Backtested:
    settings: Settings
    now: datetime
    drift_from: datetime
    report: BacktestReport
    seconds: float


@pytest.fixture(scope="module")
def backtested(tmp_path_factory, redis_server) -> Backtested:
    root = tmp_path_factory.mktemp("backtest")
    settings = Settings(repo_path=copy_feature_repo(root / "feature_repo"), var_dir=root / "var",
                        redis=redis_server.connection_string, backtest_cutoffs=CUTOFFS,
                        backtest_step_days=STEP, backtest_horizon_days=HORIZON,
                        registry_poll_seconds=0.2)
    now = hour_now()
    data = generate(GenerateConfig(cards=CARDS, days=DAYS, end=now, drift_day=DRIFT_DAY,
                                   holdout_days=settings.holdout_days, **DRIFT))
    write_generated(data, settings.raw_dir)
    build_feature_tables(PipelinePaths.from_settings(settings))
    run_feast(settings, "apply")
    started = time.perf_counter()
    report = run_backtest(settings, now=now)
    seconds = time.perf_counter() - started
    write_backtest(settings, report)
    return Backtested(settings, now, datetime.fromisoformat(data.meta["drift_from"]), report,
                      seconds)


def test_the_cutoffs_count_back_from_the_latest_labelled_event(backtested):
    report, settings = backtested.report, backtested.settings
    latest = datetime.fromisoformat(report.latest_labelled_event)
    assert latest <= backtested.now
    expected = [latest - timedelta(days=HORIZON + STEP * k) for k in (3, 2, 1)]
    assert [datetime.fromisoformat(r.cutoff) for r in report.cutoffs] == expected
    assert cutoffs_for(latest, CUTOFFS, STEP, HORIZON) == expected
    # The model of a cut-off learned from exactly the label events known then.
    store = open_store(settings)
    spec = resolve_service(store, settings.feature_service)
    source = LabelSource.from_settings(settings)
    for run, cutoff in zip(report.cutoffs, expected, strict=True):
        assert run.train_rows == load_label_events(source, spec, cutoff).num_rows
        assert run.evaluated_positives > 100
    assert len(report.curve) == HORIZON
    assert sum(p.rows for p in report.curve) == sum(r.evaluated_rows for r in report.cutoffs)


def test_after_the_drift_the_curve_falls_with_age(backtested):
    report = backtested.report
    assert report.metric == "roc_auc"
    for run in report.cutoffs:
        cutoff = datetime.fromisoformat(run.cutoff)
        assert cutoff < backtested.drift_from < cutoff + timedelta(days=HORIZON - 3)
    fresh = report.curve[0].metric
    assert fresh == report.fresh and fresh is not None
    oldest = [p.metric for p in report.curve[-3:]]
    assert all(m is not None and m < fresh - report.margin for m in oldest), (fresh, oldest)
    for point in report.curve:
        assert point.metric is not None and point.low is not None and point.high is not None
        assert point.low <= point.metric <= point.high
        assert point.metric == pytest.approx(np.mean([v for v in point.per_cutoff
                                                      if v is not None]))
    # Found before the horizon: the first age below fresh − margin.
    assert not report.at_least
    assert 0 < report.max_age_days < report.horizon_days
    first = next(p for p in report.curve[1:] if p.metric is not None
                 and p.metric < report.threshold)
    assert report.max_age_days == first.age_days
    assert report.max_age_seconds == first.age_days * 86_400
    assert report.threshold == pytest.approx(fresh - 0.01)


def test_the_report_is_stored_and_read_back(backtested):
    settings, report = backtested.settings, backtested.report
    path = report_path(settings)
    assert path == settings.var_dir / "backtest" / "fraud_model_v1.json"
    assert BacktestReport.model_validate_json(path.read_text()) == report
    dated = [p for p in path.parent.glob("fraud_model_v1-*.json")]
    assert len(dated) == 1 and dated[0].read_text() == path.read_text()
    page = (path.parent / "fraud_model_v1.html").read_text()
    assert "<svg" in page and "Maximum useful age" in page and "<script" not in page
    assert read_staleness(settings) == Staleness(
        max_age_seconds=report.max_age_seconds, at_least=False, margin=0.01,
        metric="roc_auc", backtest_at=report.generated_at, report=str(path))


def test_without_a_readable_report_there_is_no_staleness(backtested, tmp_path):
    settings = backtested.settings.model_copy(update={"var_dir": tmp_path})
    assert read_staleness(settings) is None
    report_path(settings).parent.mkdir(parents=True)
    report_path(settings).write_text('{"feature_service": "fraud_model_v1", "curve": [')
    assert read_staleness(settings) is None
    assert EvaluationPlan.from_settings(settings).staleness is None


@pytest.fixture(scope="module")
def trained(backtested) -> tuple[TrainResult, TrainResult]:
    """A model trained after the backtest (carrying its staleness), and one without it."""
    settings, now = backtested.settings, backtested.now
    ts = build_training_set(settings, cutoff=now, since=now - timedelta(days=30))
    after = train_model(ts, settings.model_dir, settings.holdout_days, settings.validation_days,
                        evaluation=EvaluationPlan.from_settings(settings))
    without = train_model(ts, settings.model_dir, settings.holdout_days,
                          settings.validation_days, seed=8)
    return after, without


def test_a_model_trained_after_the_backtest_carries_its_staleness(backtested, trained):
    after, without = trained
    report = backtested.report
    staleness = after.contract.staleness
    assert staleness is not None
    assert staleness.max_age_seconds == report.max_age_seconds
    assert (staleness.metric, staleness.margin, staleness.at_least) == ("roc_auc", 0.01, False)
    assert staleness.backtest_at == report.generated_at
    stored = (after.directory / "contract.json").read_text()
    assert '"staleness"' in stored
    assert without.contract.staleness is None
    assert '"staleness"' not in (without.directory / "contract.json").read_text()


def _gauges(http: httpx.Client) -> dict[str, dict[tuple[str, str], float]]:
    found: dict[str, dict[tuple[str, str], float]] = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        if family.name in ("skewless_model_age_seconds", "skewless_model_max_age_seconds"):
            found[family.name] = {(s.labels["model"], s.labels["model_version"]): s.value
                                  for s in family.samples}
    return found


def _age(result: TrainResult) -> float:
    assert result.contract.training is not None and result.contract.training.cutoff
    return time.time() - datetime.fromisoformat(result.contract.training.cutoff).timestamp()


def test_the_predictor_exports_the_models_age_and_max_age_across_a_swap(backtested, trained):
    settings = backtested.settings
    after, without = trained
    first = bootstrap_production(settings, after.directory).version
    with serving(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        gauges = _gauges(http)
        key = ("fraud_model_v1", first)
        assert gauges["skewless_model_age_seconds"][key] == pytest.approx(_age(after), abs=30)
        assert gauges["skewless_model_max_age_seconds"] == {
            key: backtested.report.max_age_seconds}
        # A production model without a backtest: its age, no maximum (nothing to alert on).
        with Registry.from_settings(settings) as registry:
            second = registry.register(without.directory).version
            registry.promote("fraud_model_v1", second, "test", "swap", {}, forced=True,
                             expected_production=first)
        deadline = time.monotonic() + 60
        while _gauges(http).get("skewless_model_age_seconds", {}).keys() != {
                ("fraud_model_v1", second)}:
            assert time.monotonic() < deadline, _gauges(http)
            time.sleep(0.2)
        gauges = _gauges(http)
        assert gauges["skewless_model_age_seconds"][("fraud_model_v1", second)] == (
            pytest.approx(_age(without), abs=30))
        assert "skewless_model_max_age_seconds" not in gauges


def test_runtime(backtested):
    """The backtest's own runtime at this size (reported; bounded loosely for a busy host)."""
    assert backtested.report.seconds == pytest.approx(backtested.seconds, abs=5)
    assert backtested.seconds < 900


def test_paths_are_per_feature_service(backtested):
    other = backtested.settings.model_copy(update={"feature_service": "other_v1"})
    assert report_path(other) == Path(other.var_dir) / "backtest" / "other_v1.json"
