"""The feature catalog's API and pages, on the demo repo served by the real predictor app.

The fixture materializes the demo, serves real predictions (their features logged), runs a
skew check and `skewless catalog refresh`'s computation; every figure the catalog shows is
then compared with one computed here independently from the same files.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from datetime import UTC, datetime

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from skewless.feast_cli import run_feast
from skewless.registry import Registry
from tests.support.service_harness import app_in_thread, read_logs
from training.skew import check_served, save_report
from training.stats import refresh_stats

pytestmark = pytest.mark.redis

FEATURE = ("card_activity", "amount_mean_28d")  # described as "...the card's usual ticket."
ODFV = ("transaction_features", "amount_to_mean_28d")
UNKNOWN_CARD = 987_654_321


@pytest.fixture(scope="module")
def catalog(demo, redis_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    # Its own var dir (statistics, skew report) over the demo's registry database.
    settings = demo.settings.model_copy(update={
        "var_dir": root / "var", "database_url": demo.settings.resolved_database_url,
        "feature_log_dir": root / "served",
    })
    redis_server.client().flushall()  # whatever earlier modules wrote to the shared server
    run_feast(settings, "materialize", "2015-01-01T00:00:00",
              demo.cutoff.strftime("%Y-%m-%dT%H:%M:%S"))
    events = demo.data.transactions.tail(120)
    rows = [{"card_id": int(r.card_id), "merchant_id": int(r.merchant_id),
             "amount": float(r.amount), "channel": r.channel, "local_hour": int(r.local_hour),
             "transaction_id": int(r.transaction_id)} for r in events.itertuples()]
    rows += [{**rows[i], "card_id": UNKNOWN_CARD, "transaction_id": 10**9 + i} for i in range(30)]
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        for start in range(0, len(rows), 50):
            assert http.post("/predict/batch", json={"rows": rows[start:start + 50]}
                             ).status_code == 200
        deadline = datetime.now(UTC).timestamp() + 30
        while http.get("/readyz").json()["feature_log"]["rows_written"] < len(rows):
            assert datetime.now(UTC).timestamp() < deadline
            time.sleep(0.05)
        report = check_served(settings)
        save_report(report, settings.skew_report_path)
        doc = refresh_stats(settings)
        yield {"http": http, "settings": settings, "report": report, "doc": doc, "url": url,
               "served": len(rows)}


def get(catalog, path: str, **params) -> dict:
    response = catalog["http"].get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_index_lists_everything_the_registry_holds(catalog, demo):
    store = demo.store()
    index = get(catalog, "/api/catalog")
    assert {e["name"] for e in index["entities"]} == {e.name for e in store.list_entities()}
    assert {v["name"] for v in index["feature_views"]} == {
        v.name for v in store.list_feature_views()}
    assert {v["name"] for v in index["on_demand_feature_views"]} == {
        v.name for v in store.list_on_demand_feature_views()}
    assert {s["name"] for s in index["feature_services"]} == {
        s.name for s in store.list_feature_services()}
    expected = {f"{v.name}:{f.name}" for v in [*store.list_feature_views(),
                                              *store.list_on_demand_feature_views()]
                for f in v.features}
    assert {f["ref"] for f in index["features"]} == expected
    assert index["total_features"] == len(expected) == 22
    assert "risk-ml@skewless.example" in index["facets"]["owners"]
    assert "kind=categorical" in index["facets"]["tags"]
    assert index["facets"]["privacy"] == ["none", "pseudonymous", "personal"]
    assert {e["name"]: e["privacy"] for e in index["entities"]} == {
        "card": "pseudonymous", "merchant": "none"}
    assert datetime.fromisoformat(index["stats_computed_at"]) == datetime.fromisoformat(
        catalog["doc"]["computed_at"])


@pytest.mark.parametrize(("params", "expected"), [
    ({"q": "usual ticket"}, {"card_activity:amount_mean_28d"}),
    ({"q": "USUAL   Ticket"}, {"card_activity:amount_mean_28d"}),
    ({"q": "leakage-guard"}, {"merchant_stats:merchant_fraud_rate_56d"}),
    ({"tag": "kind=categorical"}, {"card_profile:card_type", "merchant_stats:merchant_category"}),
    ({"tag": "leakage-guard"}, {"merchant_stats:merchant_fraud_rate_56d"}),
    ({"owner": "risk-ml@skewless.example"}, {
        f"transaction_features:{n}" for n in ("log_amount", "amount_to_mean_28d",
                                              "amount_to_max_28d", "is_online", "is_night")}),
    ({"entity": "merchant", "q": "mean"}, {"merchant_stats:merchant_amount_mean_28d"}),
    ({"q": "28 days", "tag": "kind=max"}, {"card_activity:amount_max_28d"}),
    ({"q": "no such words anywhere"}, set()),
    ({"privacy": "personal"}, {"card_profile:credit_limit"}),
    ({"privacy": "none", "q": "known labels"}, {"merchant_stats:merchant_labels_known_56d",
                                                "merchant_stats:merchant_fraud_rate_56d"}),
    ({"privacy": "unclassified"}, set()),
])
def test_search_and_filters(catalog, params, expected):
    index = get(catalog, "/api/catalog", **params)
    assert {f["ref"] for f in index["features"]} == expected
    if not expected:
        assert index["feature_views"] == index["feature_services"] == index["entities"] == []


def test_feature_page_data_equals_an_independent_computation(catalog, demo):
    view, name = FEATURE
    d = get(catalog, f"/api/catalog/features/{view}/{name}")
    f = d["feature"]
    assert f["owner"] == "risk-data@skewless.example"
    assert f["description"].endswith("the card's usual ticket.")
    assert (f["dtype"], f["entities"], f["join_keys"]) == ("Float64", ["card"], ["card_id"])
    assert f["tags"] == {"window": "28d", "kind": "mean"}
    assert f["feature_services"] == ["fraud_model_v1"]
    assert d["view"]["ttl_seconds"] == 2 * 86400
    source = d["view"]["source"]
    assert source["path"] == str(demo.settings.data_dir / "card_activity.parquet")
    assert (source["timestamp_field"], source["created_timestamp_column"]) == (
        "event_timestamp", "created_timestamp")

    table = pd.read_parquet(source["path"])
    values = table[name]
    s = d["statistics"]
    assert s["computed_from"] == "offline source"
    assert (s["count"], s["non_null"]) == (len(table), int(values.notna().sum()))
    assert s["null_rate"] == pytest.approx(values.isna().mean())
    assert (s["min"], s["max"]) == (values.min(), values.max())
    assert s["mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert s["std"] == pytest.approx(values.std(), rel=1e-6)
    # duckdb's quantiles are approximate (t-digest): within 1% of the value range.
    for q, x in s["quantiles"].items():
        assert x == pytest.approx(values.quantile(float(q)), abs=0.01 * (values.max() - values.min()))
    histogram = s["histogram"]
    assert sum(histogram["counts"]) == values.notna().sum()
    assert len(histogram["counts"]) == len(histogram["edges"]) - 1 == 20
    inner = values[(values >= histogram["edges"][0]) & (values < histogram["edges"][-1])]
    np.testing.assert_array_equal(
        histogram["counts"][1:-1],
        np.histogram(inner, bins=histogram["edges"])[0][1:-1])

    fresh = d["freshness"]
    assert pd.Timestamp(fresh["latest_event_offline"]) == table["event_timestamp"].max()
    assert pd.Timestamp(fresh["earliest_event_offline"]) == table["event_timestamp"].min()
    assert fresh["offline_rows"] == len(table)
    fv = demo.store().get_feature_view(view)
    assert pd.Timestamp(fresh["last_materialized"]) == fv.materialization_intervals[-1][1]
    online = fresh["online"]
    assert online["sample"] == online["found"] == 200
    # Every sampled value is its entity's latest snapshot: active cards are stamped at the data's
    # last midnight, retired cards at their last active day.
    latest = {ts.timestamp() for ts in table.groupby("card_id")["event_timestamp"].max()}
    sampled_at = datetime.fromisoformat(online["sampled_at"]).timestamp()
    assert online["age_seconds_min"] == pytest.approx(sampled_at - max(latest), abs=1)
    oldest = sampled_at - online["age_seconds_max"]
    assert min(abs(oldest - ts) for ts in latest) < 1
    assert online["age_seconds_min"] <= online["age_seconds_median"] <= online["age_seconds_max"]
    # The view's objective (30 h) beside the sample's median age (the demo's data is old).
    assert fresh["objective_seconds"] == 30 * 3600
    assert fresh["objective_met"] is (online["age_seconds_median"] <= 30 * 3600)
    assert "statistics" not in d["not_computed"] and "freshness" not in d["not_computed"]
    assert d["histogram_url"] == f"/catalog/features/{view}/{name}/histogram.svg"


def test_lineage_marks_the_production_version(catalog, demo):
    d = get(catalog, "/api/catalog/features/card_profile/card_type")
    (lineage,) = d["lineage"]
    assert lineage["feature_service"] == "fraud_model_v1"
    registry = Registry.from_settings(catalog["settings"])
    try:
        production = registry.production_version("fraud_model_v1")
        versions = [r.version for r in registry.versions("fraud_model_v1")]
    finally:
        registry.close()
    assert [m["version"] for m in lineage["models"]] == versions
    assert [m["version"] for m in lineage["models"] if m["production"]] == [production]
    assert production == demo.model.contract.version


def test_serving_health_equals_the_logs_and_the_skew_report(catalog):
    served = read_logs(catalog["settings"].feature_log_dir)
    assert len(served) == catalog["served"]
    for view, name in (("card_profile", "credit_limit"), FEATURE, ODFV):
        d = get(catalog, f"/api/catalog/features/{view}/{name}")
        (health,) = d["serving"]
        column = f"{view}__{name}"
        status = served[f"{column}__status"]
        missing = health["missing"]
        assert missing["rows"] == len(served)
        assert missing["missing"] == int((status != 1).sum())
        assert missing["missing_rate"] == pytest.approx((status != 1).mean())
        result = catalog["report"].features[column]
        assert health["skew"]["checked"] == result.checked
        assert health["skew"]["mismatches"] == result.mismatches
        assert health["skew"]["source"] == "served logs"
    # The 30 unknown cards are never found: their card profile is missing in each.
    d = get(catalog, "/api/catalog/features/card_profile/credit_limit")
    assert d["serving"][0]["missing"]["statuses"].get("NOT_FOUND", 0) >= 30


def test_on_demand_feature_shows_its_code_and_statistics_from_served_logs(catalog):
    view, name = ODFV
    d = get(catalog, f"/api/catalog/features/{view}/{name}")
    assert d["feature"]["kind"] == "on_demand"
    assert d["feature"]["description"].startswith("Amount divided by the card's 28-day mean")
    code = d["view"]["transformation"]["code"]
    assert "def transaction_features(inputs" in code and "ratio(amounts" in code
    assert d["view"]["transformation"]["inputs"] == [
        "card_activity:amount_mean_28d", "card_activity:amount_max_28d"]
    assert {r["name"] for r in d["view"]["transformation"]["request_fields"]} == {
        "amount", "channel", "local_hour"}
    served = read_logs(catalog["settings"].feature_log_dir)[f"{view}__{name}"]
    s = d["statistics"]
    assert s["computed_from"] == "served logs of fraud_model_v1"
    assert (s["count"], s["non_null"]) == (len(served), int(served.notna().sum()))
    if served.notna().any():
        assert s["mean"] == pytest.approx(served.mean())
    assert d["not_computed"]["freshness"].startswith("computed at request time from")


def test_snippet_fetches_the_feature_with_feast(catalog, demo):
    """The copy-ready code runs as shown once the entity's key is filled in."""
    view, name = FEATURE
    d = get(catalog, f"/api/catalog/features/{view}/{name}")
    card = int(demo.data.transactions["card_id"].iloc[-1])
    code = d["snippet"].replace('"card_id": ...', f'"card_id": {card}')
    events = pd.DataFrame({"card_id": [card], "event_timestamp": [demo.cutoff]})
    scope = {"events": events}
    exec(compile(code, "snippet", "exec"), scope)  # noqa: S102 - the test runs the snippet
    online, training = scope["online"], scope["training"]
    store = demo.store()
    expected = store.get_online_features(features=[f"{view}:{name}"],
                                         entity_rows=[{"card_id": card}]).to_dict()
    assert online[name] == expected[name] and expected[name][0] is not None
    assert training[name].iloc[0] == pytest.approx(expected[name][0])


def test_feature_service_and_model_version_pages(catalog, demo):
    service = get(catalog, "/api/catalog/feature-services/fraud_model_v1")
    assert [f["ref"] for f in service["features"]] == [
        f"{f.view}:{f.feature}" for f in demo.model.contract.features]
    version = demo.model.contract.version
    assert version in [m["version"] for m in service["models"]]

    model = get(catalog, f"/api/catalog/models/fraud_model_v1/versions/{version}")
    assert model["model"]["stage"] == "production" and model["model"]["production"]
    assert len(model["features"]) == 22 and model["unregistered_features"] == []
    booster = lgb.Booster(model_file=str(demo.model.directory / "model.txt"))
    gains = dict(zip(booster.feature_name(), booster.feature_importance("gain"), strict=True))
    got = {i["feature"]: i["gain"] for i in model["importance"]}
    assert got == pytest.approx(gains)
    assert [i["gain"] for i in model["importance"]] == sorted(gains.values(), reverse=True)
    assert math.fsum(i["share"] for i in model["importance"]) == pytest.approx(1.0)
    svg = catalog["http"].get(model["importance_url"])
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.count("<rect") == 1 + len(gains)  # background + one bar per feature

    view = get(catalog, "/api/catalog/feature-views/transaction_features")
    assert view["view"]["kind"] == "on_demand" and len(view["features"]) == 5
    entity = get(catalog, "/api/catalog/entities/merchant")
    assert {f["view"] for f in entity["features"]} == {"merchant_stats"}


def test_histogram_images(catalog):
    http = catalog["http"]
    numeric = http.get("/catalog/features/card_activity/amount_mean_28d/histogram.svg")
    assert numeric.status_code == 200
    assert numeric.headers["content-type"].startswith("image/svg+xml")
    assert numeric.text.count("<rect") == 1 + 20
    categorical = http.get("/catalog/features/card_profile/card_type/histogram.svg")
    values = pd.read_parquet(catalog["settings"].data_dir / "card_profile.parquet")["card_type"]
    assert categorical.text.count("<rect") == 1 + values.nunique()
    for value, count in values.value_counts().items():
        assert f"{value}: {count:,}" in categorical.text


@pytest.mark.parametrize(("path", "detail"), [
    ("/api/catalog/features/card_activity/no_such", "feature view 'card_activity' has no feature "
     "named 'no_such'"),
    ("/api/catalog/features/no_view/x", "no feature view named 'no_view'"),
    ("/api/catalog/feature-views/no_view", "no feature view named 'no_view'"),
    ("/api/catalog/entities/nobody", "no entity named 'nobody'"),
    ("/api/catalog/feature-services/fraud_model_v9", "no feature service named 'fraud_model_v9'"),
    ("/api/catalog/models/fraud_model_v1/versions/v0", "model 'fraud_model_v1' has no version 'v0'"),
    ("/api/catalog/models/nomodel/versions/v0", "model 'nomodel' has no version 'v0'"),
    ("/catalog/features/no_view/x/histogram.svg", "no feature view named 'no_view'"),
])
def test_unknown_names_get_404_naming_them(catalog, path, detail):
    response = catalog["http"].get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": detail}


def test_pages_render_and_unknown_pages_say_what_is_missing(catalog, demo):
    http = catalog["http"]
    version = demo.model.contract.version
    for path in ("/catalog", "/catalog?q=usual+ticket&tag=kind%3Dmean",
                 "/catalog/features/card_activity/amount_mean_28d",
                 "/catalog/features/transaction_features/is_night",
                 "/catalog/feature-views/card_activity", "/catalog/entities/card",
                 "/catalog/feature-services/fraud_model_v1",
                 f"/catalog/models/fraud_model_v1/versions/{version}"):
        response = http.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
    index = http.get("/catalog").text
    assert index.count('data-ref="') == 22
    assert http.get("/catalog", params={"q": "usual ticket"}).text.count('data-ref="') == 1
    missing = http.get("/catalog/feature-services/nope")
    assert missing.status_code == 404
    assert "no feature service named &#39;nope&#39;" in missing.text


def test_openapi_documents_the_api_but_not_the_pages(catalog):
    paths = catalog["http"].get("/openapi.json").json()["paths"]
    for path in ("/api/catalog", "/api/catalog/features/{view}/{feature}",
                 "/api/catalog/feature-views/{name}", "/api/catalog/entities/{name}",
                 "/api/catalog/feature-services/{name}",
                 "/api/catalog/models/{name}/versions/{version}"):
        assert "get" in paths[path], path
    assert "404" in paths["/api/catalog/features/{view}/{feature}"]["get"]["responses"]
    assert not [p for p in paths if p.startswith("/catalog")]


def test_without_a_refresh_sections_say_not_yet_computed(catalog, tmp_path):
    from service.catalog.catalog import Catalog

    settings = catalog["settings"].model_copy(update={"var_dir": tmp_path})
    fresh = Catalog.open(settings)
    d = fresh.feature(*FEATURE)
    assert d.statistics is None and d.histogram_url is None
    assert d.not_computed["statistics"] == "not yet computed: run `skewless catalog refresh`"
    assert d.freshness.latest_event_offline is None and d.freshness.online is None
    assert d.freshness.last_materialized is not None  # the Feast registry knows it
    assert d.serving[0].missing is None and d.serving[0].skew is None
    assert d.not_computed["lineage"] == "no metadata database configured"


@pytest.mark.browser
def test_a_person_finds_a_feature_and_trusts_it_in_a_real_browser(catalog, demo, tmp_path):
    """Headless Chromium: search by a word of the description, open the feature, read it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.browser import headless_chromium

    view, name = FEATURE
    version = demo.model.contract.version
    with headless_chromium() as browser:
        wait = WebDriverWait(browser, 20)
        browser.get(catalog["url"] + "/catalog")
        assert len(browser.find_elements(By.CSS_SELECTOR, "tr[data-ref]")) == 22
        box = browser.find_element(By.ID, "search")
        box.send_keys("ticket", Keys.ENTER)
        wait.until(ready.url_contains("q=ticket"))
        rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-ref]")
        assert [r.get_attribute("data-ref") for r in rows] == [f"{view}:{name}"]

        rows[0].find_element(By.LINK_TEXT, f"{view}:{name}").click()
        wait.until(ready.presence_of_element_located((By.ID, "feature-name")))
        assert browser.find_element(By.ID, "feature-name").text == f"{view}:{name}"
        assert browser.find_element(By.ID, "owner").text == "risk-data@skewless.example"

        histogram = browser.find_element(By.ID, "histogram")
        wait.until(lambda b: b.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", histogram))
        assert browser.execute_script("return arguments[0].naturalWidth", histogram) == 560

        freshness = browser.find_element(By.ID, "freshness").text
        latest = pd.read_parquet(demo.settings.data_dir / "card_activity.parquet")[
            "event_timestamp"].max()
        assert f"Latest event offline {latest:%Y-%m-%d %H:%M:%S} UTC" in freshness
        assert "Last materialization" in freshness
        assert "200 of 200 sampled entities have a value" in freshness

        lineage = browser.find_element(By.ID, "lineage")
        production = lineage.find_element(By.CSS_SELECTOR, "tr[data-stage=production]")
        assert f"fraud_model_v1 {version}" in production.text and "production" in production.text

        shot = tmp_path / "catalog-feature.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

        production.find_element(By.PARTIAL_LINK_TEXT, version).click()
        wait.until(ready.presence_of_element_located((By.ID, "importance")))
        chart = browser.find_element(By.ID, "importance")
        wait.until(lambda b: b.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", chart))
        assert browser.find_element(By.ID, "stage").text == "production"


def test_a_model_page_verifies_an_artefact_once_and_never_parses_an_unchecked_one(
        demo, tmp_path, monkeypatch):
    from service.app import create_catalog_app, serve_in_thread
    from service.catalog import catalog as catalog_module
    from skewless.db import upgrade

    settings = demo.settings.model_copy(update={"var_dir": tmp_path / "var"})
    upgrade(settings.resolved_database_url)
    registry = Registry.from_settings(settings)
    for version in ("intact", "tampered", "unchecked"):
        target = tmp_path / version
        shutil.copytree(demo.model.directory, target)
        contract = json.loads((target / "contract.json").read_text())
        contract["model"]["version"] = version
        (target / "contract.json").write_text(json.dumps(contract))
        registry.register(target)
    with (tmp_path / "tampered" / "model.txt").open("a") as fh:
        fh.write("\n")  # changed after its registration
    with registry.engine.begin() as connection:  # as if registered before checks existed
        connection.execute(sa.text("UPDATE model_versions SET artifact_checked_at = NULL "
                                   "WHERE version = 'unchecked'"))
    registry.close()
    loads: list[str] = []
    real_load = catalog_module.load_registered

    def counted(row, limits=None):
        loads.append(row.version)
        return real_load(row, limits)

    monkeypatch.setattr(catalog_module, "load_registered", counted)
    with serve_in_thread(create_catalog_app(settings)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        pages = {v: [http.get(f"/api/catalog/models/fraud_model_v1/versions/{v}").json()
                     for _ in range(2)] for v in ("intact", "tampered", "unchecked")}
        html = http.get("/catalog/models/fraud_model_v1/versions/unchecked").text
    assert sorted(loads) == ["intact", "tampered"]  # once each; the unchecked one never
    intact, tampered, unchecked = (pages[v][1] for v in ("intact", "tampered", "unchecked"))
    assert len(intact["importance"]) == 22 and pages["intact"][0] == intact
    assert tampered["importance"] is None and pages["tampered"][0] == tampered
    assert tampered["not_computed"]["importance"].startswith("artefact unreadable: ")
    assert "does not match the checked and registered" in tampered["not_computed"]["importance"]
    assert unchecked["importance"] is None
    assert unchecked["not_computed"]["artifact"].startswith(
        "not verified: model fraud_model_v1 version unchecked has no recorded artefact check")
    assert 'id="artifact-check"' in html and "not verified" in html


def test_view_and_feature_pages_show_the_latest_validations(catalog, tmp_path):
    from service.catalog.catalog import Catalog
    from skewless.db import upgrade
    from skewless.expectations import Finding, TargetResult, ValidationReport
    from skewless.validations import ValidationStore

    url = f"sqlite:///{tmp_path / 'meta.db'}"
    upgrade(url)
    settings = catalog["settings"].model_copy(update={"database_url": url})
    view, feature = FEATURE

    def report(findings: tuple[Finding, ...], rows: int) -> ValidationReport:
        at = datetime(2026, 11, 30, tzinfo=UTC)
        return ValidationReport("materialize", at, [TargetResult(
            view, "feature view", "expectations.card_activity", "data/x.parquet", rows, at,
            findings, 0.5)])

    store = ValidationStore(url)
    registry = Registry.from_settings(settings)
    fresh = Catalog.open(settings, registry)
    try:
        assert fresh.view(view).expectations.note.startswith("not validated yet")
        assert fresh.view(view).expectations.schema_ref == "expectations.card_activity"
        store.record(report((), 1_000), "ops")
        bad = (Finding(feature, "not_null", 7, ("card_id=3 <script>",)),
               Finding("txn_count_7d", "in_range(0, 10000)", 2, ("-1",)))
        store.record(report(bad, 990), "alice", reason="upstream export known short")
        shown = fresh.view(view).expectations
        assert [r.status for r in shown.history] == ["accepted", "passed"]
        assert shown.latest.reason == "upstream export known short"
        assert [(f.feature, f.rule, f.count) for f in shown.latest.findings] == [
            (feature, "not_null", 7), ("txn_count_7d", "in_range(0, 10000)", 2)]
        # The feature page keeps only the findings about its feature.
        mine = fresh.feature(view, feature).expectations
        assert [(f.feature, f.count) for f in mine.latest.findings] == [(feature, 7)]
        assert fresh.feature(*ODFV).expectations is None  # checked per request instead

        # The pages: escaped, the feature page without the other feature's finding.
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        from service.catalog.routes import install_catalog

        app = FastAPI()
        install_catalog(app, fresh)
        with TestClient(app) as client:
            page = client.get(f"/catalog/feature-views/{view}")
            assert page.status_code == 200
            assert "card_id=3 &lt;script&gt;" in page.text and "<script>" not in page.text
            assert "upstream export known short" in page.text and 'data-status="accepted"' in page.text
            assert "in_range(0, 10000)" in page.text
            page = client.get(f"/catalog/features/{view}/{feature}")
            assert page.status_code == 200 and 'data-status="passed"' in page.text
            assert "not_null" in page.text and "in_range(0, 10000)" not in page.text
    finally:
        store.close()
        registry.close()
