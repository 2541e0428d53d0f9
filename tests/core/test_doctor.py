"""What Skewless needs from a Feast repo, checked on Feast's own template at the commands that
rely on it (training on a Map feature, serving from a store that is not Redis).

The template is what `feast init` writes (sqlite online store, the default `file` offline
store, relative file sources, a view with Map, Json and Struct features, a pandas-mode
on-demand view); the "prepared" one is the template after the changes Skewless needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skewless.requirements import UnsupportedRepo
from skewless.settings import Settings

FEAST = Path(sys.executable).with_name("feast")
SERVICE_WITH_MAPS = "driver_activity_v2"  # conv_rate, …, driver_metadata (Map), … (Json, Struct)
SCALAR_SERVICE = "driver_activity_v1"  # conv_rate and the on-demand view's two outputs

PREPARED_YAML = """\
project: demo_repo
registry: data/registry.db
provider: local
online_store:
  type: redis
  connection_string: ${SKEWLESS_REDIS}
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""


def feast(repo: Path, *args: str, redis: str = "127.0.0.1:1") -> None:
    # `feast apply` does not connect to Redis: any address does.
    env = {**os.environ, "FEAST_USAGE": "False", "SKEWLESS_REDIS": redis}
    result = subprocess.run([str(FEAST), *args], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repo `feast init` writes, unchanged (tests copy it before changing anything).

    Feast's own init, run in this process: `feast init` in a child would spend 5 s importing
    Feast again.
    """
    from feast.repo_operations import init_repo

    root = tmp_path_factory.mktemp("template")
    init_repo("demo_repo", "local", str(root / "demo_repo"))
    return root / "demo_repo" / "feature_repo"


def prepare(repo: Path) -> None:
    """What the doctor asks of the template for a scalar feature service: Redis and duckdb,
    and the on-demand view reading only the feature its function uses."""
    (repo / "feature_store.yaml").write_text(PREPARED_YAML)
    definitions = repo / "feature_definitions.py"
    text = definitions.read_text()
    assert text.count("sources=[driver_stats_fv, input_request]") == 1
    definitions.write_text(text.replace("sources=[driver_stats_fv, input_request]",
                                        'sources=[driver_stats_fv[["conv_rate"]], input_request]'))


@pytest.fixture(scope="module")
def prepared(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepared template, applied (shared read-only; a test that changes it copies it)."""
    repo = tmp_path_factory.mktemp("prepared") / "feature_repo"
    shutil.copytree(template, repo)
    prepare(repo)
    feast(repo, "apply")
    return repo


def write_label_source(directory: Path, now: datetime) -> dict[str, str]:
    """Events of the template's drivers with the on-demand view's request fields, and their
    0/1 labels a day later (the latest not known yet); returns the settings naming them."""
    rng = np.random.default_rng(5)
    n = 120
    hours = rng.integers(2, 24 * 6, n)
    events = pd.DataFrame({
        "txn_id": [f"txn-{i:04d}" for i in range(n)],
        "event_timestamp": [now - timedelta(hours=int(h)) for h in hours],
        "driver_id": rng.choice([1001, 1002, 1003, 1004, 1005], n).astype("int64"),
        "val_to_add": rng.integers(0, 10, n), "val_to_add_2": rng.integers(0, 10, n),
    })
    labels = pd.DataFrame({"txn_id": events["txn_id"],
                           "labelled_at": events["event_timestamp"] + timedelta(days=1),
                           "outcome": np.arange(n) % 2})
    directory.mkdir(parents=True, exist_ok=True)
    events.to_parquet(directory / "events.parquet")
    labels.to_parquet(directory / "labels.parquet")
    return {"SKEWLESS_EVENTS_PATH": str(directory / "events.parquet"),
            "SKEWLESS_LABELS_PATH": str(directory / "labels.parquet"),
            "SKEWLESS_EVENT_ID_COLUMN": "txn_id",
            "SKEWLESS_EVENT_TIMESTAMP_COLUMN": "event_timestamp",
            "SKEWLESS_LABEL_COLUMN": "outcome", "SKEWLESS_LABEL_TIMESTAMP_COLUMN": "labelled_at"}


def configure(monkeypatch: pytest.MonkeyPatch, repo: Path, service: str,
              labels: dict[str, str], redis: str | None) -> Settings:
    for name, value in {**labels, "SKEWLESS_REPO_PATH": str(repo),
                        "SKEWLESS_FEATURE_SERVICE": service}.items():
        monkeypatch.setenv(name, value)
    if redis is None:
        monkeypatch.delenv("SKEWLESS_REDIS", raising=False)
    else:
        monkeypatch.setenv("SKEWLESS_REDIS", redis)
    monkeypatch.delenv("SKEWLESS_FEATURE_LOG_DIR", raising=False)
    return Settings()


def test_training_on_a_map_feature_fails_early_naming_view_feature_and_what_to_do(
        prepared, tmp_path, monkeypatch):
    from skewless.contract import resolve_service
    from skewless.feast_cli import open_store
    from skewless.requirements import feature_type_problem
    from training.dataset import build_training_set

    labels = write_label_source(tmp_path / "labels", datetime.now(UTC))
    settings = configure(monkeypatch, prepared, SERVICE_WITH_MAPS, labels, "127.0.0.1:1")
    words = feature_type_problem(resolve_service(open_store(settings), SERVICE_WITH_MAPS))
    assert words is not None
    for feature, kind in (("driver_metadata", "Map"), ("driver_config", "Json"),
                          ("driver_profile", "Struct")):
        assert f"driver_hourly_stats:{feature} ({kind}" in words.found
    assert f"with scalar features only: {SCALAR_SERVICE}" in words.change

    with pytest.raises(UnsupportedRepo) as refused:
        build_training_set(settings)
    assert str(refused.value) == (f"cannot build a training set for feature service "
                                  f"{SERVICE_WITH_MAPS}: {words}")


def test_serving_a_repo_whose_online_store_is_not_redis_is_refused_at_start(
        prepared, tmp_path, monkeypatch):
    from feast.repo_config import load_repo_config

    from service.app import create_app
    from skewless.requirements import online_store_problem

    repo = tmp_path / "feature_repo"
    shutil.copytree(prepared, repo)  # applied: only the online store changes
    yaml = repo / "feature_store.yaml"
    yaml.write_text(yaml.read_text().replace(
        "  type: redis\n  connection_string: ${SKEWLESS_REDIS}\n",
        "  type: sqlite\n  path: data/online_store.db\n"))
    labels = write_label_source(tmp_path / "labels", datetime.now(UTC))
    settings = configure(monkeypatch, repo, SCALAR_SERVICE, labels, "127.0.0.1:1")
    words = online_store_problem(load_repo_config(repo, yaml))
    assert words is not None and "'sqlite'" in words.found
    assert f"skewless init {repo}" in words.change

    with pytest.raises(UnsupportedRepo) as refused:
        create_app(settings.model_copy(update={"var_dir": tmp_path / "var"}))
    assert str(refused.value) == f"cannot serve feature service {SCALAR_SERVICE}: {words}"


def test_redis_cluster_and_sentinel_are_named_as_what_the_predictor_cannot_read(tmp_path):
    from feast.repo_config import load_repo_config

    from skewless.requirements import online_store_problem

    for redis_type, words in (("redis_cluster", "cannot follow the cluster's slots"),
                              ("redis_sentinel", "not through Sentinel")):
        (tmp_path / "feature_store.yaml").write_text(PREPARED_YAML.replace(
            "  type: redis\n", f"  type: redis\n  redis_type: {redis_type}\n"))
        problem = online_store_problem(load_repo_config(tmp_path, tmp_path / "feature_store.yaml"))
        assert problem is not None and words in problem.found
        assert "redis_type: redis" in problem.change

