"""Batch scoring: the training path's features and the model's scores, row for row."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skewless.artifact import load_artifact
from skewless.settings import PROJECT_ROOT
from training.backfill import ScoreError, score_events
from training.train import to_matrix

INPUTS = ["transaction_id", "card_id", "merchant_id", "event_timestamp", "amount", "channel",
          "local_hour"]


def training_scores(demo) -> pd.Series:
    """What the stored model gives on the training set's own rows, by event id."""
    contract = demo.model.contract
    features = contract.features
    frame = demo.training_set.frame
    booster = load_artifact(demo.model.directory).booster
    scores = booster.predict(to_matrix(frame, features, contract.categories))
    return pd.Series(scores, index=frame["transaction_id"].to_numpy())


def holdout_events(demo) -> pd.DataFrame:
    frame = demo.training_set.frame
    holdout_from = pd.Timestamp(demo.model.contract.training.windows["holdout_from"])
    ids = frame.loc[frame["event_timestamp"] >= holdout_from, "transaction_id"]
    tx = demo.data.transactions
    return tx[tx["transaction_id"].isin(ids)].reset_index(drop=True)


def small_chunks(demo, rows: int):
    return demo.settings.model_copy(update={"dataset_chunk_rows": rows})


def test_holdout_scores_equal_the_boosters_scores_on_the_training_rows(demo, tmp_path):
    events = holdout_events(demo)
    assert len(events) > 10_000
    source = tmp_path / "holdout.parquet"
    events.to_parquet(source, index=False)
    out = tmp_path / "scores.parquet"

    summary = score_events(small_chunks(demo, 4_000), source, out)

    version = demo.model.contract.version
    assert summary.rows == len(events) and summary.model_version == version
    assert summary.output == out and summary.seconds > 0
    assert not out.with_name(out.name + ".partial").exists()
    table = pq.read_table(out)
    assert table.column_names == ["transaction_id", "card_id", "merchant_id", "event_timestamp",
                                  "score", "model_version"]
    assert table.schema.field("score").type == pa.float64()
    assert table.schema.field("model_version").type == pa.string()
    meta = table.schema.metadata
    assert meta[b"model_version"].decode() == version
    assert meta[b"feature_service"].decode() == demo.settings.feature_service
    assert meta[b"fingerprint"].decode() == demo.model.contract.fingerprint

    scores = table.to_pandas()
    assert scores["transaction_id"].tolist() == events["transaction_id"].tolist()
    assert (scores["model_version"] == version).all()
    expected = training_scores(demo).loc[scores["transaction_id"]].to_numpy()
    np.testing.assert_allclose(scores["score"].to_numpy(), expected, rtol=0, atol=1e-12)
    # ... which are the holdout scores training evaluated (saved model = best iteration).
    holdout = demo.training_set.frame.set_index("transaction_id").loc[scores["transaction_id"]]
    features = demo.model.contract.features
    in_training = demo.model.booster.predict(
        to_matrix(holdout, features, demo.model.contract.categories),
        num_iteration=demo.model.booster.best_iteration)
    np.testing.assert_allclose(scores["score"].to_numpy(), in_training, rtol=0, atol=1e-12)


def test_every_row_is_scored_in_input_order_even_for_unknown_entities(demo, tmp_path):
    tx = demo.data.transactions
    sample = tx.sample(2_500, random_state=11)  # across the whole period, not in time order
    unknown = tx.iloc[[len(tx) // 2]].assign(transaction_id=-1, card_id=10**9,
                                              merchant_id=10**9, amount=250.0,
                                              channel="online", local_hour=3)
    events = pd.concat([sample.iloc[:1_000], unknown, sample.iloc[1_000:],
                        sample.iloc[[5]]])  # an event twice
    # Other column types the file may hold: naive UTC nanoseconds, 32-bit ids.
    events = events.assign(
        event_timestamp=events["event_timestamp"].dt.tz_localize(None).astype("datetime64[ns]"),
        card_id=events["card_id"].astype("int32"),
    )
    source = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), source,
                   row_group_size=700)
    out = tmp_path / "scores.parquet"

    summary = score_events(small_chunks(demo, 900), source, out)

    scores = pd.read_parquet(out)
    assert summary.rows == len(scores) == len(events)
    assert scores["transaction_id"].tolist() == events["transaction_id"].tolist()
    assert scores["card_id"].tolist() == events["card_id"].tolist()
    assert scores["score"].notna().all()
    pd.testing.assert_series_equal(
        scores["event_timestamp"].reset_index(drop=True),
        events["event_timestamp"].dt.tz_localize("UTC").astype("datetime64[us, UTC]")
        .reset_index(drop=True), check_names=False)
    # Known events: the training set's scores, wherever they sit in the input.
    known = training_scores(demo)
    labelled = scores[scores["transaction_id"].isin(known.index)]
    assert len(labelled) > 2_000
    np.testing.assert_allclose(labelled["score"], known.loc[labelled["transaction_id"]],
                               rtol=0, atol=1e-12)
    assert scores.iloc[-1].equals(scores.iloc[5])  # the repeated event
    # The unknown card and merchant: no stored feature, only the request-time ones.
    row = scores[scores["transaction_id"] == -1]
    assert row.index.tolist() == [1_000]
    contract = demo.model.contract
    features = contract.features
    alone = pd.DataFrame({f.name: pd.Series([None], dtype="object") for f in features})
    alone["transaction_features__log_amount"] = math.log1p(250.0)
    alone["transaction_features__is_online"] = 1
    alone["transaction_features__is_night"] = 1
    want = load_artifact(demo.model.directory).booster.predict(
        to_matrix(alone, features, contract.categories))
    assert row["score"].iloc[0] == pytest.approx(want[0], abs=1e-12)


@pytest.mark.parametrize("change, named", [
    (lambda e: e.drop(columns="local_hour"), "lacks column local_hour"),
    (lambda e: e.drop(columns=["event_timestamp", "card_id"]),
     "lacks columns card_id, event_timestamp"),
    (lambda e: e.assign(channel=1), "column channel of .* is int64; the model needs String"),
    (lambda e: e.assign(merchant_id=e["merchant_id"] + 0.5), "column merchant_id .* needs Int64"),
    (lambda e: e.assign(event_timestamp=e["event_timestamp"].astype(str)),
     "column event_timestamp .* needs a timestamp"),
    (lambda e: e.assign(event_timestamp=e["event_timestamp"].where(e.index != e.index[3])),
     "column event_timestamp .* has 1 null values"),
], ids=["no-request-field", "no-key-no-time", "string-as-int", "key-as-float", "time-as-string",
        "null-time"])
def test_a_missing_or_mistyped_column_is_named(demo, tmp_path, change, named):
    events = change(demo.data.transactions[INPUTS].head(50))
    source = tmp_path / "events.parquet"
    events.to_parquet(source, index=False)
    out = tmp_path / "scores.parquet"
    with pytest.raises(ScoreError, match=named):
        score_events(demo.settings, source, out)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_an_empty_input_gives_an_empty_file_with_the_schema(demo, tmp_path):
    source = tmp_path / "events.parquet"
    demo.data.transactions[INPUTS].head(0).to_parquet(source, index=False)
    out = tmp_path / "scores.parquet"
    assert score_events(demo.settings, source, out).rows == 0
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names[-2:] == ["score", "model_version"]


def altered_model(demo, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(demo.model.directory, copy)
    contract = json.loads((copy / "contract.json").read_text())
    edit(contract)
    (copy / "contract.json").write_text(json.dumps(contract, indent=2))
    load_artifact(copy)  # the model file is intact: only the contract disagrees
    return copy


def _new_ttl(contract: dict) -> None:
    contract["definitions"]["views"]["card_activity"]["ttl_seconds"] = 1
    contract["fingerprint"] = "sha256:" + "0" * 64


def _new_type(contract: dict) -> None:
    feature = next(f for f in contract["features"] if f["name"] == "card_activity__txn_count_1d")
    feature["dtype"] = "Float64"


@pytest.mark.parametrize("edit, named", [
    (_new_ttl, "definitions fingerprint differs (changed views: card_activity)"),
    (_new_type, "feature card_activity__txn_count_1d type Float64 != served Int64"),
], ids=["fingerprint", "feature-type"])
def test_a_model_whose_contract_differs_is_refused(demo, tmp_path, edit, named):
    model = altered_model(demo, tmp_path, edit)
    source = tmp_path / "events.parquet"
    demo.data.transactions[INPUTS].head(50).to_parquet(source, index=False)
    out = tmp_path / "scores.parquet"
    with pytest.raises(ScoreError) as info:
        score_events(demo.settings, source, out, model_dir=model)
    message = str(info.value)
    assert named in message
    assert demo.model.contract.version in message
    assert not out.exists()


def run_cli(demo, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEAST_USAGE": "False", "PYTHONPATH": str(PROJECT_ROOT),
           "SKEWLESS_REPO_PATH": str(demo.settings.repo_path),
           "SKEWLESS_VAR_DIR": str(demo.settings.var_dir)}
    return subprocess.run([sys.executable, "-m", "skewless.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_prints_a_one_line_summary_and_names_a_missing_input(demo, tmp_path):
    events = demo.data.transactions[INPUTS].tail(300)
    source = tmp_path / "events.parquet"
    events.to_parquet(source, index=False)
    out = tmp_path / "out" / "scores.parquet"

    done = run_cli(demo, tmp_path, "score", "--input", str(source), "--output", str(out))

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    version = demo.model.contract.version
    assert len(lines) == 1 and lines[0].startswith(f"scored 300 events with model {version} in ")
    assert pd.read_parquet(out)["transaction_id"].tolist() == events["transaction_id"].tolist()

    missing = tmp_path / "no-such-events-file-with-a-rather-long-name.parquet"
    failed = run_cli(demo, tmp_path, "score", "--input", str(missing), "--output", str(out))

    assert failed.returncode == 1
    assert failed.stdout.strip().splitlines() == [f"error: input file {missing} does not exist"]
    assert "Traceback" not in failed.stderr
