"""One small world, applied under both profiles in one repo: the local profile (DuckDB, one
Redis) and the cluster profile (Spark `local[2]`, three-node Redis Cluster). Spark's fixed
start-up cost dominates at any size, so the world is small (100 cards, 30 days, ~5.8k label
events) and shared by the suite; its tables carry planted corrections (a later created
timestamp for the same entity and event time) and gaps longer than a view's TTL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skewless.feast_cli import run_feast
from skewless.registry import bootstrap_production
from skewless.settings import Settings
from tests.conftest import (  # noqa: F401  # fixtures and the hook, registered by import
    pytest_collection_modifyitems,
    redis_cluster,
    redis_server,
)
from tests.support.demo import copy_feature_repo
from training.dataset import TrainingSet, build_training_set
from training.evaluation.plan import EvaluationPlan
from training.generate import GenerateConfig, write_generated
from training.generate import generate as generate_world
from training.pipeline import PipelinePaths, build_feature_tables
from training.train import TrainResult, train_model

CARDS, DAYS = 100, 30
CORRECTED = 12  # (card, snapshot) pairs given a second, later-created row
GAP_CARDS = 5  # cards whose card_activity misses three days (beyond its 2-day TTL)


@dataclass
class SparkWorld:
    local: Settings
    cluster: Settings
    end: datetime
    corrections: pd.DataFrame  # card_id, event_timestamp, the corrected txn_count_7d
    gaps: pd.DataFrame  # card_id, first and last day of the gap
    local_set: TrainingSet
    model: TrainResult


def plant(settings: Settings, end: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Corrections and TTL gaps in card_activity, written back with its own schema."""
    path = settings.data_dir / "card_activity.parquet"
    table = pq.read_table(path)
    frame = table.to_pandas()
    days = sorted(frame["event_timestamp"].unique())
    cards = sorted(frame["card_id"].unique())
    gap_days = days[-8:-5]  # three consecutive snapshots, a few days before the end
    gap_cards = cards[:GAP_CARDS]
    in_gap = frame["card_id"].isin(gap_cards) & frame["event_timestamp"].isin(gap_days)
    frame = frame[~in_gap]
    candidates = frame[~frame["card_id"].isin(gap_cards)
                       & frame["event_timestamp"].isin(days[-12:-2])]
    chosen = candidates.sample(CORRECTED, random_state=3)
    corrected = chosen.copy()
    corrected["created_timestamp"] = corrected["created_timestamp"] + pd.Timedelta(hours=1)
    corrected["txn_count_7d"] = corrected["txn_count_7d"] + 1
    frame = pd.concat([frame, corrected]).sort_values(["event_timestamp", "card_id",
                                                        "created_timestamp"])
    pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), path)
    gaps = pd.DataFrame({"card_id": gap_cards, "first": gap_days[0], "last": gap_days[-1]})
    return corrected[["card_id", "event_timestamp", "txn_count_7d"]], gaps


@pytest.fixture(scope="session")
def spark_world(tmp_path_factory: pytest.TempPathFactory, redis_server,  # noqa: F811
                redis_cluster) -> Iterator[SparkWorld]:  # noqa: F811
    root = tmp_path_factory.mktemp("spark-world")
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    local = Settings(repo_path=copy_feature_repo(root / "feature_repo"), var_dir=root / "var",
                     redis=redis_server.connection_string)
    cluster = local.model_copy(update={"profile": "cluster",
                                       "redis": redis_cluster.connection_string})
    data = generate_world(GenerateConfig(end=end, cards=CARDS, days=DAYS,
                                         holdout_days=local.holdout_days))
    write_generated(data, local.raw_dir)
    build_feature_tables(PipelinePaths.from_settings(local))
    corrections, gaps = plant(local, end)
    run_feast(local, "apply")
    run_feast(cluster, "apply")
    local_set = build_training_set(local, cutoff=end)
    model = train_model(local_set, local.model_dir, local.holdout_days, local.validation_days,
                        evaluation=EvaluationPlan.from_settings(local))
    bootstrap_production(local, model.directory)
    yield SparkWorld(local, cluster, end, corrections, gaps, local_set, model)
