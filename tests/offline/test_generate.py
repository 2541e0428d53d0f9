"""Data tests of the generator: shape, ranges, time, seeding, delayed labels, drift."""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.support.demo import DEMO_END
from training.generate import GenerateConfig, generate, scaled_cards, write_generated

SMALL = GenerateConfig(cards=300, days=30, end=DEMO_END)


@pytest.fixture(scope="module")
def small():
    return generate(SMALL)


def test_transactions_have_expected_columns_and_types(small):
    tx = small.transactions
    assert list(tx.columns) == ["transaction_id", "event_timestamp", "card_id", "merchant_id",
                                "amount", "channel", "local_hour", "age_band"]
    assert str(tx["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert tx["transaction_id"].is_unique
    assert (tx["amount"] > 0).all()
    assert set(tx["channel"]) <= {"pos", "online", "atm"}
    assert tx["local_hour"].between(0, 23).all()
    assert tx["card_id"].isin(small.cards["card_id"]).all()
    assert tx["merchant_id"].isin(small.merchants["merchant_id"]).all()


def test_transactions_span_the_window_ending_at_end_in_time_order(small):
    ts = small.transactions["event_timestamp"]
    assert ts.is_monotonic_increasing
    assert ts.max() < pd.Timestamp(DEMO_END)
    assert ts.min() >= pd.Timestamp(DEMO_END) - timedelta(days=SMALL.days)


def test_no_card_transacts_before_it_is_issued(small):
    issued = small.transactions.merge(small.cards, on="card_id")
    assert (issued["event_timestamp"] >= issued["issued_at"]).all()


def test_every_label_arrives_after_its_transaction(small):
    joined = small.transactions.merge(small.labels, on="transaction_id", validate="one_to_one")
    assert len(joined) == len(small.transactions)
    assert (joined["label_timestamp"] > joined["event_timestamp"]).all()
    assert set(joined["is_fraud"].unique()) == {0, 1}


def test_same_seed_same_data_other_seed_other_data(small):
    again = generate(SMALL)
    pd.testing.assert_frame_equal(small.transactions, again.transactions)
    pd.testing.assert_frame_equal(small.labels, again.labels)
    other = generate(GenerateConfig(cards=300, days=30, end=DEMO_END, seed=8))
    assert not other.transactions["amount"].head(100).equals(small.transactions["amount"].head(100))


def test_bayes_auc_is_the_auc_of_the_true_probabilities_on_the_holdout(small):
    holdout = small.meta["holdout"]
    frame = small.transactions.merge(small.labels, on="transaction_id").merge(
        small.truth, on="transaction_id")
    start = pd.Timestamp(holdout["from"])
    rows = frame[(frame["event_timestamp"] >= start)
                 & (frame["label_timestamp"] <= pd.Timestamp(DEMO_END))]
    assert len(rows) == holdout["labelled_events"]
    expected = roc_auc_score(rows["is_fraud"], rows["fraud_probability"])
    assert holdout["bayes_auc"] == pytest.approx(expected)
    assert 0.75 < expected < 0.99


def test_fraud_depends_on_amount_unusualness_and_channel(small):
    frame = small.transactions.merge(small.labels, on="transaction_id")
    online = frame[frame["channel"] == "online"]["is_fraud"].mean()
    pos = frame[frame["channel"] == "pos"]["is_fraud"].mean()
    assert online > 1.5 * pos


def test_drift_scenario_shifts_amounts_and_online_share_after_the_drift_day():
    base = generate(GenerateConfig(cards=300, days=30, end=DEMO_END))
    drifted = generate(GenerateConfig(cards=300, days=30, end=DEMO_END, drift_day=20))
    cut = pd.Timestamp(drifted.meta["drift_from"])
    before = lambda d: d.transactions[d.transactions["event_timestamp"] < cut]  # noqa: E731
    after = lambda d: d.transactions[d.transactions["event_timestamp"] >= cut]  # noqa: E731
    pd.testing.assert_frame_equal(before(base), before(drifted))
    assert after(drifted)["amount"].median() > 1.3 * after(base)["amount"].median()
    share = lambda d: (after(d)["channel"] == "online").mean()  # noqa: E731
    assert share(drifted) > share(base) + 0.1


def test_written_files_round_trip_with_microsecond_utc_timestamps(small, tmp_path):
    paths = write_generated(small, tmp_path)
    tx = pd.read_parquet(paths["transactions"])
    assert str(tx["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert json.loads(paths["meta"].read_text())["transactions"] == len(tx)


def test_scale_sets_cards_and_volume_grows_with_it():
    assert scaled_cards(1) == 2_000
    assert scaled_cards(34.8) == 69_600  # the bench size: 10,037,699 transactions
    small = generate(GenerateConfig(cards=scaled_cards(0.1), days=20, end=DEMO_END))
    double = generate(GenerateConfig(cards=scaled_cards(0.2), days=20, end=DEMO_END))
    ratio = double.meta["transactions"] / small.meta["transactions"]
    assert 1.7 < ratio < 2.3
    per_card_day = small.meta["transactions"] / (scaled_cards(0.1) * 20)
    assert 2.0 < per_card_day < 3.5  # so 69,600 cards x 60 days is about 10M
