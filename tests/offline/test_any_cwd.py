"""Every command works from any directory: a repo's relative sources mean the repo's files.

Feast's `feast init` template writes FileSource paths relative to the repo
(`data/driver_stats.parquet`); Feast's duckdb store reads them against the working directory.
A small repo of that kind is applied, then used from another directory: its sources and its
logging destination are the repo's, while a relative path the user types stays theirs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from skewless.cli import app as cli
from skewless.feast_cli import open_store, run_feast
from skewless.settings import Settings
from training.dataset import TrainingSet

FEATURE_STORE_YAML = """\
project: walkers
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""

# As `feast init` writes them: paths relative to the repo.
DEFINITIONS = '''\
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.feature_logging import LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination
from feast.types import Int64

walker = Entity(name="walker", join_keys=["walker_id"], value_type=ValueType.INT64)

steps_source = FileSource(name="steps_source", path="data/steps.parquet",
                          timestamp_field="event_timestamp")

steps_fv = FeatureView(name="steps", entities=[walker], ttl=timedelta(days=30),
                       source=steps_source, schema=[Field(name="daily_steps", dtype=Int64)])

walker_model_v1 = FeatureService(
    name="walker_model_v1", features=[steps_fv],
    logging_config=LoggingConfig(destination=FileLoggingDestination(path="data/logs")))
'''

T0 = pd.Timestamp("2026-10-01", tz="UTC")
DAY = pd.Timedelta(days=1)


@pytest.fixture
def walkers(tmp_path: Path) -> Settings:
    repo = tmp_path / "walkers_repo"
    (repo / "data" / "raw").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML)
    (repo / "definitions.py").write_text(DEFINITIONS)
    pd.DataFrame({
        "walker_id": [1, 1, 2],
        "event_timestamp": pd.Series([T0, T0 + 2 * DAY, T0], dtype="datetime64[us, UTC]"),
        "daily_steps": [1000, 3000, 9000],
    }).to_parquet(repo / "data" / "steps.parquet", index=False)
    events = pd.DataFrame({
        "transaction_id": [10, 11, 12],
        "event_timestamp": pd.Series([T0 + DAY, T0 + 3 * DAY, T0 + DAY],
                                     dtype="datetime64[us, UTC]"),
        "walker_id": [1, 1, 2],
    })
    events.to_parquet(repo / "data" / "raw" / "transactions.parquet", index=False)
    pd.DataFrame({"transaction_id": events["transaction_id"],
                  "label_timestamp": events["event_timestamp"] + DAY,
                  "is_fraud": [0, 1, 0]}).to_parquet(repo / "data" / "raw" / "labels.parquet")
    settings = Settings(repo_path=repo, var_dir=tmp_path / "var", redis=None,
                        feature_service="walker_model_v1", events_path=None, labels_path=None,
                        truth_path=None, feature_log_dir=None)
    run_feast(settings, "apply")
    return settings


def test_a_repo_with_relative_sources_works_from_another_directory(walkers, tmp_path,
                                                                   monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = {"SKEWLESS_REPO_PATH": str(walkers.repo_path), "SKEWLESS_VAR_DIR": str(walkers.var_dir),
           "SKEWLESS_FEATURE_SERVICE": walkers.feature_service}

    built = CliRunner().invoke(cli, ["dataset", "--output", "sets/walkers.parquet",
                                     "--cutoff", (T0 + 10 * DAY).isoformat()], env=env)
    assert built.exit_code == 0, built.output
    # The user's relative --output is theirs, not the repo's.
    assert (elsewhere / "sets" / "walkers.parquet").is_file()
    assert not (walkers.repo_path / "sets").exists()
    frame = TrainingSet.read(elsewhere / "sets" / "walkers.parquet").frame
    steps = frame.set_index("transaction_id")["steps__daily_steps"]
    assert steps.to_dict() == {10: 1000, 11: 3000, 12: 9000}
    assert Path.cwd() == elsewhere  # nothing changed the working directory

    # Feast's own CLI, run for the user, reads the same files (materialize pulls the sources).
    run_feast(walkers, "materialize", "2026-09-30T00:00:00", "2026-10-10T00:00:00")
    store = open_store(walkers)
    online = store.get_online_features(features=["steps:daily_steps"],
                                       entity_rows=[{"walker_id": 1}, {"walker_id": 2}])
    assert online.to_dict()["daily_steps"] == [3000, 9000]

    # Served features are logged into the repo's destination, not below the working directory.
    from skewless.contract import logging_destination

    assert logging_destination(store, walkers.feature_service) == (
        walkers.repo_path / "data" / "logs")
    # The catalog's statistics read the repo's source too.
    from training.stats import compute_stats

    doc = compute_stats(walkers, store, online=False)
    assert doc["views"]["steps"]["rows"] == 3, doc["views"]
