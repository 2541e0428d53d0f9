"""The acceptance gate's criteria, each with its evidence, on the demo world's real models.

A candidate trained with one channel's labels shuffled (its training and validation rows; the
holdout untouched) learns nothing about that channel's fraud: on the gate's holdout its paired
ROC AUC difference with production in that channel is confidently below the margin, and the
refusal names that slice. (Dropping a channel's rows instead does not degrade the slice in
this world: the other features carry the same signal, so such a model ranks that channel's
events as well as production does.) The disparity criterion is judged on the inclusion
figures stored in a contract; its thresholds are checked on contracts built for each verdict.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.app import create_catalog_app, serve_in_thread
from skewless.contract import Inclusion, InclusionGroup, InclusionRate
from skewless.db import upgrade
from skewless.gate import FAIL, PASS, WARN, PromotionRefused
from skewless.registry import Registry, bootstrap_production
from training.dataset import TrainingSet
from training.evaluation.gate import disparity_criteria, promote
from training.evaluation.plan import EvaluationPlan, event_columns
from training.train import time_split, train_model

pytestmark = pytest.mark.redis  # the demo world's


def _shuffled_channel(demo, channel: str, model_dir) -> object:
    settings, ts = demo.settings, demo.training_set
    frame = ts.frame
    channels = event_columns(frame, ts.id_column, EvaluationPlan.from_settings(settings).label_source,
                             ["channel"])["channel"].to_numpy()
    holdout_from = time_split(ts, settings.holdout_days, settings.validation_days).holdout[
        ts.timestamp_column].min()
    chosen = (channels == channel) & (frame[ts.timestamp_column] < holdout_from).to_numpy()
    labels = frame[ts.label_column].to_numpy().copy()
    labels[chosen] = np.random.default_rng(3).permutation(labels[chosen])
    shuffled = TrainingSet(frame.assign(**{ts.label_column: labels}), ts.service, ts.cutoff,
                           ts.label_column, ts.timestamp_column, ts.id_column)
    return train_model(shuffled, model_dir, settings.holdout_days, settings.validation_days,
                       evaluation=EvaluationPlan.from_settings(settings))


def test_a_slice_degraded_on_purpose_is_refused_naming_that_slice(demo, tmp_path):
    # A wide overall margin: only the slice criterion can refuse the candidate.
    settings = demo.settings.model_copy(update={"var_dir": tmp_path / "var",
                                                "gate_margin": 0.2})
    upgrade(settings.resolved_database_url)
    production = bootstrap_production(settings, demo.model.directory)
    candidate = _shuffled_channel(demo, "online", settings.model_dir)
    with Registry.from_settings(settings) as registry:
        row = registry.register(candidate.directory)  # type: ignore[attr-defined]
        with pytest.raises(PromotionRefused, match="slice channel = online") as refused:
            promote(settings, registry, "fraud_model_v1", row.version, "carol")
        decision = refused.value.decision
        assert decision is not None and not decision.accepted
        verdicts = {c.name: c for c in decision.criteria}
        assert verdicts["not worse than production"].status == PASS
        online = verdicts["slice channel = online"]
        assert online.status == FAIL and online.setting == "SKEWLESS_GATE_SLICE_MARGIN"
        assert online.evidence["high"] < -settings.gate_slice_margin
        assert online.evidence["low"] <= online.evidence["difference"] <= online.evidence["high"]
        assert online.evidence["rows"] >= settings.gate_slice_min_labels
        # The channel whose labels were kept is not confidently worse.
        assert verdicts["slice channel = pos"].status in (PASS, WARN)
        assert verdicts["slice channel = pos"].evidence["high"] > -settings.gate_slice_margin
        # Every criterion is in the refusal's audit event and on the version's catalog page.
        audit = registry.audit_events()[0]
        assert (audit.actor, audit.outcome) == ("carol", "refused by the gate")
        stored = {c["name"]: c for c in audit.detail["gate"]["criteria"]}
        assert stored["slice channel = online"]["status"] == FAIL
        assert registry.production_version("fraud_model_v1") == production.version
    with serve_in_thread(create_catalog_app(settings)) as url:
        import httpx

        with httpx.Client(base_url=url, timeout=30) as http:
            detail = http.get(f"/api/catalog/models/fraud_model_v1/versions/{row.version}").json()
            page = http.get(f"/catalog/models/fraud_model_v1/versions/{row.version}").text
    (verdict,) = detail["gate"]
    assert verdict["outcome"] == "refused" and verdict["actor"] == "carol"
    assert {c["name"]: c["status"] for c in verdict["criteria"]}["slice channel = online"] == FAIL
    assert "slice channel = online" in verdict["explanation"]
    assert "slice channel = online" in page and "SKEWLESS_GATE_SLICE_MARGIN" in page
    # What training evaluated beside it: baselines, the decision, slices and inclusion.
    assert set(detail["metrics"]["baselines"]) == {"logistic_regression", "one_rule"}
    assert detail["decision"]["threshold"] == candidate.contract.decision.threshold  # type: ignore[attr-defined]
    for section in ('id="baselines"', 'id="decision"', 'id="slices"', 'id="inclusion"'):
        assert section in page


def test_a_candidate_that_learned_nothing_is_refused_naming_the_best_baseline(demo, tmp_path):
    """LightGBM that may not split (a leaf needs more rows than there are) scores every event
    alike, while the baselines trained beside it on the same rows learned the fraud."""
    settings = demo.settings.model_copy(update={"var_dir": tmp_path / "var",
                                                "gate_first_floor": 0.0})
    upgrade(settings.resolved_database_url)
    flat = train_model(demo.training_set, settings.model_dir, settings.holdout_days,
                       settings.validation_days, params={"min_data_in_leaf": 10**9},
                       evaluation=EvaluationPlan.from_settings(settings))
    baselines = flat.contract.metrics.baselines  # type: ignore[union-attr]
    assert flat.holdout.roc_auc == pytest.approx(0.5)
    assert baselines["logistic_regression"].roc_auc > 0.8
    with Registry.from_settings(settings) as registry:
        row = registry.register(flat.directory)
        with pytest.raises(PromotionRefused, match="beats the baselines") as refused:
            promote(settings, registry, "fraud_model_v1", row.version, "dave")
    (failed,) = refused.value.decision.failed()  # type: ignore[union-attr]
    best = max(baselines, key=lambda k: baselines[k].roc_auc)
    assert failed.evidence["best"] == best == "logistic_regression"
    assert f"vs baseline {best} {baselines[best].roc_auc:.4f}" in str(refused.value)


def _inclusion(ratio: float | None, low: float | None, high: float | None) -> Inclusion:
    rates = {"a": InclusionRate(rows=500, positives=20, rate=0.1),
             "b": InclusionRate(rows=500, positives=20, rate=0.1 * (ratio or 0))}
    return Inclusion(threshold=0.3, bootstrap=200, groups={"age_band": InclusionGroup(
        rates={"false_positive_rate": rates}, ratios={"false_positive_rate": ratio},
        ratio_intervals={"false_positive_rate": [low, high]})})


@pytest.mark.parametrize(("ratio", "low", "high", "status"), [
    (0.55, 0.45, 0.70, FAIL),   # confidently below 0.8
    (0.75, 0.60, 0.90, WARN),   # below only by its point estimate
    (0.92, 0.81, 1.00, PASS),
    (None, None, None, "skipped"),
])
def test_a_group_disparity_is_refused_only_when_confident(demo, ratio, low, high, status):
    contract = demo.model.contract.model_copy(deep=True)
    assert contract.metrics is not None
    contract.metrics.inclusion = _inclusion(ratio, low, high)
    (criterion,) = disparity_criteria(demo.settings, contract)
    assert criterion.name == "disparity age_band: false_positive_rate"
    assert criterion.setting == "SKEWLESS_GATE_MIN_GROUP_RATIO"
    assert criterion.status == status
    assert criterion.evidence["by_group"] == {"a": 0.1, "b": 0.1 * (ratio or 0)}
