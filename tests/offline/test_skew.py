"""The skew check against a real predictor, real Redis and real Feast, on data ending now.

An honest run (over a thousand predictions for present, unknown and expiring entities) must
show no mismatch; every injected skew must be caught with its cause. The tests run in file
order: the last one changes an on-demand view's code.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp
from typer.testing import CliRunner

from service.online import OnlinePlan
from skewless.cli import app as cli
from skewless.contract import ModelContract, contract_differences, resolve_service
from skewless.embedded_redis import RedisServer, find_redis_server
from skewless.feast_cli import run_feast
from skewless.registry import bootstrap_production
from skewless.settings import Settings, redis_for_feast
from tests.support.demo import copy_feature_repo
from tests.support.service_harness import app_in_thread, read_logs
from training.dataset import TrainingSet, build_training_set
from training.generate import GenerateConfig, generate, write_generated
from training.pipeline import PipelinePaths, build_feature_tables
from training.skew import (
    EXPIRED,
    MISSING_ONLINE,
    STALE,
    TRANSFORMATION_CHANGED,
    VALUE_DIFFERS,
    check_online,
    check_served,
)
from training.train import train_model

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Data ending this hour, materialized into a private Redis, a model, the predictor."""
    root = tmp_path_factory.mktemp("skew")
    redis = RedisServer(binary=find_redis_server(), data_dir=root / "redis",
                        persist=False).start()
    # Feast points at this module's server while its tests run, the session's afterwards.
    with redis_for_feast(redis.connection_string):
        yield from _live(root, redis)
    redis.stop()


def _live(root, redis):
    settings = Settings(repo_path=copy_feature_repo(root / "feature_repo"), var_dir=root / "var",
                        redis=redis.connection_string, feature_log_flush_seconds=0.2)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    data = generate(GenerateConfig(cards=500, days=35, end=now, holdout_days=7))
    write_generated(data, settings.raw_dir)
    paths = PipelinePaths.from_settings(settings)
    build_feature_tables(paths)
    # Some cards stopped updating 1.5 and 3 days ago: near and past the 2-day TTL, in the
    # offline tables and online alike.
    table = pd.read_parquet(paths.card_activity)
    cards = table["card_id"].drop_duplicates().sample(60, random_state=1).to_numpy()
    for group, age in ((cards[:30], 3.0), (cards[30:], 1.5)):
        table = table[~(table.card_id.isin(group)
                        & (table.event_timestamp > now - timedelta(days=age)))]
    table.to_parquet(paths.card_activity, index=False)
    run_feast(settings, "apply")
    run_feast(settings, "materialize", paths.earliest_event().strftime("%Y-%m-%dT%H:%M:%S"),
              now.strftime("%Y-%m-%dT%H:%M:%S"))
    model = train_model(build_training_set(settings, cutoff=now), settings.model_dir, 7, 7)
    bootstrap_production(settings, model.directory)
    events = pd.read_parquet(settings.raw_dir / "transactions.parquet")
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield settings, http, events, redis, cards


def predict(http, rows: list[dict]) -> datetime:
    """Serve rows; return a moment just before, to select them in the log."""
    before = datetime.now(UTC)
    for start in range(0, len(rows), 200):
        response = http.post("/predict/batch", json={"rows": rows[start:start + 200]})
        assert response.status_code == 200, response.text
    time.sleep(0.6)  # > the log writer's interval: the rows are on disk
    return before


def request_rows(events: pd.DataFrame, n: int, seed: int) -> list[dict]:
    return as_requests(events.sample(n, random_state=seed))


def as_requests(events: pd.DataFrame, with_id: bool = False) -> list[dict]:
    return [{"card_id": int(r.card_id), "merchant_id": int(r.merchant_id),
             "amount": float(r.amount), "channel": str(r.channel),
             "local_hour": int(r.local_hour)}
            | ({"transaction_id": int(r.transaction_id)} if with_id else {})
            for r in events.itertuples()]


def test_an_honest_run_has_no_mismatch(live):
    settings, http, events, _, quiet = live
    rng = np.random.default_rng(3)
    rows = request_rows(events, 1100, seed=1)
    for row in rows[:100]:  # entities nobody knows
        row["card_id"] = int(rng.integers(10**9, 2 * 10**9))
    for row in rows[100:150]:
        row["merchant_id"] = int(rng.integers(10**9, 2 * 10**9))
    for i, row in enumerate(rows[150:300]):  # cards near or past the TTL
        row["card_id"] = int(quiet[i % len(quiet)])
    since = predict(http, rows)
    report = check_served(settings, since=since)
    assert report.rows == len(rows)
    assert report.mismatches == 0, {k: v.examples for k, v in report.features.items()
                                    if v.mismatches}
    statuses = {  # the run covered present, unknown and expired values
        s for s in read_logs(Path(report.log_dir))["card_activity__txn_count_1d__status"]}
    assert {1, 3, 4} <= statuses


def test_online_store_reconciles_with_offline_latest_values(live):
    settings, _, _, _, _ = live
    report = check_online(settings)
    assert report.rows > 500  # every card in two views, and the merchants
    assert report.mismatches == 0, {k: v.examples for k, v in report.features.items()
                                    if v.mismatches}


def test_a_training_set_from_served_logs_equals_the_point_in_time_set(live, tmp_path):
    """Served events joined with labels that arrived later, against Feast's point-in-time set
    for the same events at their served-at times; `skewless train` takes it."""
    settings, http, events, _, _ = live
    assert http.post("/predict", json=as_requests(events[:1])[0] | {"transaction_id": True}
                     ).json()["detail"][0]["loc"][1] == "transaction_id"
    labels = pd.read_parquet(settings.raw_dir / "labels.parquet")
    fraud = events.transaction_id.isin(labels.transaction_id[labels.is_fraud == 1])
    # Three waves, each with enough fraud for the time split's three windows.
    waves = [pd.concat([events[fraud].sample(30, random_state=w),
                        events[~fraud].sample(370, random_state=w)]) for w in range(3)]
    waves[1] = waves[1][~waves[1].transaction_id.isin(waves[0].transaction_id)]
    waves[2] = waves[2][~waves[2].transaction_id.isin(pd.concat(waves[:2]).transaction_id)]
    since = datetime.now(UTC)
    starts = []
    for number, wave in enumerate(waves):
        starts.append(datetime.now(UTC))
        rows = as_requests(wave, with_id=True)
        if number == 1:
            rows += request_rows(events, 30, seed=11)  # no event id: not joinable
        if number == 2:
            rows += as_requests(waves[0][:20], with_id=True)  # scored again: first one kept
        predict(http, rows)
    cutoff = datetime.now(UTC)
    served = pd.concat(waves)
    late = served[~served.transaction_id.isin(labels.transaction_id[labels.is_fraud == 1])
                  ].transaction_id.sample(50, random_state=4)  # labels not arrived yet
    known = served.transaction_id[~served.transaction_id.isin(late)]
    labels_path = tmp_path / "labels.parquet"
    labels[labels.transaction_id.isin(known)].assign(label_timestamp=cutoff).to_parquet(
        labels_path)
    env = {"SKEWLESS_REPO_PATH": str(settings.repo_path), "SKEWLESS_VAR_DIR": str(settings.var_dir),
           "SKEWLESS_REDIS": str(settings.redis), "SKEWLESS_LABELS_PATH": str(labels_path)}
    output = tmp_path / "from_logs.parquet"
    built = CliRunner().invoke(cli, ["dataset", "--from-logs", "--output", str(output),
                                     "--since", since.isoformat(), "--cutoff",
                                     cutoff.isoformat()], env=env)
    assert built.exit_code == 0, built.output
    assert f"{len(known):,} labelled events" in built.output
    assert "30 without transaction_id, 20 repeated scorings" in built.output
    assert "50 not labelled yet, 0 served under other" in built.output
    from_logs = TrainingSet.read(output)
    assert from_logs.origin == "served logs"

    # The point-in-time set of the same events, each at the time it was first served.
    logged = read_logs(settings.data_dir / "feature_logs" / settings.feature_service)
    first = logged.dropna(subset=["transaction_id"]).groupby("transaction_id")[
        "__log_timestamp"].min()
    replay = served.assign(event_timestamp=served.transaction_id.astype(str).map(first))
    replay.to_parquet(tmp_path / "events.parquet")
    pit = build_training_set(
        settings.model_copy(update={"events_path": tmp_path / "events.parquet",
                                    "labels_path": labels_path}), cutoff=cutoff)
    assert len(pit.frame) == len(known)
    pd.testing.assert_frame_equal(from_logs.frame, pit.frame, check_exact=True)
    assert from_logs.service == pit.service

    # `skewless train` takes it; the model's contract is the one the predictor checks.
    holdout = (cutoff - (starts[2] - timedelta(seconds=0.3))).total_seconds() / 86400
    validation = (starts[2] - starts[1]).total_seconds() / 86400
    train_env = {**env, "SKEWLESS_VAR_DIR": str(tmp_path / "var"),
                 "SKEWLESS_HOLDOUT_DAYS": repr(holdout), "SKEWLESS_VALIDATION_DAYS": repr(validation)}
    assert CliRunner().invoke(cli, ["db", "upgrade"], env=train_env).exit_code == 0
    trained = CliRunner().invoke(cli, ["train", "--dataset", str(output)], env=train_env)
    assert trained.exit_code == 0, trained.output
    assert "registered as a candidate" in trained.output
    (directory,) = (tmp_path / "var" / "models" / settings.feature_service).iterdir()
    contract = json.loads((directory / "contract.json").read_text())
    in_holdout = int((from_logs.frame["event_timestamp"] >= starts[2]).sum())
    assert contract["training"]["rows"]["holdout"] == in_holdout > 0
    from feast import FeatureStore

    spec = resolve_service(FeatureStore(repo_path=str(settings.repo_path)),
                           settings.feature_service)
    assert contract_differences(ModelContract.model_validate(contract), spec) == []


def redis_key(settings: Settings, card_id: int) -> bytes:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(settings.repo_path))
    plan = OnlinePlan.from_store(store, resolve_service(store, settings.feature_service))
    group = next(g for g in plan.groups if g.join_keys == ("card_id",))
    return plan.redis_key(group, {"card_id": card_id})


def recent_card(live, offset: int) -> int:
    """One of the most recently active cards that still update (not the quiet ones)."""
    events, quiet = live[2], set(live[4].tolist())
    cards = events.sort_values("event_timestamp")["card_id"].drop_duplicates(keep="last")
    return [int(c) for c in cards.iloc[::-1] if c not in quiet][offset]


def only_causes(report, expected: dict[str, str]) -> None:
    mismatching = {name: dict(r.causes) for name, r in report.features.items() if r.mismatches}
    assert set(mismatching) == set(expected), mismatching
    for name, cause in expected.items():
        assert set(mismatching[name]) == {cause}, (name, mismatching[name])


def test_a_value_edited_in_redis_is_caught(live):
    settings, http, events, redis, _ = live
    card = recent_card(live, 0)
    redis.client().hset(redis_key(settings, card), _mmh3("card_activity:txn_count_7d"),
                        ValueProto(int64_val=987654).SerializeToString())
    rows = [r | {"card_id": card} for r in request_rows(events, 5, seed=2)]
    report = check_served(settings, since=predict(http, rows))
    only_causes(report, {"card_activity__txn_count_7d": VALUE_DIFFERS})
    example = report.features["card_activity__txn_count_7d"].examples[0]
    assert example["served"] == 987654 and example["offline"] != 987654
    assert report.features["card_activity__txn_count_7d"].mismatches == 5


def test_offline_rows_landed_after_materialization_show_as_stale_online(live):
    settings, http, events, _, _ = live
    card = recent_card(live, 1)
    path = settings.data_dir / "card_activity.parquet"
    table = pd.read_parquet(path)
    newest = table[table.card_id == card].sort_values("event_timestamp").iloc[[-1]].copy()
    newest["event_timestamp"] = datetime.now(UTC) - timedelta(minutes=5)
    newest["created_timestamp"] = datetime.now(UTC)
    newest["txn_count_1d"] += 41
    pd.concat([table, newest]).to_parquet(path, index=False)  # not materialized
    rows = [r | {"card_id": card} for r in request_rows(events, 4, seed=3)]
    report = check_served(settings, since=predict(http, rows))
    only_causes(report, {"card_activity__txn_count_1d": STALE})


def test_a_value_past_its_ttl_online_but_fresh_offline_is_expired(live):
    settings, http, events, redis, _ = live
    card = recent_card(live, 2)
    old = Timestamp()
    old.FromDatetime(datetime.now(UTC).replace(tzinfo=None) - timedelta(days=3))
    redis.client().hset(redis_key(settings, card), "_ts:card_activity", old.SerializeToString())
    rows = [r | {"card_id": card, "amount": 50.0} for r in request_rows(events, 3, seed=4)]
    report = check_served(settings, since=predict(http, rows))
    causes = {name: set(r.causes) for name, r in report.features.items() if r.mismatches}
    card_activity = {n for n in causes if n.startswith("card_activity__")}
    assert len(card_activity) >= 8 and all(causes[n] == {EXPIRED} for n in card_activity)
    # The ratios computed from them inherit the cause.
    assert causes["transaction_features__amount_to_mean_28d"] == {EXPIRED}


def test_unknown_entities_missing_online_are_named(live):
    settings, http, events, redis, _ = live
    card = recent_card(live, 3)
    redis.client().delete(redis_key(settings, card))  # online lost the entity
    rows = [r | {"card_id": card} for r in request_rows(events, 2, seed=5)]
    report = check_served(settings, since=predict(http, rows))
    causes = {name: set(r.causes) for name, r in report.features.items() if r.mismatches}
    assert causes["card_profile__card_type"] == {MISSING_ONLINE}
    assert causes["card_activity__txn_count_28d"] == {MISSING_ONLINE}


def test_a_changed_transformation_is_named_and_the_cli_gates(live):
    settings, http, events, _, _ = live
    rows = [r | {"local_hour": 6} for r in request_rows(events, 3, seed=6)]
    since = predict(http, rows)
    on_demand = settings.repo_path / "on_demand.py"
    on_demand.write_text(on_demand.read_text().replace("int(h < 6)", "int(h < 7)"))
    run_feast(settings, "apply")
    report = check_served(settings, since=since)
    only_causes(report, {"transaction_features__is_night": TRANSFORMATION_CHANGED})

    env = {"SKEWLESS_REPO_PATH": str(settings.repo_path), "SKEWLESS_VAR_DIR": str(settings.var_dir),
           "SKEWLESS_REDIS": str(settings.redis)}
    result = CliRunner().invoke(cli, ["skew-check", "--since", since.isoformat(), "--json"],
                                env=env)
    assert result.exit_code == 1, result.output
    body = json.loads(result.output[result.output.index("{"):])
    assert body["mismatches"] == 3
    saved = json.loads((settings.var_dir / "skew" / "fraud_model_v1.json").read_text())
    assert saved["features"]["transaction_features__is_night"]["mismatches"] == 3
    metrics = http.get("/metrics").text  # the predictor shows the last check per feature
    assert 'skewless_skew_mismatches{feature="transaction_features__is_night"} 3.0' in metrics
    assert 'skewless_skew_mismatches{feature="card_activity__txn_count_1d"} 0.0' in metrics
    tolerated = CliRunner().invoke(cli, ["skew-check", "--since", since.isoformat(),
                                         "--max-mismatches", "3"], env=env)
    assert tolerated.exit_code == 0, tolerated.output
    assert "transformation changed" in tolerated.output


def test_the_online_check_finds_edited_and_lost_entities(live):
    """After the injections above: one value edited by hand, one entity deleted."""
    settings = live[0]
    report = check_online(settings)
    causes = {name: dict(r.causes) for name, r in report.features.items() if r.mismatches}
    assert causes["card_activity__txn_count_7d"] == {VALUE_DIFFERS: 1, MISSING_ONLINE: 1}
    assert causes["card_profile__card_type"] == {MISSING_ONLINE: 1}
    assert not any(name.startswith("merchant_stats__") for name in causes)
