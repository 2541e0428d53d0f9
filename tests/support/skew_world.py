"""The skew check's world: data ending this hour, materialized into its own redis-server,
a model trained on it in production.

Its tests serve it, then edit its Redis values and its on-demand code: it is theirs alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from skewless.feast_cli import run_feast
from skewless.registry import bootstrap_production
from skewless.settings import Settings, export_for_feast
from tests.support.demo import copy_feature_repo
from training.dataset import build_training_set
from training.generate import GenerateConfig, generate, write_generated
from training.pipeline import PipelinePaths, build_feature_tables
from training.train import train_model


@dataclass
class SkewWorld:
    settings: Settings
    cards: np.ndarray  # cards whose rows stop 1.5 and 3 days before the data's end


def build_skew_world(root: Path, redis: str) -> SkewWorld:
    export_for_feast(redis)  # in the builder's process
    settings = Settings(repo_path=copy_feature_repo(root / "feature_repo"), var_dir=root / "var",
                        redis=redis, feature_log_flush_seconds=0.2)
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
    return SkewWorld(settings, cards)
