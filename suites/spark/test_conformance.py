"""Conformance: the same definitions and data through both profiles give the same answers.

The local profile is DuckDB and one Redis; the cluster profile Spark (`local[2]`: its offline
store for training sets, its compute engine for materialization) and a three-node Redis
Cluster. Training sets equal row for row and value for value, corrections (a later created
timestamp) and TTL expiry included; the online values Spark materializes equal DuckDB's;
`/predict` on the cluster equals Feast's SDK on the same cluster; the skew check's replay and
batch scoring run on the cluster profile and agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from skewless.feast_cli import open_store
from skewless.settings import Settings, redis_for_feast
from suites.spark.conftest import SparkWorld
from tests.support.service_harness import app_in_thread, serve_env
from training.dataset import TrainingSet

pytestmark = [pytest.mark.redis, pytest.mark.slow]

BATCH_VIEWS = {"card_activity": "card_id", "card_profile": "card_id",
               "merchant_stats": "merchant_id"}


def skewless(settings: Settings, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """A `skewless` command on ``settings``' profile, as a user runs it."""
    env = {**os.environ, **serve_env(settings), "SKEWLESS_PROFILE": settings.profile,
           "FEAST_USAGE": "False"}
    result = subprocess.run([str(Path(sys.executable).with_name("skewless")), *args], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_training_sets_are_equal_row_for_row_with_corrections_and_ttl(spark_world: SparkWorld,
                                                                      tmp_path):
    world = spark_world
    for view in BATCH_VIEWS:  # what Spark reads: microseconds (it refuses nanoseconds)
        schema = pq.read_schema(world.local.data_dir / f"{view}.parquet")
        for column in ("event_timestamp", "created_timestamp"):
            assert schema.field(column).type.unit == "us", (view, column)
    sets = {}
    for settings in (world.cluster, world.local):  # `skewless dataset`, expectations first
        out = tmp_path / f"set-{settings.profile}.parquet"
        skewless(settings, "dataset", "--output", str(out), "--cutoff", world.end.isoformat())
        sets[settings.profile] = TrainingSet.read(out)
    local = world.local_set
    assert len(sets["local"].frame) == len(local.frame) > 5000
    pd.testing.assert_frame_equal(sets["cluster"].frame, sets["local"].frame, check_exact=True)
    pd.testing.assert_frame_equal(sets["cluster"].frame, local.frame, check_exact=True)
    # One fingerprint: the sources are FileSources on one profile, SparkSources on the other.
    assert sets["cluster"].service.fingerprint == local.service.fingerprint

    frame = local.frame
    snapshot = frame[local.timestamp_column].dt.floor("D")
    # Corrections: the later created row wins, on both engines (the frames are equal).
    corrected = frame.assign(snapshot=snapshot).merge(
        world.corrections.rename(columns={"event_timestamp": "snapshot",
                                          "txn_count_7d": "corrected"}),
        on=["card_id", "snapshot"])
    assert len(corrected) >= 3
    assert (corrected["card_activity__txn_count_7d"] == corrected["corrected"]).all()
    # TTL: three missing snapshots; an event on the last missing day reads a snapshot over
    # two days (the view's TTL) old: null. On the first missing day it is still within.
    gaps = world.gaps
    of_gap_cards = frame["card_id"].isin(gaps["card_id"])
    last_day = of_gap_cards & (snapshot == gaps["last"].iloc[0])
    first_day = of_gap_cards & (snapshot == gaps["first"].iloc[0])
    assert last_day.sum() > 0 and first_day.sum() > 0
    assert frame.loc[last_day, "card_activity__txn_count_7d"].isna().all()
    assert frame.loc[first_day, "card_activity__txn_count_7d"].notna().all()


def online_values(settings: Settings, entity_rows: list[dict]) -> dict:
    with redis_for_feast(settings.redis or ""):
        store = open_store(settings)
        refs = [f"{view}:{f.name}" for view in BATCH_VIEWS
                for f in store.get_feature_view(view).features]
        return store.get_online_features(features=refs, entity_rows=entity_rows,
                                         full_feature_names=True).to_dict()


def test_spark_materializes_what_duckdb_does_and_the_cluster_serves_it(
        spark_world: SparkWorld, redis_cluster, redis_server, tmp_path):
    world = spark_world
    redis_cluster.flushall()
    redis_server.client().flushall()
    end = (world.end + timedelta(hours=1)).isoformat()
    # Validation first, then `feast materialize` through the profile's engine.
    skewless(world.cluster, "materialize", "--end", end)
    skewless(world.local, "materialize", "--end", end)

    cards = pq.read_table(world.local.raw_dir / "cards.parquet").column("card_id").to_pylist()
    merchants = pq.read_table(world.local.raw_dir / "merchants.parquet").column(
        "merchant_id").to_pylist()
    rows = [{"card_id": c, "merchant_id": merchants[i % len(merchants)]}
            for i, c in enumerate(cards)]
    rows += [{"card_id": cards[i % len(cards)], "merchant_id": m}
             for i, m in enumerate(merchants)]
    on_cluster = online_values(world.cluster, rows)
    on_redis = online_values(world.local, rows)
    assert on_cluster == on_redis
    present = sum(v is not None for v in on_cluster["card_activity__txn_count_7d"])
    assert present >= len(cards) - 10  # fresh: materialized today

    # The predictor on the cluster profile, with the model trained on DuckDB's training set.
    rng = np.random.default_rng(5)
    requests = [{"card_id": int(rng.choice(cards)), "merchant_id": int(rng.choice(merchants)),
                 "amount": round(float(rng.lognormal(3.5, 1.2)), 2),
                 "channel": str(rng.choice(["pos", "online", "atm"])),
                 "local_hour": int(rng.integers(0, 24))} for _ in range(200)]
    log_dir = tmp_path / "log"
    settings = world.cluster.model_copy(update={"feature_log_dir": log_dir,
                                                "feature_log_flush_seconds": 0.2})
    with redis_for_feast(world.cluster.redis or ""):
        store = open_store(world.cluster)
        service = store.get_feature_service(world.cluster.feature_service)
        sdk = store.get_online_features(features=service, entity_rows=requests,
                                        full_feature_names=False).to_dict()
        with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
            response = http.post("/predict/batch", params={"include_features": "true"},
                                 json={"rows": requests})
            assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    names = world.model.contract.feature_names
    compared = 0
    for i, got in enumerate(served):
        for name in names:
            expected = sdk[name.split("__", 1)[1]][i]
            value = got["features"][name]["value"]
            if isinstance(expected, float) and isinstance(value, float):
                assert value == pytest.approx(expected, rel=1e-12), (i, name)
            else:
                assert value == expected, (i, name, value, expected)
            compared += expected is not None
    assert compared > len(requests) * len(names) * 0.8

    # The online reconciliation and the catalog's online sampling read the cluster too.
    online = json.loads(skewless(world.cluster, "skew-check", "--online", "--json").stdout)
    assert online["mismatches"] == 0
    assert sum(f["checked"] for f in online["features"].values()) > 0
    skewless(world.cluster, "catalog", "refresh")
    stats = json.loads(world.cluster.catalog_stats_path.read_text())
    for view in BATCH_VIEWS:
        assert stats["online"][view]["found"] > 0 and not stats["online"][view].get("error")
        assert stats["views"][view]["rows"] > 0 and not stats["views"][view].get("error")

    # The skew check replays those served rows through Spark's point-in-time path.
    report = json.loads(skewless(world.cluster, "skew-check", "--json", "--log-dir",
                                 str(log_dir)).stdout)
    assert report["rows"] == len(requests) and report["mismatches"] == 0


def test_batch_scoring_agrees_across_profiles(spark_world: SparkWorld, tmp_path):
    world = spark_world
    events = world.local_set.frame.sample(300, random_state=1)
    keep = ["transaction_id", "card_id", "merchant_id", "amount", "channel", "local_hour",
            world.local_set.timestamp_column]
    raw = pd.read_parquet(world.local.raw_dir / "transactions.parquet")
    events = raw[raw["transaction_id"].isin(events["transaction_id"])][keep]
    events.to_parquet(tmp_path / "events.parquet", index=False)
    scores = {}
    for settings in (world.cluster, world.local):
        out = tmp_path / f"scores-{settings.profile}.parquet"
        skewless(settings, "score", "--input", str(tmp_path / "events.parquet"),
                 "--output", str(out), "--model", str(world.model.directory))
        scores[settings.profile] = pd.read_parquet(out).sort_values("transaction_id")
    assert len(scores["local"]) == len(events)
    pd.testing.assert_frame_equal(scores["cluster"].reset_index(drop=True),
                                  scores["local"].reset_index(drop=True), check_exact=True)
