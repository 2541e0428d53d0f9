"""The catalog shows whatever a Feast registry holds: a repo of its own, unlike the demo's.

A small repo (its own entity, parquet source, feature views and service, a SQLite online
store) is applied with Feast's CLI; the catalog's CLI and API find its features, refresh
their statistics, and notice a view added and applied while the catalog is serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from service.app import create_catalog_app, serve_in_thread
from skewless.db import upgrade
from skewless.feast_cli import run_feast
from skewless.settings import PROJECT_ROOT, Settings

FEATURE_STORE_YAML = """\
project: shops
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""

DEFINITIONS = '''\
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

DATA = Path(__file__).resolve().parent / "data"

shop = Entity(name="shop", join_keys=["shop_id"], value_type=ValueType.INT64,
              description="A high-street shop.", owner="retail@shops.example")

footfall_source = FileSource(name="footfall_source", path=str(DATA / "footfall.parquet"),
                             timestamp_field="ts")

shop_footfall_fv = FeatureView(
    name="shop_footfall", entities=[shop], ttl=timedelta(days=1), source=footfall_source,
    schema=[
        Field(name="visitors", dtype=Int64, description="People counted through the door.",
              tags={"sensor": "door"}),
        Field(name="dwell_minutes", dtype=Float64, description="Mean minutes spent inside."),
        Field(name="weather", dtype=String, description="Weather outside at the hour."),
    ],
    owner="retail@shops.example", tags={"team": "retail"},
    description="Hourly door counts of each shop.",
)

shop_ranking = FeatureService(name="shop_ranking", features=[shop_footfall_fv],
                              description="Inputs of the shop ranking.")
'''

EXTRA_VIEW = '''\
from datetime import timedelta

from definitions import DATA, footfall_source, shop
from feast import FeatureView, Field
from feast.types import Float64

shop_rent_fv = FeatureView(
    name="shop_rent", entities=[shop], ttl=timedelta(days=30), source=footfall_source,
    schema=[Field(name="dwell_minutes", dtype=Float64,
                  description="Quarterly rent per square metre, a landlord's figure.")],
    owner="finance@shops.example",
)
'''


@pytest.fixture
def shops(tmp_path):
    repo = tmp_path / "shops_repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML)
    (repo / "definitions.py").write_text(DEFINITIONS)
    rng = np.random.default_rng(3)
    n = 5_000
    start = datetime(2026, 10, 1, tzinfo=UTC)
    frame = pd.DataFrame({
        "shop_id": rng.integers(1, 60, n),
        "ts": [start + timedelta(hours=int(h)) for h in rng.integers(0, 24 * 30, n)],
        "visitors": rng.poisson(40, n).astype("int64"),
        "dwell_minutes": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(3.0, 4.0, n)),
        "weather": rng.choice(["sun", "rain", "snow", None], n, p=[0.5, 0.3, 0.1, 0.1]),
    })
    # Microseconds, as the demo pipeline writes them (duckdb cannot cast TIMESTAMPTZ_NS).
    frame["ts"] = frame["ts"].astype("datetime64[us, UTC]")
    frame.to_parquet(repo / "data" / "footfall.parquet", index=False)
    settings = Settings(repo_path=repo, var_dir=tmp_path / "var", redis=None,
                        feature_service="shop_ranking", events_path=None, labels_path=None)
    run_feast(settings, "apply")
    run_feast(settings, "materialize", "2026-09-30T00:00:00", "2026-11-01T00:00:00")
    upgrade(settings.resolved_database_url)
    return settings, frame


def skewless(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "FEAST_USAGE": "False", "PYTHONPATH": str(PROJECT_ROOT),
           "SKEWLESS_REPO_PATH": str(settings.repo_path), "SKEWLESS_VAR_DIR": str(settings.var_dir),
           "SKEWLESS_FEATURE_SERVICE": settings.feature_service}
    return subprocess.run([str(Path(sys.executable).with_name("skewless")), *args],
                          capture_output=True, text=True, env=env, cwd=settings.var_dir.parent,
                          timeout=180)


def test_cli_searches_and_refreshes_any_registry(shops):
    settings, frame = shops
    found = skewless(settings, "catalog", "search", "through the door", "--json")
    assert found.returncode == 0, found.stderr
    (hit,) = json.loads(found.stdout)
    assert (hit["ref"], hit["owner"], hit["feature_services"]) == (
        "shop_footfall:visitors", "retail@shops.example", ["shop_ranking"])
    nothing = skewless(settings, "catalog", "search", "card")
    assert nothing.returncode == 1 and "0 of 3 features" in nothing.stdout

    refreshed = skewless(settings, "catalog", "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    doc = json.loads(settings.catalog_stats_path.read_text())
    assert doc["views"]["shop_footfall"]["rows"] == len(frame)
    assert pd.Timestamp(doc["views"]["shop_footfall"]["latest_event"]) == frame["ts"].max()
    dwell = doc["features"]["shop_footfall:dwell_minutes"]
    assert dwell["nulls"] == frame["dwell_minutes"].isna().sum()
    assert dwell["mean"] == pytest.approx(frame["dwell_minutes"].mean())
    weather = doc["features"]["shop_footfall:weather"]
    assert weather["distinct"] == 3
    assert dict(weather["top_values"]) == frame["weather"].value_counts().to_dict()
    visitors = doc["features"]["shop_footfall:visitors"]
    assert visitors["histogram"]["integer"] is False  # wider than 20 values
    assert sum(visitors["histogram"]["counts"]) == len(frame)
    # The SQLite online store was sampled through Feast's SDK like any other.
    online = doc["online"]["shop_footfall"]
    assert online["found"] == online["sample"] == frame["shop_id"].nunique()


def test_the_catalog_notices_a_view_applied_while_it_serves(shops):
    settings, _ = shops
    with serve_in_thread(create_catalog_app(settings)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        index = http.get("/api/catalog").json()
        assert [f["ref"] for f in index["features"]] == [
            "shop_footfall:visitors", "shop_footfall:dwell_minutes", "shop_footfall:weather"]
        assert http.get("/api/catalog", params={"q": "landlord"}).json()["features"] == []
        assert http.get("/api/catalog/feature-views/shop_rent").status_code == 404

        (settings.repo_path / "rent.py").write_text(EXTRA_VIEW)
        run_feast(settings, "apply")
        deadline = time.monotonic() + 10
        while not (hits := http.get("/api/catalog", params={"q": "landlord"}).json()["features"]):
            assert time.monotonic() < deadline, "the applied view never appeared"
            time.sleep(0.2)
        assert [h["ref"] for h in hits] == ["shop_rent:dwell_minutes"]
        assert hits[0]["owner"] == "finance@shops.example"
        page = http.get("/catalog/features/shop_rent/dwell_minutes")
        assert page.status_code == 200 and "finance@shops.example" in page.text
        detail = http.get("/api/catalog/features/shop_rent/dwell_minutes").json()
        assert detail["lineage"] == [] and detail["not_computed"]["lineage"].startswith(
            "in no feature service")
        assert detail["not_computed"]["statistics"].startswith("not yet computed")
