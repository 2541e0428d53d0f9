"""Data tests of the feature pipeline, each checked against an independent recomputation."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from tests.support.demo import DEMO_END
from training.generate import GenerateConfig, generate, write_generated
from training.pipeline import PipelinePaths, build_feature_tables


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data = generate(GenerateConfig(cards=250, days=40, end=DEMO_END))
    write_generated(data, root / "raw")
    paths = PipelinePaths(root / "raw" / "transactions.parquet", root / "raw" / "labels.parquet",
                          root / "raw" / "cards.parquet", root / "raw" / "merchants.parquet",
                          root / "out")
    counts = build_feature_tables(paths)
    return data, paths, counts


def read(path):
    return pd.read_parquet(path)


def test_tables_have_timestamps_and_types(tables):
    _, paths, counts = tables
    for path in (paths.card_activity, paths.merchant_stats, paths.card_profile):
        df = read(path)
        assert len(df) == counts[path.stem] > 0
        assert str(df["event_timestamp"].dtype) == "datetime64[us, UTC]"
        assert str(df["created_timestamp"].dtype) == "datetime64[us, UTC]"
        assert df["event_timestamp"].is_monotonic_increasing
        assert (df["created_timestamp"] >= df["event_timestamp"]).all()
    activity = read(paths.card_activity)
    assert activity["txn_count_1d"].dtype == np.int64
    assert (activity["txn_count_28d"] >= activity["txn_count_7d"]).all()
    assert (activity["txn_count_7d"] >= activity["txn_count_1d"]).all()
    assert (activity["txn_count_28d"] > 0).all()
    assert not activity.duplicated(["card_id", "event_timestamp"]).any()


def test_snapshots_are_at_midnight_and_never_after_the_data(tables):
    data, paths, _ = tables
    for path in (paths.card_activity, paths.merchant_stats):
        ts = read(path)["event_timestamp"]
        assert (ts == ts.dt.floor("D")).all()
        assert ts.max() <= data.transactions["event_timestamp"].max()


def test_card_windows_match_an_independent_recomputation(tables):
    data, paths, _ = tables
    activity = read(paths.card_activity).sample(400, random_state=1)
    tx = data.transactions
    for row in activity.itertuples():
        t = row.event_timestamp
        card = tx[tx["card_id"] == row.card_id]
        for days, count_col in ((1, "txn_count_1d"), (7, "txn_count_7d"), (28, "txn_count_28d")):
            window = card[(card["event_timestamp"] >= t - timedelta(days=days))
                          & (card["event_timestamp"] < t)]
            assert getattr(row, count_col) == len(window)
        w7 = card[(card["event_timestamp"] >= t - timedelta(days=7)) & (card["event_timestamp"] < t)]
        w28 = card[(card["event_timestamp"] >= t - timedelta(days=28))
                   & (card["event_timestamp"] < t)]
        assert row.amount_sum_7d == pytest.approx(w7["amount"].sum(), abs=0.01)
        assert row.amount_mean_28d == pytest.approx(w28["amount"].mean())
        assert row.amount_max_28d == pytest.approx(w28["amount"].max())
        assert row.distinct_merchants_7d == w7["merchant_id"].nunique()
        if len(w7) == 0:
            assert np.isnan(row.amount_mean_7d)


def test_no_snapshot_includes_an_event_at_or_after_its_own_time(tables):
    data, paths, _ = tables
    activity = read(paths.card_activity)
    first = data.transactions.groupby("card_id")["event_timestamp"].min().rename("first_tx")
    joined = activity.merge(first, left_on="card_id", right_index=True)
    # A card's first snapshot is the midnight after its first transaction.
    assert (joined["event_timestamp"] > joined["first_tx"]).all()


def expected_fraud_rate(tx_labels: pd.DataFrame, merchant_id: int, t: pd.Timestamp):
    rows = tx_labels[(tx_labels["merchant_id"] == merchant_id)
                     & (tx_labels["label_timestamp"] < t)
                     & (tx_labels["event_timestamp"] >= t - timedelta(days=56))]
    return len(rows), (rows["is_fraud"].mean() if len(rows) else np.nan)


def test_merchant_fraud_rate_uses_only_labels_known_at_snapshot_time(tables):
    data, paths, _ = tables
    stats = read(paths.merchant_stats).sample(300, random_state=2)
    tx_labels = data.transactions.merge(data.labels, on="transaction_id")
    for row in stats.itertuples():
        known, rate = expected_fraud_rate(tx_labels, row.merchant_id, row.event_timestamp)
        assert row.merchant_labels_known_56d == known
        if known:
            assert row.merchant_fraud_rate_56d == pytest.approx(rate)
        else:
            assert np.isnan(row.merchant_fraud_rate_56d)


def test_flipping_future_labels_changes_no_earlier_fraud_rate(tables, tmp_path):
    """A label not yet known at T must not shape any snapshot at or before T."""
    data, paths, _ = tables
    t = pd.Timestamp(DEMO_END) - timedelta(days=15)
    labels = data.labels.copy()
    future = labels["label_timestamp"] >= t
    labels.loc[future, "is_fraud"] = 1 - labels.loc[future, "is_fraud"]
    labels.to_parquet(tmp_path / "labels.parquet")
    flipped = PipelinePaths(paths.transactions, tmp_path / "labels.parquet", paths.cards,
                            paths.merchants, tmp_path / "out")
    build_feature_tables(flipped)
    cols = ["merchant_id", "event_timestamp", "merchant_fraud_rate_56d"]
    before = read(paths.merchant_stats)[cols]
    after = read(flipped.merchant_stats)[cols]
    early = lambda d: d[d["event_timestamp"] <= t].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(early(before), early(after))
    late = lambda d: d[d["event_timestamp"] > t + timedelta(days=3)]  # noqa: E731
    assert not late(before)["merchant_fraud_rate_56d"].equals(late(after)["merchant_fraud_rate_56d"])


def test_card_profile_is_valid_from_issue(tables):
    data, paths, _ = tables
    profile = read(paths.card_profile)
    merged = profile.merge(data.cards, on="card_id")
    assert len(profile) == len(data.cards)
    assert (merged["event_timestamp"] == merged["issued_at"]).all()
