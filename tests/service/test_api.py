"""The predictor's HTTP surface: readiness, contract refusal, every error path, metrics."""

from __future__ import annotations

import json
import math
import re
import shutil
import time

import httpx
import pytest

from tests.support.service_harness import ROW, app_in_thread, read_logs

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def served(demo, tmp_path_factory):
    settings = demo.settings.model_copy(update={
        "feature_log_dir": tmp_path_factory.mktemp("served-log"), "batch_max_rows": 5,
        "max_body_bytes": 4096,
    })
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http, settings


def test_health_and_readiness(served, demo):
    http, _ = served
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == demo.model.contract.version


def test_predict_returns_score_version_timing_and_explanation(served, demo):
    http, _ = served
    response = http.post("/predict", params={"explain": "true"}, json=ROW)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"request_id", "model_version", "score", "decision", "contributions"}
    assert 0 < body["score"] < 1
    assert body["model_version"] == demo.model.contract.version
    # Contributions are log-odds terms: with the bias they add up to the score's logit.
    logit = sum(body["contributions"].values())
    assert abs(1 / (1 + math.exp(-logit)) - body["score"]) < 1e-9
    stages = dict(part.strip().split(";dur=") for part in
                  response.headers["server-timing"].split(","))
    assert set(stages) == {"features", "transform", "model", "log"}
    assert all(float(v) >= 0 for v in stages.values())


def test_openapi_shows_the_feature_service_fields(served):
    http, _ = served
    schema = http.get("/openapi.json").json()["components"]["schemas"]["PredictRequest"]
    assert schema["properties"]["card_id"]["type"] == "integer"
    assert schema["properties"]["amount"]["type"] == "number"
    assert schema["properties"]["channel"]["type"] == "string"
    assert set(schema["required"]) == {"card_id", "merchant_id", "amount", "channel",
                                       "local_hour"}


@pytest.mark.parametrize(("body", "field", "kind"), [
    ({k: v for k, v in ROW.items() if k != "amount"}, "amount", "missing"),
    ({**ROW, "card_id": "abc"}, "card_id", "int_type"),
    ({**ROW, "card_id": "5"}, "card_id", "int_type"),
    ({**ROW, "local_hour": True}, "local_hour", "int_type"),
    ({**ROW, "channel": 5}, "channel", "literal_error"),  # one of its expectations' categories
    ({**ROW, "amount": "NaN"}, "amount", "float_type"),
    ({**ROW, "cardid": 1}, "cardid", "extra_forbidden"),
])
def test_malformed_body_gets_422_naming_the_field(served, body, field, kind):
    http, _ = served
    response = http.post("/predict", json=body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [(e["loc"][-1], e["type"]) for e in errors] == [(field, kind)]


def test_non_finite_numbers_in_the_json_text_get_422(served):
    http, _ = served
    for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
        body = json.dumps(ROW).replace('"amount": 12.5', f'"amount": {literal}')
        response = http.post("/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, literal
        assert [(e["loc"][-1], e["type"]) for e in response.json()["detail"]] == [
            ("amount", "finite_number")]


def test_invalid_json_and_batch_limits(served):
    http, _ = served
    bad = http.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["type"] == "json_invalid"
    too_many = http.post("/predict/batch", json={"rows": [ROW] * 6})
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["body", "rows"]
    assert too_many.json()["detail"][0]["type"] == "too_long"
    empty = http.post("/predict/batch", json={"rows": []})
    assert empty.status_code == 422
    batch = http.post("/predict/batch", json={"rows": [ROW, {**ROW, "amount": 900.0}]})
    assert batch.status_code == 200
    assert len(batch.json()["predictions"]) == 2


def test_oversized_body_gets_413(served):
    http, settings = served
    padding = {**ROW, "channel": "x" * settings.max_body_bytes}
    response = http.post("/predict", json=padding)
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body larger than {settings.max_body_bytes} bytes"}

    def chunks():  # no Content-Length: the limit applies while the body streams in
        yield b'{"card_id": 1, "channel": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    streamed = http.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_metrics_count_requests_missing_features_and_log_depth(served):
    http, _ = served
    http.post("/predict", json={**ROW, "card_id": 10**12})
    http.post("/predict", json={**ROW, "amount": "x"})
    text = http.get("/metrics").text
    assert 'skewless_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'skewless_http_requests_total{method="POST",route="/predict",status="422"}' in text
    assert 'skewless_http_request_seconds_bucket{le="0.01",method="POST",route="/predict"' in text
    assert 'skewless_feature_missing_total{status="NOT_FOUND",view="card_activity"}' in text
    assert "skewless_redis_seconds_count" in text
    assert 'skewless_model_info{feature_service="fraud_model_v1"' in text
    assert "skewless_feature_log_buffer_rows" in text
    assert "skewless_feature_log_rows_written_total" in text


def _altered_model(demo, tmp_path, change):
    target = tmp_path / "model"
    shutil.copytree(demo.model.directory, target)
    contract = json.loads((target / "contract.json").read_text())
    change(contract)
    (target / "contract.json").write_text(json.dumps(contract))
    return target


@pytest.mark.parametrize(("change", "named"), [
    (lambda c: c["definitions"]["views"]["card_activity"].update(ttl_seconds=1)
     or c.update(fingerprint="sha256:0"), "changed views: card_activity"),
    (lambda c: c["features"][0].update(dtype="Float64"),
     "card_activity__txn_count_1d type Float64 != served Int64"),
])
def test_a_model_whose_contract_differs_is_refused(demo, tmp_path, change, named):
    settings = demo.settings.model_copy(update={
        "model_path": _altered_model(demo, tmp_path, change), "feature_log_dir": tmp_path / "log"})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"].startswith("not ready: model not loaded: model ")
        assert named in ready.json()["detail"]
        predict = http.post("/predict", json=ROW)
        assert predict.status_code == 503
        assert named in predict.json()["detail"]


def test_full_log_buffer_refuses_and_loses_nothing(demo, tmp_path):
    """Policy when full: refuse new predictions with 503; every accepted one is written."""
    log_dir = tmp_path / "log"
    settings = demo.settings.model_copy(update={
        "feature_log_dir": log_dir, "feature_log_capacity": 5,
        "feature_log_flush_rows": 1000, "feature_log_flush_seconds": 3600})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        ids = [http.post("/predict", json=ROW).json()["request_id"] for _ in range(5)]
        refused = http.post("/predict", json=ROW)
        assert refused.status_code == 503
        assert refused.json()["detail"].startswith("feature log buffer full (5 rows")
        assert http.get("/readyz").status_code == 503
        assert 'skewless_feature_log_refused_total 1.0' in http.get("/metrics").text
    assert sorted(read_logs(log_dir)["__request_id"]) == sorted(ids)


def test_failing_log_disk_keeps_rows_until_it_recovers(demo, tmp_path):
    blocked = tmp_path / "log"
    blocked.write_text("a file where the log directory should be")
    settings = demo.settings.model_copy(update={
        "feature_log_dir": blocked, "feature_log_flush_rows": 1,
        "feature_log_flush_seconds": 0.05})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        ids = [http.post("/predict", json=ROW).json()["request_id"] for _ in range(3)]
        deadline = time.monotonic() + 10
        while "skewless_feature_log_write_errors_total 0.0" in http.get("/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status = http.get("/readyz").json()["feature_log"]
        assert status["buffered_rows"] == 3 and "last_error" in status
        blocked.unlink()  # the disk recovers
        while http.get("/readyz").json()["feature_log"]["rows_written"] < 3:
            assert time.monotonic() < deadline + 20
            time.sleep(0.05)
    assert sorted(read_logs(blocked)["__request_id"]) == sorted(ids)


def test_the_demo_serves_sample_requests_and_logs_them(demo, tmp_path):
    from io import StringIO

    from rich.console import Console

    from service.demo import run_serving_demo

    out = StringIO()
    settings = demo.settings.model_copy(update={"feature_log_dir": tmp_path / "log"})
    result = run_serving_demo(settings, Console(file=out, width=200), n=4)
    text = out.getvalue()
    assert "/predict?explain=true" in text and "/docs" in text
    assert "predictor stopped cleanly" in text
    # Each row's decision at the model's threshold, beside its score.
    assert len(re.findall(r"│ 0\.\d{4} +│ (?:yes|no) +│", text)) == 4, text
    # Four single predictions and one batch of the same four rows.
    assert result["logged_rows"] == 8
    assert len(read_logs(tmp_path / "log")) == 8
