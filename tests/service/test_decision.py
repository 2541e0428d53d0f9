"""/predict's decision: the score against the served model's threshold, per row."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest

from service.scoring import Scorer
from skewless.artifact import load_artifact
from tests.support.service_harness import ROW, app_in_thread

pytestmark = pytest.mark.redis

# Rows whose scores spread: the request-time fields move the score even without online values.
ROWS = [{**ROW, "amount": amount, "channel": channel, "local_hour": hour}
        for amount, channel, hour in [(5.0, "pos", 14), (80.0, "online", 3), (2500.0, "online", 2),
                                      (40.0, "pos", 11), (900.0, "online", 4),
                                      (15.0, "pos", 16)]]


def _copy(demo, tmp_path, name, change):
    target = tmp_path / name
    shutil.copytree(demo.model.directory, target)
    contract = json.loads((target / "contract.json").read_text())
    change(contract)
    (target / "contract.json").write_text(json.dumps(contract))
    return target


def _scores(http):
    batch = http.post("/predict/batch", json={"rows": ROWS})
    assert batch.status_code == 200
    return batch.json()["predictions"]


def _check_decisions(http, threshold):
    """Every row's decision, single and in a batch, is its score against ``threshold``."""
    predictions = _scores(http)
    decisions = [p["decision"] for p in predictions]
    assert decisions == [p["score"] >= threshold for p in predictions]
    assert True in decisions and False in decisions  # the threshold splits these rows
    for row, batched in zip(ROWS, predictions, strict=True):
        single = http.post("/predict", json=row).json()
        assert single["score"] == batched["score"]
        assert single["decision"] is (single["score"] >= threshold)
    assert http.get("/readyz").json()["decision_threshold"] == threshold


@pytest.fixture(scope="module")
def spread(demo, tmp_path_factory):
    """A threshold between the rows' scores (the served demo model's), so both answers occur."""
    settings = demo.settings.model_copy(update={
        "feature_log_dir": tmp_path_factory.mktemp("decision-log"), "batch_max_rows": 10})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        scores = sorted(p["score"] for p in _scores(http))
        ready = http.get("/readyz").json()
    assert ready["decision_threshold"] == demo.model.contract.decision.threshold
    assert scores[0] < scores[-1]
    return float(np.median(scores)) if scores[2] < scores[3] else (scores[0] + scores[-1]) / 2


def test_the_contract_threshold_decides_single_and_batch(demo, tmp_path, spread):
    def own_threshold(contract):
        contract["decision"]["threshold"] = spread

    settings = demo.settings.model_copy(update={
        "model_path": _copy(demo, tmp_path, "model", own_threshold),
        "feature_log_dir": tmp_path / "log", "batch_max_rows": 10,
        "decision_threshold": 0.999})  # not used: the model has its own
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        _check_decisions(http, spread)


def test_without_a_contract_threshold_the_setting_decides(demo, tmp_path, spread):
    settings = demo.settings.model_copy(update={
        "model_path": _copy(demo, tmp_path, "model", lambda c: c.pop("decision")),
        "feature_log_dir": tmp_path / "log", "batch_max_rows": 10,
        "decision_threshold": spread})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        _check_decisions(http, spread)


def test_a_scorer_takes_its_threshold_from_the_model_it_loads(demo, tmp_path):
    with_policy = Scorer(load_artifact(demo.model.directory), fallback_threshold=0.9)
    without = Scorer(load_artifact(_copy(demo, tmp_path, "plain",
                                         lambda c: c.pop("decision"))), fallback_threshold=0.9)
    try:
        assert with_policy.threshold == demo.model.contract.decision.threshold != 0.9
        assert without.threshold == 0.9
    finally:
        with_policy.close()
        without.close()


def test_openapi_declares_the_decision(demo, tmp_path):
    settings = demo.settings.model_copy(update={"feature_log_dir": tmp_path / "log"})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        schemas = http.get("/openapi.json").json()["components"]["schemas"]
    for name in ("PredictResponse", "BatchPrediction"):
        assert schemas[name]["properties"]["decision"]["type"] == "boolean"
        assert "decision" in schemas[name]["required"]
