"""Materialization into a real, private redis-server, read back through Feast."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from skewless.feast_cli import run_feast

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def materialized(demo, redis_server):
    # The demo data ends at a fixed past moment; materialize-incremental would start from
    # now minus the TTL, so the window is given explicitly.
    redis_server.client().flushall()
    run_feast(demo.settings, "materialize", "2015-01-01T00:00:00",
              demo.cutoff.strftime("%Y-%m-%dT%H:%M:%S"))
    return demo.store()


def latest_rows(demo, view: str, key: str) -> pd.DataFrame:
    table = pd.read_parquet(demo.settings.data_dir / f"{view}.parquet")
    table = table.sort_values(["event_timestamp", "created_timestamp"])
    return table.groupby(key).tail(1).set_index(key)


def test_online_values_are_the_latest_offline_values(demo, materialized):
    latest = latest_rows(demo, "card_activity", "card_id")
    cutoff = pd.Timestamp(demo.cutoff)
    fresh = latest[latest["event_timestamp"] >= cutoff - timedelta(days=2)]
    sample = fresh.sample(min(200, len(fresh)), random_state=5)
    features = [f"card_activity:{c}" for c in ("txn_count_1d", "txn_count_28d", "amount_mean_28d",
                                               "amount_max_7d", "distinct_merchants_7d")]
    online = materialized.get_online_features(
        features=features, entity_rows=[{"card_id": int(c)} for c in sample.index],
    ).to_df().set_index("card_id")
    for column in ("txn_count_1d", "txn_count_28d", "amount_mean_28d", "amount_max_7d",
                   "distinct_merchants_7d"):
        got = online.loc[sample.index, column]
        want = sample[column]
        both_null = got.isna() & want.isna()
        assert ((got == want) | both_null).all(), column


def test_profile_and_merchant_views_are_served_and_unknown_keys_are_null(demo, materialized):
    profiles = latest_rows(demo, "card_profile", "card_id")
    card = int(profiles.index[0])
    merchants = latest_rows(demo, "merchant_stats", "merchant_id")
    merchant = int(merchants["event_timestamp"].idxmax())
    rows = [{"card_id": card, "merchant_id": merchant}, {"card_id": 1, "merchant_id": 2}]
    online = materialized.get_online_features(
        features=["card_profile:card_type", "merchant_stats:merchant_fraud_rate_56d"],
        entity_rows=rows,
    ).to_dict()
    assert online["card_type"][0] == profiles.loc[card, "card_type"]
    assert online["merchant_fraud_rate_56d"][0] == pytest.approx(
        merchants.loc[merchant, "merchant_fraud_rate_56d"])
    assert online["card_type"][1] is None
    assert online["merchant_fraud_rate_56d"][1] is None


def test_feast_cli_reads_the_redis_address_from_skewless_redis(demo, redis_server):
    """`feast` itself, run as a user would from the repo directory, with SKEWLESS_REDIS."""
    feast = Path(sys.executable).with_name("feast")
    env = {"PATH": str(feast.parent), "SKEWLESS_REDIS": redis_server.connection_string,
           "FEAST_USAGE": "False", "HOME": str(demo.settings.var_dir)}
    window = ["materialize", (demo.cutoff - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S"),
              demo.cutoff.strftime("%Y-%m-%dT%H:%M:%S")]
    redis_server.client().flushall()
    result = subprocess.run([str(feast), *window], cwd=demo.settings.repo_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert redis_server.client().dbsize() > 0
    bad = subprocess.run([str(feast), *window], cwd=demo.settings.repo_path,
                         env={**env, "SKEWLESS_REDIS": "127.0.0.1:1"},
                         capture_output=True, text=True)
    assert bad.returncode != 0
    assert "Connection" in bad.stderr or "connect" in bad.stderr
