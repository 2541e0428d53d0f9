"""Point-in-time training sets through Feast: one row per label event, nothing from the future."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skewless.contract import resolve_service
from skewless.feast_cli import run_feast
from skewless.settings import Settings
from tests.support.demo import copy_feature_repo
from training.dataset import TrainingSet, build_training_set, write_training_set

BATCH_VIEWS = {"card_activity": "card_id", "card_profile": "card_id", "merchant_stats": "merchant_id"}


def known_label_events(demo, cutoff) -> pd.DataFrame:
    joined = demo.data.transactions.merge(demo.data.labels, on="transaction_id")
    cut = pd.Timestamp(cutoff)
    return joined[(joined["label_timestamp"] <= cut) & (joined["event_timestamp"] < cut)]


def test_one_row_per_label_event_known_at_the_cutoff(demo):
    frame = demo.training_set.frame
    expected = known_label_events(demo, demo.cutoff)
    assert len(frame) == len(expected)
    assert set(frame["transaction_id"]) == set(expected["transaction_id"])
    assert (frame["label_timestamp"] <= pd.Timestamp(demo.cutoff)).all()
    # Events before the card's first snapshot are kept, with null card features.
    assert frame["card_activity__txn_count_28d"].isna().sum() > 0


def test_columns_are_id_keys_time_label_then_full_feature_names(demo):
    frame = demo.training_set.frame
    spec = demo.training_set.service
    features = spec.feature_names
    assert list(frame.columns) == ["transaction_id", "card_id", "merchant_id", "event_timestamp",
                                   "label_timestamp", "is_fraud", *features]
    assert all("__" in name for name in features)
    assert str(frame["card_activity__txn_count_7d"].dtype) == "Int64"
    assert str(frame["card_profile__card_type"].dtype) == "string"


def asof_expected(demo, rows: pd.DataFrame, view: str, key: str, ttl: timedelta) -> pd.DataFrame:
    """Independent point-in-time join: latest row at or before the event, within the TTL."""
    table = pd.read_parquet(demo.settings.data_dir / f"{view}.parquet")
    table = table.sort_values(["event_timestamp", "created_timestamp"])
    table = table.rename(columns={"event_timestamp": "feature_ts"})
    left = rows[["transaction_id", key, "event_timestamp"]].sort_values("event_timestamp")
    merged = pd.merge_asof(left, table.drop(columns="created_timestamp"), left_on="event_timestamp",
                           right_on="feature_ts", by=key, direction="backward")
    if ttl:
        stale = merged["feature_ts"] < merged["event_timestamp"] - ttl
        feature_cols = [c for c in table.columns if c not in (key, "feature_ts")]
        merged.loc[stale, feature_cols] = np.nan
        merged.loc[stale, "feature_ts"] = pd.NaT
    return merged.set_index("transaction_id")


@pytest.mark.parametrize("view", sorted(BATCH_VIEWS))
def test_values_agree_with_an_independent_merge_asof(demo, view):
    key = BATCH_VIEWS[view]
    store = demo.store()
    ttl = store.get_feature_view(view).ttl
    frame = demo.training_set.frame.sample(4000, random_state=3)
    expected = asof_expected(demo, frame, view, key, ttl)
    actual = frame.set_index("transaction_id")
    # No feature value used comes from after its label event.
    assert (expected["feature_ts"].dropna() <= expected.loc[
        expected["feature_ts"].notna(), "event_timestamp"]).all()
    features = [c for c in actual.columns if c.startswith(f"{view}__")]
    assert features
    for column in features:
        want = expected.loc[actual.index, column.split("__", 1)[1]]
        got = actual[column]
        assert (got.isna().to_numpy() == want.isna().to_numpy()).all(), column
        present = got.notna().to_numpy()
        if got.dtype.kind in "fiu" or str(got.dtype) in ("Int64", "Float64"):
            np.testing.assert_allclose(got[present].astype(float), want[present].astype(float),
                                       err_msg=column)
        else:
            assert (got[present].astype(str).to_numpy() == want[present].astype(str).to_numpy()).all()


def test_on_demand_features_are_computed_from_the_joined_values(demo):
    frame = demo.training_set.frame.set_index("transaction_id")
    tx = demo.data.transactions.set_index("transaction_id").loc[frame.index]
    ratio = tx["amount"] / frame["card_activity__amount_mean_28d"].astype(float)
    np.testing.assert_allclose(frame["transaction_features__amount_to_mean_28d"], ratio)
    np.testing.assert_allclose(frame["transaction_features__log_amount"], np.log1p(tx["amount"]))
    assert (frame["transaction_features__is_online"] == (tx["channel"] == "online")).all()


def test_cutoff_excludes_labels_not_yet_known_and_runs_from_any_directory(demo, tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # duckdb must not resolve sources against the working dir
    cutoff = demo.cutoff - timedelta(days=40)
    ts = build_training_set(demo.settings, cutoff=cutoff)
    expected = known_label_events(demo, cutoff)
    assert len(ts.frame) == len(expected) > 0
    assert (ts.frame["label_timestamp"] <= pd.Timestamp(cutoff)).all()
    assert ts.frame["card_activity__txn_count_7d"].notna().any()
    path = ts.write(tmp_path / "set.parquet")
    again = TrainingSet.read(path)
    pd.testing.assert_frame_equal(again.frame, ts.frame)
    assert again.service.fingerprint == ts.service.fingerprint
    # `skewless dataset` streams slices to parquet: the same rows, in the same order.
    streamed = tmp_path / "streamed.parquet"
    rows = write_training_set(demo.settings, streamed, cutoff=cutoff, chunk_rows=5_000)
    assert rows == len(ts.frame)
    assert not streamed.with_suffix(".parquet.partial").exists()
    pd.testing.assert_frame_equal(TrainingSet.read(streamed).frame, ts.frame)


# --- crafted edge cases, and why the duckdb offline store ---------------------------------

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2026-10-01", tz="UTC")


def write_crafted_repo(root: Path, offline_store: str) -> Settings:
    repo = copy_feature_repo(root / "feature_repo")
    yaml = (repo / "feature_store.yaml").read_text()
    (repo / "feature_store.yaml").write_text(yaml.replace("type: duckdb", f"type: {offline_store}"))
    data = repo / "data"
    (data / "raw").mkdir(parents=True)
    created = T0 + 100 * DAY
    activity = pd.DataFrame({
        "card_id": [1, 1, 1],
        "event_timestamp": [T0 + 10 * DAY, T0 + 12 * DAY, T0 + 12 * DAY],
        # two rows at the same time: the later-created one (7) must win
        "created_timestamp": [created, created, created + pd.Timedelta(hours=1)],
        "txn_count_1d": [1, 5, 7],
    })
    for col in ("txn_count_7d", "txn_count_28d", "distinct_merchants_7d"):
        activity[col] = activity["txn_count_1d"]
    for col in ("amount_sum_1d", "amount_sum_7d", "amount_mean_7d", "amount_mean_28d",
                "amount_max_7d", "amount_max_28d"):
        activity[col] = activity["txn_count_1d"] * 10.0
    activity.to_parquet(data / "card_activity.parquet")
    pd.DataFrame({"card_id": [1], "event_timestamp": [T0], "created_timestamp": [T0],
                  "card_type": ["debit"], "credit_limit": [1000.0]}
                 ).to_parquet(data / "card_profile.parquet")
    pd.DataFrame({"merchant_id": [7], "event_timestamp": [T0 + 11 * DAY],
                  "created_timestamp": [T0 + 11 * DAY], "merchant_category": ["fuel"],
                  "merchant_txn_count_7d": [3], "merchant_amount_mean_28d": [12.0],
                  "merchant_labels_known_56d": [4], "merchant_fraud_rate_56d": [0.25]}
                 ).to_parquet(data / "merchant_stats.parquet")
    events = pd.DataFrame({
        "transaction_id": [1, 2, 3, 4, 5, 6],
        "event_timestamp": [T0 + 9 * DAY, T0 + 11 * DAY, T0 + 12 * DAY, T0 + 15 * DAY,
                            T0 + 11 * DAY, T0 + 13 * DAY],
        "card_id": [1, 1, 1, 1, 999, 1],
        "merchant_id": [7, 7, 7, 7, 7, 8],
        "amount": [50.0] * 6, "channel": ["pos"] * 6, "local_hour": [12] * 6,
    })
    events.to_parquet(data / "raw" / "transactions.parquet")
    pd.DataFrame({"transaction_id": events["transaction_id"],
                  "label_timestamp": events["event_timestamp"] + 3 * DAY,
                  "is_fraud": [0, 1, 0, 0, 1, 0]}).to_parquet(data / "raw" / "labels.parquet")
    settings = Settings(repo_path=repo, var_dir=root / "var")
    run_feast(settings, "apply")
    return settings


@pytest.fixture(scope="module")
def crafted(tmp_path_factory, redis_server):
    settings = write_crafted_repo(tmp_path_factory.mktemp("crafted"), "duckdb")
    return build_training_set(settings, cutoff=T0 + 30 * DAY).frame.set_index("transaction_id")


def test_crafted_every_label_event_is_kept(crafted):
    assert sorted(crafted.index) == [1, 2, 3, 4, 5, 6]


def test_crafted_before_first_row_unknown_entity_and_past_ttl_are_null(crafted):
    counts = crafted["card_activity__txn_count_1d"]
    assert pd.isna(counts[1])  # before the card's first row
    assert pd.isna(counts[5])  # a card never seen
    assert pd.isna(counts[4])  # latest row three days old, TTL two days
    assert pd.isna(crafted.loc[6, "merchant_stats__merchant_txn_count_7d"])  # unknown merchant


def test_crafted_latest_value_at_or_before_the_event_with_created_tie_break(crafted):
    counts = crafted["card_activity__txn_count_1d"]
    assert counts[2] == 1  # the day-10 row; the day-12 row is in the event's future
    assert counts[3] == 7  # same timestamp as the event counts; latest created wins
    assert counts[6] == 7  # within the TTL
    assert crafted.loc[2, "card_profile__card_type"] == "debit"
    assert crafted.loc[2, "merchant_stats__merchant_fraud_rate_56d"] == 0.25


def test_feasts_default_file_store_would_drop_label_events(tmp_path, redis_server):
    """Why feature_store.yaml chooses duckdb: dask's store loses rows on the same data."""
    settings = write_crafted_repo(tmp_path, "file")
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(settings.repo_path))
    spec = resolve_service(store, settings.feature_service)
    events = pd.read_parquet(settings.resolved_events_path)
    result = store.get_historical_features(
        entity_df=events, features=store.get_feature_service(spec.feature_service),
        full_feature_names=True,
    ).to_df()
    assert len(result) < len(events)


def test_sliced_retrieval_equals_feasts_own_path_with_the_feature_service(demo):
    """Slicing and handing the on-demand view only its inputs changes no value."""
    cutoff = demo.cutoff - timedelta(days=35)
    ours = build_training_set(demo.settings, cutoff=cutoff, chunk_rows=7_000).frame
    assert len(ours) > 3 * 7_000  # several slices
    store = demo.store()
    spec = resolve_service(store, demo.settings.feature_service)
    events = demo.data.transactions.merge(demo.data.labels, on="transaction_id")
    events = events[(events["label_timestamp"] <= pd.Timestamp(cutoff))
                    & (events["event_timestamp"] < pd.Timestamp(cutoff))]
    theirs = store.get_historical_features(
        entity_df=events.drop(columns=["is_fraud", "label_timestamp"]),
        features=store.get_feature_service(spec.feature_service), full_feature_names=True,
    ).to_df().set_index("transaction_id").loc[ours["transaction_id"]]
    for name in spec.feature_names:
        got = ours[name].astype(object).where(ours[name].notna(), None).tolist()
        want = theirs[name].astype(object).where(theirs[name].notna(), None).tolist()
        assert got == want, name
