"""The catalog's experiment pages, over a real search served by the catalog app.

A search of 8 trials runs on a tenth of the demo's training set (as in
tests/offline/test_experiment.py) and registers its best run; two more experiments are
written as a stopped search and a running one would leave them. Every figure the pages and
the API show is compared with the metadata database's rows, read back independently, and
every chart is parsed: one mark per trial, in the trial's state, at the trial's value.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import httpx
import pytest

from service.app import create_catalog_app, serve_in_thread
from skewless.db import upgrade
from skewless.embedded_redis import free_port
from skewless.experiments import Experiment, Experiments
from skewless.registry import Registry
from tests.support.experiments import QUICK_SPACE, small_training_set
from training.experiment import run_experiment
from training.train import dataset_identity

pytestmark = pytest.mark.redis  # the demo world's

TRIALS = 8
SEED = 261
NAME = 'small search <script>alert("x")</script>'
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def searched(demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog-experiments")
    small = small_training_set(demo.training_set, root / "small.parquet")
    settings = demo.settings.model_copy(update={"var_dir": root / "var"})
    upgrade(settings.resolved_database_url)
    result = run_experiment(settings, small, TRIALS, seed=SEED, name=NAME, space=QUICK_SPACE)
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
        plain = registry.register(demo.model.directory)  # trained without a search
    with serve_in_thread(create_catalog_app(settings)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        yield {"http": http, "settings": settings, "id": searched_id, "stopped": stopped.id,
               "running": running.id, "small": small, "model": model, "plain": plain}


def stored(searched, experiment_id: int) -> Experiment:
    with Experiments.from_settings(searched["settings"]) as store:
        return store.get(experiment_id)


def get(searched, path: str, **params) -> dict:
    response = searched["http"].get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


class Page(HTMLParser):
    """What a test reads of a page: each table's rows (attributes and cell texts), the texts
    of ``data-fact`` cells, the links, and the inline SVG of each ``figure`` by id."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[tuple[dict[str, str], list[str]]]] = {}
        self.facts: dict[str, str] = {}
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._fact: str | None = None
        self.feed(html)
        self.figures = {m.group(1): ET.fromstring(m.group(2)) for m in re.finditer(
            r'<figure class="chart" id="([^"]+)">(<svg.*?</svg>)</figure>', html, re.S)}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table" and "id" in a:
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append((a, []))
        elif tag in ("td", "th") and self._table and self.tables[self._table]:
            self._cell, self._fact = [], a.get("data-fact")
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            text = " ".join("".join(self._cell).split())
            self.tables[self._table][-1][1].append(text)
            if self._fact:
                self.facts[self._fact] = text
            self._cell = self._fact = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> list[tuple[dict[str, str], list[str]]]:
        return [(a, cells) for a, cells in self.tables[table] if "data-run" in a
                or "data-experiment" in a]


def page(searched, path: str) -> Page:
    response = searched["http"].get(path)
    assert response.status_code == 200, (path, response.text)
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


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

    html = page(searched, "/catalog/experiments")
    assert [int(a["data-experiment"]) for a, _ in html.rows("experiments")] == [
        e.id for e in rows]
    first = html.rows("experiments")[-1][1]
    assert first[0] == f"{searched['id']} · {NAME}"  # the text, as written
    assert first[4] == f"{counts_text(rows[-1])} of {TRIALS}"
    assert f"/catalog/experiments/{searched['id']}" in html.links
    assert searched_one["model_url"] in html.links


def counts_text(row: Experiment) -> str:
    return " / ".join(str(sum(r.state == s for r in row.runs))
                      for s in ("complete", "pruned", "failed"))


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


def test_the_page_shows_each_figure_of_the_search(searched):
    row = stored(searched, searched["id"])
    response = searched["http"].get(f"/catalog/experiments/{row.id}")
    assert "<script" not in response.text.lower()  # the name is text, never markup
    assert "small search &lt;script&gt;" in response.text
    html = Page(response.text)
    model = searched["model"]
    sha256, rows = dataset_identity(searched["small"])
    counts = {s: sum(r.state == s for r in row.runs) for s in ("complete", "pruned", "failed")}
    assert html.facts["seed"] == str(SEED)
    assert html.facts["trials"] == (
        f"{TRIALS} asked · {TRIALS} recorded: {counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['failed']} failed")
    best = row.best_run
    assert best is not None
    assert html.facts["best"] == (
        f"run {best.id} (trial {best.number}): {row.metric} {best.value:.4f}")
    assert html.facts["dataset_uri"] == str(searched["small"].resolve())
    assert (html.facts["dataset_sha256"], html.facts["dataset_rows"]) == (sha256, f"{rows:,}")
    assert html.facts["git_commit"] == (row.git_commit or "unknown (not run from a checkout)")
    assert html.facts["model_version"].startswith(f"{model.name} {model.version}")
    assert f"/catalog/models/{model.name}/versions/{model.version}" in html.links
    for name in ("roc_auc", "pr_auc"):
        assert f"{name} {model.metrics['holdout'][name]:.4f}" in html.facts["holdout"]

    # The runs side by side: every figure of every run, the best one marked.
    table = html.rows("runs")
    assert [int(a["data-run"]) for a, _ in table] == [r.id for r in row.runs]
    params = list(row.search["space"])
    for (attrs, cells), run in zip(table, row.runs, strict=True):
        assert attrs["data-state"] == run.state and int(attrs["data-trial"]) == run.number
        assert ("data-best" in attrs) == (run.number == row.best_run_number)
        best_text = " best" if run.number == row.best_run_number else ""
        iteration = run.metrics.get("best_iteration")
        assert cells[:6] == [
            f"{run.id}{best_text}", str(run.number), run.state, f"{run.value:.4f}",
            f"{len(run.steps['auc'])}" + (f" ({iteration})" if iteration else ""),
            f"{round(run.duration_seconds, 3):.2f} s"]  # the API's milliseconds
        assert cells[6:] == [f"{run.params[p]:.4g}" if isinstance(run.params[p], float)
                             else str(run.params[p]) for p in params]
    assert sum("data-best" in a for a, _ in table) == 1

    # The metric over trials: one mark per trial, in its state, higher values drawn higher.
    trials = html.figures["trials-chart"]
    marks = [m for m in trials.iter() if "trial" in m.get("class", "").split()]
    assert len(marks) == TRIALS == len(row.runs)
    by_run = {int(m.get("data-run")): m for m in marks}
    for run in row.runs:
        mark = by_run[run.id]
        classes = mark.get("class").split()
        assert run.state in classes and ("best" in classes) == (run.number == row.best_run_number)
        assert f"{row.metric} {run.value:.4f}" in mark.find(f"{SVG_NS}title").text
    heights = sorted(row.runs, key=lambda r: r.value)
    ys = [float(by_run[r.id].get("cy")) for r in heights]
    assert ys == sorted(ys, reverse=True)
    assert len(list(trials.iter(f"{SVG_NS}path"))) >= 1  # the running best
    assert [c.get("class") for c in trials.iter(f"{SVG_NS}circle")].count("best-ring") == 1

    # Optuna's importances, largest first, one bar each.
    bars = html.figures["importance-chart"]
    labels = [r.find(f"{SVG_NS}title").text.split(":")[0]
              for r in bars.iter(f"{SVG_NS}rect") if r.find(f"{SVG_NS}title") is not None]
    assert labels == [p for p, _ in sorted(row.importances.items(), key=lambda kv: -kv[1])]

    # The metric per round: one line per run (a long one thinned to 250 points), the
    # longest reaching the right edge.
    rounds = html.figures["rounds-chart"]
    lines = {int(p.get("data-run")): p.get("points").split()
             for p in rounds.iter(f"{SVG_NS}polyline")}
    assert sorted(lines) == sorted(r.id for r in row.runs)
    longest = max(row.runs, key=lambda r: len(r.steps["auc"]))
    for run in row.runs:
        points, steps = lines[run.id], run.steps["auc"]
        assert len(points) == len(steps) if len(steps) <= 250 else len(points) <= 251
    assert lines[longest.id][-1].startswith("884.0,")  # 900 wide, 16 of right margin


def test_a_stopped_and_a_running_search_say_what_is_missing(searched):
    stopped = get(searched, f"/api/catalog/experiments/{searched['stopped']}")
    assert stopped["error"] == "KeyboardInterrupt: stopped"
    assert [r["value"] for r in stopped["runs"]] == [0.71, None]
    assert stopped["not_computed"] == {"importances": "not computed: the search failed",
                                       "model": "none registered: the search failed"}
    response = searched["http"].get(f"/catalog/experiments/{searched['stopped']}")
    html = Page(response.text)
    marks = [m for m in html.figures["trials-chart"].iter()
             if "trial" in m.get("class", "").split()]
    assert [m.get("class") for m in marks] == ["trial complete", "trial failed"]
    assert "importance-chart" not in html.figures
    assert "not computed: the search failed" in response.text
    assert "LightGBMError: out of memory" in response.text

    running = get(searched, f"/api/catalog/experiments/{searched['running']}")
    assert running["runs"] == [] and running["importances"] is None
    assert running["not_computed"]["runs"] == "no run recorded yet"
    html = page(searched, f"/catalog/experiments/{searched['running']}")
    assert html.figures == {} and html.facts["finished_at"] == "still running"


def test_a_model_version_from_a_run_links_back_to_it(searched):
    model, row = searched["model"], stored(searched, searched["id"])
    best = row.best_run
    assert best is not None and model.experiment_run_id == best.id
    d = get(searched, f"/api/catalog/models/{model.name}/versions/{model.version}")
    link = f"/catalog/experiments/{row.id}#run-{best.id}"
    assert d["experiment"] == {"experiment": row.id, "run": best.id, "number": best.number,
                               "url": link}
    html = page(searched, f"/catalog/models/{model.name}/versions/{model.version}")
    assert link in html.links
    target = Page(searched["http"].get(link.split("#")[0]).text)
    (best_row,) = [a for a, _ in target.rows("runs") if a.get("id") == f"run-{best.id}"]
    assert "data-best" in best_row
    plain = searched["plain"]
    assert get(searched, f"/api/catalog/models/{plain.name}/versions/{plain.version}")[
        "experiment"] is None
    assert 'id="experiment"' not in searched["http"].get(
        f"/catalog/models/{plain.name}/versions/{plain.version}").text
    # The catalog's index and the feature service's page lead to the experiments.
    assert "/catalog/experiments" in page(searched, "/catalog").links
    assert f"/catalog/experiments?feature_service={model.feature_service}" in page(
        searched, f"/catalog/feature-services/{model.feature_service}").links


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


@pytest.mark.parametrize(("segment", "detail"), [
    ("999999", "no experiment 999999"),
    ("0", "no experiment 0"),
    ("99999999999999999999999", "no experiment &#39;99999999999999999999999&#39;"),
    ("abc", "no experiment &#39;abc&#39;"),
    ("%3Cb%3E", "no experiment &#39;&lt;b&gt;&#39;"),
])
def test_unknown_experiment_pages_say_so(searched, segment, detail):
    response = searched["http"].get(f"/catalog/experiments/{segment}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert f'<p class="bad" id="detail">{detail}</p>' in response.text


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
        response = http.get("/catalog/experiments/1")
        assert response.status_code == 503
        assert "metadata database unavailable: OperationalError" in response.text
        assert http.get("/catalog").status_code == 200
