"""The catalog's experiments API, over a real search served by the catalog app.

A search of 8 trials runs on a tenth of the demo's training set (as in
tests/offline/test_experiment.py) and registers its best run; two more experiments are
written as a stopped search and a running one would leave them. Every figure the API shows
is compared with the metadata database's rows, read back independently.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.app import create_catalog_app, serve_in_thread
from skewless.db import upgrade
from skewless.embedded_redis import free_port
from skewless.experiments import Experiment, Experiments
from skewless.registry import Registry
from training.experiment import run_experiment
from training.train import dataset_identity

pytestmark = pytest.mark.redis  # the demo world's

TRIALS = 8
# Its random first trials draw at most 74 leaves (monotone constraints make many leaves
# slow: seed 5's first trial alone takes minutes), and its last three are pruned.
SEED = 261
NAME = 'small search <script>alert("x")</script>'


@pytest.fixture(scope="module")
def searched(demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog-experiments")
    ts = demo.training_set
    frame = ts.frame.sample(frac=0.1, random_state=3).sort_values(ts.timestamp_column)
    small = replace(ts, frame=frame.reset_index(drop=True)).write(root / "small.parquet")
    settings = demo.settings.model_copy(update={"var_dir": root / "var"})
    upgrade(settings.resolved_database_url)
    result = run_experiment(settings, small, TRIALS, seed=SEED, name=NAME)
    searched_id = result.experiment.id

    with Experiments.from_settings(settings) as store:
        done = store.get(searched_id)
        fields = {k: getattr(done, k) for k in (
            "metric", "seed", "search", "dataset_uri", "dataset_sha256", "dataset_rows",
            "windows", "git_commit", "libraries", "created_by")}
        # Stopped by an error after a complete run and a failed one: nothing registered.
        stopped = store.start(name="stopped", feature_service="other_service", state="running",
                              trials=4, **fields)
        started = datetime.now(UTC) - timedelta(minutes=5)
        for number, state, value in ((0, "complete", 0.71), (1, "failed", None)):
            store.record_run(
                stopped.id, number=number, state=state, value=value,
                params={"learning_rate": 0.05, "num_leaves": 31},
                metrics={"rounds": 3 - number}, steps={"auc": [0.6, 0.7, 0.71][:3 - number]},
                started_at=started, finished_at=started + timedelta(seconds=2),
                duration_seconds=2.0,
                error="LightGBMError: out of memory" if state == "failed" else None)
        store.finish(stopped.id, state="failed", error="KeyboardInterrupt: stopped")
        running = store.start(name="just started", feature_service=done.feature_service,
                              state="running", trials=20, **fields)
    with Registry.from_settings(settings) as registry:
        model = registry.get(done.feature_service, done.model_version)
    with serve_in_thread(create_catalog_app(settings)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        yield {"http": http, "settings": settings, "id": searched_id, "stopped": stopped.id,
               "running": running.id, "small": small, "model": model}


def stored(searched, experiment_id: int) -> Experiment:
    with Experiments.from_settings(searched["settings"]) as store:
        return store.get(experiment_id)


def get(searched, path: str, **params) -> dict:
    response = searched["http"].get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_list_shows_every_experiment_newest_first(searched):
    listed = get(searched, "/api/catalog/experiments")
    with Experiments.from_settings(searched["settings"]) as store:
        rows = list(reversed(store.all()))
    assert [e["id"] for e in listed["experiments"]] == [e.id for e in rows] == [
        searched["running"], searched["stopped"], searched["id"]]
    for got, row in zip(listed["experiments"], rows, strict=True):
        counts = {s: sum(r.state == s for r in row.runs) for s in ("complete", "pruned", "failed")}
        best = row.best_run
        assert got["runs"] == counts
        assert (got["name"], got["state"], got["trials"], got["feature_service"]) == (
            row.name, row.state, row.trials, row.feature_service)
        assert (got["best_run"], got["best_number"], got["best_value"]) == (
            (best.id, best.number, best.value) if best else (None, None, None))
        assert got["model_version"] == row.model_version
        assert got["url"] == f"/catalog/experiments/{row.id}"
    searched_one = listed["experiments"][-1]
    assert searched_one["model_url"] == (
        f"/catalog/models/{searched['model'].name}/versions/{searched['model'].version}")

    only = get(searched, "/api/catalog/experiments", feature_service="other_service")
    assert [e["id"] for e in only["experiments"]] == [searched["stopped"]]
    assert get(searched, "/api/catalog/experiments", feature_service="none\x00such")[
        "experiments"] == []


def test_the_detail_equals_the_database(searched):
    row = stored(searched, searched["id"])
    d = get(searched, f"/api/catalog/experiments/{row.id}")
    e = d["experiment"]
    assert (e["name"], e["state"], e["metric"], e["seed"], e["trials"]) == (
        NAME, "complete", row.metric, SEED, TRIALS)
    assert d["dataset"] == {"uri": str(searched["small"].resolve()),
                            "sha256": dataset_identity(searched["small"])[0],
                            "rows": dataset_identity(searched["small"])[1]}
    assert d["git_commit"] == row.git_commit and d["windows"] == row.windows
    assert d["search"] == row.search and d["parameters"] == list(row.search["space"])
    assert d["holdout"] == searched["model"].metrics["holdout"]
    assert [r["number"] for r in d["runs"]] == list(range(TRIALS))
    for got, run in zip(d["runs"], row.runs, strict=True):
        assert (got["id"], got["state"], got["value"], got["params"], got["steps"]) == (
            run.id, run.state, run.value, run.params, run.steps)
        assert got["rounds"] == len(run.steps["auc"])  # run, early stopping's rounds too
        assert got["best_iteration"] == run.metrics.get("best_iteration")
        assert got["best"] == (run.number == row.best_run_number)
    complete = [r for r in row.runs if r.state == "complete"]
    assert {r.state for r in row.runs} >= {"complete", "pruned"}  # the search pruned some
    assert e["best_value"] == max(r.value for r in complete)
    assert [(i["parameter"], i["importance"]) for i in d["importances"]] == sorted(
        row.importances.items(), key=lambda kv: -kv[1])
    assert d["not_computed"] == {}


def test_a_stopped_and_a_running_search_say_what_is_missing(searched):
    stopped = get(searched, f"/api/catalog/experiments/{searched['stopped']}")
    assert stopped["error"] == "KeyboardInterrupt: stopped"
    assert [r["value"] for r in stopped["runs"]] == [0.71, None]
    assert stopped["not_computed"] == {"importances": "not computed: the search failed",
                                       "model": "none registered: the search failed"}

    running = get(searched, f"/api/catalog/experiments/{searched['running']}")
    assert running["runs"] == [] and running["importances"] is None
    assert running["not_computed"]["runs"] == "no run recorded yet"


@pytest.mark.parametrize(("path", "status", "detail"), [
    ("/api/catalog/experiments/999999", 404, "no experiment 999999"),
    ("/api/catalog/experiments/2147483647", 404, "no experiment 2147483647"),
    ("/api/catalog/experiments/2147483648", 422, None),
    ("/api/catalog/experiments/99999999999999999999999", 422, None),
    ("/api/catalog/experiments/0", 422, None),
    ("/api/catalog/experiments/-1", 422, None),
    ("/api/catalog/experiments/abc", 422, None),
    ("/api/catalog/experiments/1.5", 422, None),
])
def test_unknown_and_malformed_ids_are_refused_by_the_api(searched, path, status, detail):
    response = searched["http"].get(path)
    assert response.status_code == status, response.text
    if detail:
        assert response.json() == {"detail": detail}


def test_openapi_documents_the_experiment_routes(searched):
    paths = searched["http"].get("/openapi.json").json()["paths"]
    listing = paths["/api/catalog/experiments"]["get"]
    detail = paths["/api/catalog/experiments/{experiment_id}"]["get"]
    assert {"200", "503"} <= set(listing["responses"])
    assert {"200", "404", "422", "503"} <= set(detail["responses"])
    (param,) = detail["parameters"]
    assert (param["schema"]["type"], param["schema"]["minimum"], param["schema"]["maximum"]) == (
        "integer", 1, 2**31 - 1)


def test_without_the_database_experiments_answer_503_naming_it(searched):
    """A metadata database that refuses connections: the experiment routes say so (503),
    the rest of the catalog still answers."""
    settings = searched["settings"].model_copy(update={
        "database_url": f"postgresql+psycopg://skewless@127.0.0.1:{free_port()}/skewless"})
    with serve_in_thread(create_catalog_app(settings)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        for path in ("/api/catalog/experiments", "/api/catalog/experiments/1"):
            response = http.get(path)
            assert response.status_code == 503, response.text
            assert response.json() == {"detail": "metadata database unavailable: "
                                                 "OperationalError"}
            assert response.headers["retry-after"] == "1"
        assert http.get("/catalog").status_code == 200
