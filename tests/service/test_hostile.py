"""Hostile input against the real predictor: what cannot be stored is refused up front, and
nothing a client sends can stop the served-feature log."""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.support.service_harness import ROW, app_in_thread, read_logs

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def served(demo, tmp_path_factory):
    settings = demo.settings.model_copy(update={
        "feature_log_dir": tmp_path_factory.mktemp("hostile-log"),
        "feature_log_flush_seconds": 0.2, "max_string_length": 64,
    })
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http, settings


def post(http: httpx.Client, path: str, body: dict) -> httpx.Response:
    """POST ``body`` as a client would put it on the wire: JSON with \\u escapes, so a lone
    surrogate arrives as the six characters ``\\ud800``."""
    return http.post(path, content=json.dumps(body),
                     headers={"content-type": "application/json"})


HOSTILE = [
    pytest.param({**ROW, "local_hour": 10**20}, "local_hour", "less_than_equal", id="int64-overflow"),
    pytest.param({**ROW, "local_hour": -(2**63) - 1}, "local_hour", "greater_than_equal",
                 id="int64-underflow"),
    pytest.param({**ROW, "card_id": 2**63}, "card_id", "less_than_equal", id="key-past-2^63"),
    # channel takes only its expectations' categories: nothing else gets as far as Arrow.
    pytest.param({**ROW, "channel": "\ud800"}, "channel", "string_unicode", id="lone-surrogate"),
    pytest.param({**ROW, "channel": "x" * 200_000}, "channel", "literal_error", id="200kB-string"),
    pytest.param({**ROW, "transaction_id": "x" * 200_000}, "transaction_id", "string_too_long",
                 id="200kB-event-id"),
    pytest.param({**ROW, "transaction_id": 2**64}, "transaction_id", "less_than_equal",
                 id="event-id-overflow"),
    pytest.param({**ROW, "transaction_id": "t-\udc00"}, "transaction_id", "string_unicode",
                 id="event-id-surrogate"),
]


@pytest.mark.parametrize(("body", "field", "kind"), HOSTILE)
def test_a_value_its_feast_type_cannot_hold_is_422_naming_the_field(served, body, field, kind):
    http, _ = served
    response = post(http, "/predict", body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    # The field is named (an event id's errors add the union member tried: int or str).
    assert {tuple(e["loc"][:2]) for e in errors} == {("body", field)}
    assert kind in {e["type"] for e in errors}
    batch = post(http, "/predict/batch", {"rows": [ROW, body]})
    assert batch.status_code == 422
    assert {tuple(e["loc"][:4]) for e in batch.json()["detail"]} == {("body", "rows", 1, field)}


# The request source's expectations (feature_repo/expectations.py), as /predict enforces them.
OUTSIDE = [
    pytest.param({**ROW, "channel": "mail"}, "channel", "literal_error", id="unknown-channel"),
    pytest.param({**ROW, "local_hour": 24}, "local_hour", "less_than_equal", id="hour-24"),
    pytest.param({**ROW, "local_hour": -1}, "local_hour", "greater_than_equal", id="hour-minus-1"),
    pytest.param({**ROW, "amount": -0.01}, "amount", "greater_than_equal", id="negative-amount"),
    pytest.param({**ROW, "amount": 1_000_000.5}, "amount", "less_than_equal", id="huge-amount"),
]


@pytest.mark.parametrize(("body", "field", "kind"), OUTSIDE)
def test_a_request_field_outside_its_expectations_is_422_naming_it(served, body, field, kind):
    http, _ = served
    response = post(http, "/predict", body)
    assert response.status_code == 422, response.text
    assert [(e["loc"][:2], e["type"]) for e in response.json()["detail"]] == [
        (["body", field], kind)]


def test_the_openapi_schema_states_the_expectations(served):
    http, _ = served
    row = http.get("/openapi.json").json()["components"]["schemas"]["PredictRequest"]
    fields = row["properties"]
    assert fields["channel"]["enum"] == ["pos", "online", "atm"]
    assert (fields["local_hour"]["minimum"], fields["local_hour"]["maximum"]) == (0, 23)
    assert (fields["amount"]["minimum"], fields["amount"]["maximum"]) == (0, 1_000_000)
    assert "expectations.transaction_request" in fields["amount"]["description"]
    assert fields["card_id"]["minimum"] == -(2**63)  # a key keeps its type's bounds only


@pytest.mark.parametrize("rows", [1000, 260_000], ids=["1000-empty-rows", "800kB-of-empty-rows"])
def test_a_large_malformed_body_gets_a_small_answer_without_its_values(served, rows):
    http, settings = served
    body = json.dumps({"rows": [{}] * rows, "x": "secret-value"})
    assert len(body) < settings.max_body_bytes
    response = http.post("/predict/batch", content=body,
                         headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert len(response.content) < 3000
    detail = response.json()["detail"]
    assert 0 < len(detail) <= 10
    assert all(set(e) <= {"type", "loc", "msg"} for e in detail)
    assert "secret-value" not in response.text
    assert response.json().get("error_count", len(detail)) >= len(detail)
    if rows == 1000:  # five missing fields a row, and the unknown field
        assert response.json()["error_count"] == 5 * rows + 1


def test_after_hostile_requests_every_normal_prediction_is_logged(demo, tmp_path):
    """The defect this guards: a row Arrow cannot hold used to block the writer for good."""
    log_dir = tmp_path / "log"
    settings = demo.settings.model_copy(update={
        "feature_log_dir": log_dir, "feature_log_flush_seconds": 0.1})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        for body, *_ in (p.values for p in HOSTILE):
            assert post(http, "/predict", body).status_code == 422
        ok = [http.post("/predict", json={**ROW, "transaction_id": f"t-{i}"}) for i in range(50)]
        assert all(r.status_code == 200 for r in ok)
        ids = {r.json()["request_id"] for r in ok}
        deadline = time.monotonic() + 15
        while http.get("/readyz").json()["feature_log"]["rows_written"] < 50:
            assert time.monotonic() < deadline, http.get("/readyz").json()
            time.sleep(0.05)
        assert http.get("/readyz").status_code == 200
    assert set(read_logs(log_dir)["__request_id"]) == ids


def test_a_writer_that_cannot_write_is_not_ready_and_recovers(demo, tmp_path):
    blocked = tmp_path / "log"
    blocked.write_text("a file where the log directory should be")
    settings = demo.settings.model_copy(update={
        "feature_log_dir": blocked, "feature_log_flush_seconds": 0.1})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        ids = [http.post("/predict", json=ROW).json()["request_id"] for _ in range(3)]
        deadline = time.monotonic() + 15
        while (ready := http.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "the stalled writer was never reported"
            time.sleep(0.05)
        assert ready.status_code == 503
        assert "feature log writer stalled: 3 rows waiting" in ready.json()["detail"]
        assert ready.json()["feature_log"]["last_error"]
        blocked.unlink()  # the disk recovers: the rows are written, the service is ready again
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline + 15
            time.sleep(0.05)
        assert http.get("/readyz").json()["feature_log"]["rows_written"] == 3
    assert sorted(read_logs(blocked)["__request_id"]) == sorted(ids)


# Non-finite values and scores ---------------------------------------------------------------

NEW_CARDS = 10_000_000  # entities of this module's own, apart from every other test's


def strict_json(text: str):
    def refuse(constant: str):
        raise AssertionError(f"{constant} in a response: not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def new_entities(demo):
    """200 new cards online with fresh values copied from real ones; card 0's 28-day mean is
    infinite and card 1's NaN (as a broken upstream export might write them)."""
    store = demo.store()
    now = datetime.now(UTC)
    rows = {}
    for view in ("card_activity", "card_profile"):
        table = pd.read_parquet(demo.settings.data_dir / f"{view}.parquet")
        latest = table.sort_values("event_timestamp").groupby("card_id").tail(1).head(200)
        latest = latest.assign(card_id=NEW_CARDS + np.arange(len(latest)),
                               event_timestamp=now - timedelta(hours=1), created_timestamp=now)
        if view == "card_activity":
            latest["amount_mean_28d"] = latest["amount_mean_28d"].astype(float)
            latest.loc[latest.index[0], "amount_mean_28d"] = math.inf
            latest.loc[latest.index[1], "amount_mean_28d"] = math.nan
        store.write_to_online_store(view, latest.reset_index(drop=True))
        rows[view] = latest
    merchants = pd.read_parquet(demo.settings.data_dir / "merchant_stats.parquet")
    merchant = merchants.sort_values("event_timestamp").tail(1).assign(
        merchant_id=NEW_CARDS, event_timestamp=now - timedelta(hours=1), created_timestamp=now)
    store.write_to_online_store("merchant_stats", merchant.reset_index(drop=True))
    rng = np.random.default_rng(5)
    return [{"card_id": NEW_CARDS + i, "merchant_id": NEW_CARDS,
             "amount": round(float(rng.lognormal(3.5, 1.2)), 2),
             "channel": str(rng.choice(["pos", "online", "atm"])),
             "local_hour": int(rng.integers(0, 24))} for i in range(len(rows["card_activity"]))]


def test_non_finite_feature_values_are_answered_as_null_and_logged_as_seen(
        demo, new_entities, tmp_path):
    log_dir = tmp_path / "log"
    settings = demo.settings.model_copy(update={"feature_log_dir": log_dir})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        answers = [http.post("/predict?include_features=true&explain=true", json=body)
                   for body in new_entities[:2]]
    for answer in answers:
        assert answer.status_code == 200
        body = strict_json(answer.text)
        assert body["features"]["card_activity__amount_mean_28d"] == {
            "value": None, "status": "NULL_VALUE"}
        assert math.isfinite(body["score"])
    logged = read_logs(log_dir).set_index("card_id")["card_activity__amount_mean_28d"]
    assert logged[NEW_CARDS] == math.inf and math.isnan(logged[NEW_CARDS + 1])


def nan_leaf_model(demo, target: Path, vectors: list[list]) -> tuple[Path, list[bool]]:
    """The demo model with one leaf of its first tree set to NaN: a leaf some of ``vectors``
    reach and the all-missing row (the load-time smoke test) does not. Returns the artefact
    and which vectors reach it."""
    from service.scoring import Scorer
    from skewless.artifact import load_artifact, sha256_file

    artifact = load_artifact(demo.model.directory)
    scorer = Scorer(artifact)
    try:
        leaves = artifact.booster.predict(scorer.matrix(vectors), pred_leaf=True)[:, 0]
        empty = artifact.booster.predict(scorer.matrix([[None] * len(vectors[0])]),
                                         pred_leaf=True)[0, 0]
    finally:
        scorer.close()
    counts = Counter(int(leaf) for leaf in leaves if leaf != empty)
    (leaf, _), *_ = counts.most_common(1)
    assert 0 < counts[leaf] < len(vectors)
    shutil.copytree(demo.model.directory, target)
    text = re.sub(r"tree_sizes=[^\n]*\n", "", (target / "model.txt").read_text())
    tree = re.search(r"Tree=0\n(?:[^\n]*\n)*?leaf_value=([^\n]*)", text)
    assert tree is not None
    values = tree.group(1).split(" ")
    values[leaf] = "nan"
    text = text[:tree.start(1)] + " ".join(values) + text[tree.end(1):]
    (target / "model.txt").write_text(text)
    contract = json.loads((target / "contract.json").read_text())
    contract["model"]["sha256"] = sha256_file(target / "model.txt")
    (target / "contract.json").write_text(json.dumps(contract))
    return target, [int(x) == leaf for x in leaves]


def test_a_non_finite_score_is_never_returned(demo, new_entities, tmp_path):
    requests = new_entities[2:]
    with app_in_thread(demo.settings.model_copy(update={"feature_log_dir": tmp_path / "a"})) \
            as url, httpx.Client(base_url=url, timeout=10) as http:
        served = [http.post("/predict?include_features=true", json=body).json()
                  for body in requests]
    names = list(served[0]["features"])
    vectors = [[p["features"][n]["value"] for n in names] for p in served]
    model, reaches = nan_leaf_model(demo, tmp_path / "nan-model", vectors)
    log_dir = tmp_path / "log"
    settings = demo.settings.model_copy(update={"feature_log_dir": log_dir, "model_path": model})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/readyz").status_code == 200  # loaded: the empty row scores finite
        answers = [http.post("/predict", json=body) for body in requests]
        batch = http.post("/predict/batch", json={"rows": requests[:50]})
        metrics = http.get("/metrics").text
    for answer, bad in zip(answers, reaches, strict=True):
        if bad:
            assert answer.status_code == 500
            assert "model returned a non-finite score" in answer.json()["detail"]
        else:
            assert answer.status_code == 200 and math.isfinite(strict_json(answer.text)["score"])
    assert batch.status_code == (500 if any(reaches[:50]) else 200)
    nonfinite = sum(reaches) + sum(reaches[:50])
    assert f"skewless_nonfinite_predictions_total {float(nonfinite)}" in metrics
    logged = read_logs(log_dir)
    assert len(logged) == sum(not bad for bad in reaches) + (0 if any(reaches[:50]) else 50)


# Heavy scoring off the event loop -----------------------------------------------------------


def in_flight(http: httpx.Client) -> float:
    (line,) = [x for x in http.get("/metrics").text.splitlines()
               if x.startswith("skewless_model_pool_in_flight ")]
    return float(line.split()[1])


def explained_batch(url: str, rows: list[dict], done: dict) -> None:
    with httpx.Client(base_url=url, timeout=120) as http:
        done["batch"] = http.post("/predict/batch?explain=true", json={"rows": rows})
        done["batch_at"] = time.monotonic()


def wait_until_running(http: httpx.Client, worker) -> None:
    deadline = time.monotonic() + 60
    while in_flight(http) < 1:  # /metrics answers while the batch runs: the loop is free
        assert worker.is_alive() and time.monotonic() < deadline, "the batch never ran"


def test_explained_rows_are_capped(served):
    http, settings = served
    rows = [ROW] * (settings.explain_max_rows + 1)
    too_many = http.post("/predict/batch?explain=true", json={"rows": rows})
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["query", "explain"]
    assert http.post("/predict/batch?explain=true", json={"rows": rows[1:]}).status_code == 200


@contextmanager
def explained_batch_running(demo, new_entities, tmp_path, **update):
    """An app whose largest allowed explained batch (1,000 rows) is running in its pool; yields
    a client, the worker thread and where the batch's answer lands."""
    settings = demo.settings.model_copy(update={
        "feature_log_dir": tmp_path / "log", "batch_max_rows": 1000, "explain_max_rows": 1000,
        **update})
    rows = [new_entities[2 + i % (len(new_entities) - 2)] for i in range(1000)]
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        done: dict = {}
        worker = threading.Thread(target=explained_batch, args=(url, rows, done))
        worker.start()
        wait_until_running(http, worker)
        yield http, worker, done


def test_the_loop_answers_while_the_largest_explained_batch_runs(demo, new_entities, tmp_path):
    with explained_batch_running(demo, new_entities, tmp_path) as (http, worker, done):
        assert http.get("/healthz").status_code == 200
        healthz_at = time.monotonic()
        worker.join()
    assert done["batch"].status_code == 200
    assert len(done["batch"].json()["predictions"]) == 1000
    assert healthz_at < done["batch_at"]  # answered before the batch finished


def test_a_full_model_pool_answers_503_with_retry_after(demo, new_entities, tmp_path):
    with explained_batch_running(demo, new_entities, tmp_path, model_workers=1,
                                 model_queue=0) as (http, worker, done):
        refused = http.post("/predict?explain=true", json=ROW)
        single = http.post("/predict", json=ROW)  # one row stays on the loop: not refused
        worker.join()
        metrics = http.get("/metrics").text
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "model workers busy" in refused.json()["detail"]
    assert single.status_code == 200
    assert done["batch"].status_code == 200
    assert "skewless_model_pool_refused_total 1.0" in metrics


# The admin audit ----------------------------------------------------------------------------


def test_calls_without_a_token_are_counted_and_cannot_grow_the_audit(demo, tmp_path):
    from skewless.registry import Registry, bootstrap_production

    settings = demo.settings.model_copy(update={
        "feature_log_dir": tmp_path / "log",
        "database_url": f"sqlite:///{tmp_path / 'meta.db'}"})
    bootstrap_production(settings, demo.model.directory)
    long_path = "/admin/" + "x" * 60_000
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        for _ in range(30):
            assert http.get(long_path).status_code == 404
            assert http.get("/admin/models").status_code == 401
            assert http.get("/admin/models",
                            headers={"authorization": "Bearer wrong"}).status_code == 403
        token = {"authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
        assert http.get("/admin/models", headers=token).status_code == 200
        metrics = http.get("/metrics").text
    for status in (401, 403, 404):
        assert f'skewless_admin_denied_total{{status="{status}"}} 30.0' in metrics
    with Registry.from_settings(settings) as registry:
        events = [e for e in registry.audit_events(limit=1000) if e.action != "promote"]
    denied = [e for e in events if e.actor in ("anonymous", "wrong token")]
    assert sorted(e.outcome for e in denied) == ["401", "403", "404"]  # one each this minute
    assert all(len(e.target) <= 1000 and len(e.action) <= 200 for e in events)
    assert [e.outcome for e in events if e.actor == "admin token"] == ["200"]


@pytest.mark.parametrize("path", ["/predict?explain=false&explain=true",
                                  "/predict?include_features=true;include_features=false"])
def test_a_query_parameter_given_twice_is_422_naming_it(served, path):
    http, _ = served
    response = post(http, path, ROW)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["query", path.split("?")[1]
                                                              .split("=")[0]]]
    assert http.get("/api/catalog?q=a&q=b").status_code == 422
