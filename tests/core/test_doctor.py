"""`skewless doctor` on Feast's own template, and the same words at the commands that rely on
each check (training on a Map feature, serving from a store that is not Redis).

The template is what `feast init` writes (sqlite online store, the default `file` offline
store, relative file sources, a view with Map, Json and Struct features, a pandas-mode
on-demand view); the "prepared" one is the template after the changes the doctor asks for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from skewless.cli import app
from skewless.embedded_redis import RedisServer
from skewless.reports.doctor import DoctorReport, Finding
from skewless.requirements import UnsupportedRepo
from skewless.settings import Settings

runner = CliRunner()
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
    """What the doctor asks of the template for a scalar feature service: its store lines
    (Redis and duckdb), nothing in its definitions."""
    (repo / "feature_store.yaml").write_text(PREPARED_YAML)


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


def run_doctor(*args: str) -> tuple[int, dict[str, Finding], dict]:
    result = runner.invoke(app, ["doctor", "--json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    document = json.loads(result.stdout)
    findings = {f["item"]: Finding(**{k: f[k] for k in ("item", "status", "found", "change")})
                for f in document["findings"]}
    for f in document["findings"]:
        assert f["message"] == findings[f["item"]].message
    return result.exit_code, findings, document


def blocking(findings: dict[str, Finding]) -> dict[str, str]:
    return {item: f.message for item, f in findings.items() if f.status == "blocks"}


def test_doctor_names_each_thing_to_change_in_the_unchanged_template(template, tmp_path,
                                                                      monkeypatch):
    repo = tmp_path / "feature_repo"
    shutil.copytree(template, repo)
    labels = write_label_source(tmp_path / "labels", datetime.now(UTC))
    configure(monkeypatch, repo, SERVICE_WITH_MAPS, labels, redis=None)

    code, findings, document = run_doctor()

    assert code == 1 and document["ok"] is False
    blocks = blocking(findings)
    assert set(blocks) == {"online store", "offline store", "feature types",
                           "served-feature log"}, blocks
    assert "'sqlite'" in blocks["online store"]
    assert f"skewless init {repo}" in blocks["online store"]
    assert "connection_string: ${SKEWLESS_REDIS}" in blocks["online store"]
    assert "`file` (dask)" in blocks["offline store"]
    assert "drops label events" in blocks["offline store"]
    assert "`offline_store: {type: duckdb}`" in blocks["offline store"]
    assert f"skewless init {repo}" in blocks["offline store"]
    for feature, kind in (("driver_metadata", "Map"), ("driver_config", "Json"),
                          ("driver_profile", "Struct")):
        assert f"driver_hourly_stats:{feature} ({kind}" in blocks["feature types"]
    assert f"with scalar features only: {SCALAR_SERVICE}" in blocks["feature types"]
    assert "on-demand view" in blocks["feature types"]  # what to do instead
    assert "SKEWLESS_FEATURE_LOG_DIR" in blocks["served-feature log"]
    # Before `feast apply`: the definitions read as `feast plan` reads them, nothing written.
    assert findings["registry"].status == "warn" and "skewless apply" in findings["registry"].change
    assert not (repo / "data" / "registry.db").exists()
    assert not (repo / "data" / "online_store.db").exists()
    # What works is said too: the pandas-mode view, the ttl, the relative source, the labels.
    assert "mode pandas" in findings["on-demand view transformed_conv_rate"].found
    assert findings["ttl of driver_hourly_stats"].status == "ok"
    source = findings["source driver_hourly_stats_source"]
    assert source.status == "ok" and source.found.startswith("data/driver_stats.parquet (relative")
    kept = findings["label events kept"]
    assert kept.status == "ok" and " of 120 events would be kept" in kept.found
    assert findings["entity keys of driver_hourly_stats"].found.startswith("120 of 120 events")
    assert "driver_quality_labels is not read" in findings["label source"].found

    # The terminal view of the same report: one entry per item, the blocking ones named last.
    from io import StringIO

    from rich.console import Console

    from skewless.reports.doctor import print_doctor

    out = StringIO()
    print_doctor(DoctorReport(repo=document["repo"], feature_service=SERVICE_WITH_MAPS,
                              findings=list(findings.values())),
                 Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "blocks online store: the online store is 'sqlite'" in text
    assert text.strip().endswith("4 item(s) block: online store, offline store, feature types, "
                                 "served-feature log")


def test_doctor_passes_on_the_prepared_template(prepared, tmp_path, monkeypatch,
                                                redis_server: RedisServer):
    labels = write_label_source(tmp_path / "labels", datetime.now(UTC))
    configure(monkeypatch, prepared, SCALAR_SERVICE, labels, redis_server.connection_string)

    code, findings, document = run_doctor()

    assert code == 0 and document["ok"] is True, blocking(findings)
    assert findings["registry"].status == "ok"
    assert findings["online store address"].status == "ok"
    assert findings["offline store"].found.startswith("duckdb")
    assert findings["feature types"].status == "ok"
    # The template logs served features into data/, beside its feature table: harmless. It
    # classifies no data's privacy: a warning naming what, never a block.
    assert {item for item, f in findings.items() if f.status == "warn"} == {"privacy classes"}
    assert "entity key driver_id has no privacy tag" in findings["privacy classes"].found
    assert "leave alone" in findings["served-feature log"].found
    assert "driver_stats.parquet" in findings["served-feature log"].found


def test_doctor_takes_the_repo_as_an_argument_and_names_a_missing_feature_service(
        prepared, tmp_path, monkeypatch, redis_server: RedisServer):
    labels = write_label_source(tmp_path / "labels", datetime.now(UTC))
    configure(monkeypatch, tmp_path / "elsewhere", "fraud_model_v1", labels,
              redis_server.connection_string)

    code, findings, _ = run_doctor(str(prepared))

    assert code == 1
    service = findings["feature service"]
    assert service.status == "blocks"
    assert "fraud_model_v1 (SKEWLESS_FEATURE_SERVICE) is not defined" in service.found
    assert f"with scalar features only: {SCALAR_SERVICE}" in service.change


def test_training_on_a_map_feature_fails_early_with_the_doctors_words(prepared, tmp_path,
                                                                      monkeypatch):
    from skewless.doctor import diagnose
    from training.dataset import build_training_set

    labels = write_label_source(tmp_path / "labels", datetime.now(UTC))
    settings = configure(monkeypatch, prepared, SERVICE_WITH_MAPS, labels, "127.0.0.1:1")
    words = next(f for f in diagnose(settings).findings if f.item == "feature types")
    assert words.status == "blocks"

    with pytest.raises(UnsupportedRepo) as refused:
        build_training_set(settings)
    assert str(refused.value) == (f"cannot build a training set for feature service "
                                  f"{SERVICE_WITH_MAPS}: {words.message}")


def test_serving_a_repo_whose_online_store_is_not_redis_fails_with_the_doctors_words(
        prepared, tmp_path, monkeypatch):
    from service.app import create_app
    from skewless.doctor import diagnose

    repo = tmp_path / "feature_repo"
    shutil.copytree(prepared, repo)  # applied: only the online store changes
    yaml = repo / "feature_store.yaml"
    yaml.write_text(yaml.read_text().replace(
        "  type: redis\n  connection_string: ${SKEWLESS_REDIS}\n",
        "  type: sqlite\n  path: data/online_store.db\n"))
    labels = write_label_source(tmp_path / "labels", datetime.now(UTC))
    settings = configure(monkeypatch, repo, SCALAR_SERVICE, labels, "127.0.0.1:1")
    words = next(f for f in diagnose(settings).findings if f.item == "online store")
    assert words.status == "blocks" and "'sqlite'" in words.found

    with pytest.raises(UnsupportedRepo) as refused:
        create_app(settings.model_copy(update={"var_dir": tmp_path / "var"}))
    assert str(refused.value) == (f"cannot serve feature service {SCALAR_SERVICE}: "
                                  f"{words.message}")


def test_sentinel_is_named_as_what_the_predictor_cannot_read_and_a_cluster_is_served(tmp_path):
    from feast.repo_config import load_repo_config

    from skewless.requirements import online_store_problem

    def problem(redis_type: str):
        (tmp_path / "feature_store.yaml").write_text(PREPARED_YAML.replace(
            "  type: redis\n", f"  type: redis\n  redis_type: {redis_type}\n"))
        return online_store_problem(load_repo_config(tmp_path, tmp_path / "feature_store.yaml"))

    sentinel = problem("redis_sentinel")
    assert sentinel is not None and "not through Sentinel" in sentinel.found
    assert "redis_type: redis_cluster" in sentinel.change
    assert problem("redis_cluster") is None


def test_an_on_demand_view_reading_features_its_service_does_not_serve_is_noted(template,
                                                                              tmp_path):
    """The template's driver_activity_v1 serves conv_rate, but its on-demand view reads the
    whole driver_hourly_stats view: the predictor reads the rest with the vector, so the
    doctor notes it and serving is not refused for it."""
    from feast.repo_config import load_repo_config

    from skewless.contract import resolve_definitions
    from skewless.definitions import parse_repo_definitions
    from skewless.doctor import service_findings
    from skewless.requirements import require_servable
    from skewless.settings import feast_process_env

    repo = tmp_path / "feature_repo"
    shutil.copytree(template, repo)
    (repo / "feature_store.yaml").write_text(PREPARED_YAML)
    registry = parse_repo_definitions(repo, feast_process_env("127.0.0.1:1"))
    settings = Settings(repo_path=repo, feature_service=SCALAR_SERVICE, redis="127.0.0.1:1")
    _, findings = service_findings(settings, registry)
    assert [f for f in findings if f.status == "blocks"] == []
    (note,) = [f for f in findings if f.item == "on-demand view transformed_conv_rate inputs"]
    assert note.status == "ok"
    assert note.found.startswith("on-demand view transformed_conv_rate also reads "
                                 "driver_hourly_stats: acc_rate, avg_daily_trips, "
                                 "driver_metadata, driver_config, driver_profile, which feature "
                                 f"service {SCALAR_SERVICE} does not serve: the predictor reads "
                                 "them with the vector")
    config = load_repo_config(repo, repo / "feature_store.yaml")
    require_servable(config, resolve_definitions(registry, SCALAR_SERVICE))  # not refused


def test_the_cluster_profile_names_its_missing_file_and_needs_the_clusters_nodes(tmp_path):
    from skewless.definitions import DefinitionsError
    from skewless.doctor import definitions
    from skewless.embedded_redis import RedisUnavailable, redis_for

    (tmp_path / "feature_store.yaml").write_text(PREPARED_YAML)
    settings = Settings(repo_path=tmp_path, var_dir=tmp_path / "var", profile="cluster",
                        redis=None)
    assert settings.feature_store_yaml == tmp_path / "feature_store.cluster.yaml"
    with pytest.raises(DefinitionsError) as missing:
        definitions(settings)
    assert "feature_store.cluster.yaml does not exist" in str(missing.value)
    assert "SKEWLESS_PROFILE=cluster" in str(missing.value)
    with pytest.raises(RedisUnavailable) as unset, redis_for(settings):
        pass
    assert "SKEWLESS_REDIS" in str(unset.value) and "nodes" in str(unset.value)
    assert not (tmp_path / "var" / "redis").exists()  # no embedded server was started


def test_the_cluster_profile_without_the_spark_extra_says_how_to_add_it(tmp_path, monkeypatch):
    """feature_store.cluster.yaml names Spark; without pyspark (the default install) a command
    on that profile says which package is missing and how to add it, not an ImportError."""
    from skewless.feast_cli import EngineMissing, open_store
    from tests.support.demo import copy_feature_repo

    monkeypatch.setitem(sys.modules, "pyspark", None)  # as where the extra is not installed
    for name in [m for m in sys.modules if ".spark" in m and m.startswith("feast.")]:
        monkeypatch.delitem(sys.modules, name)
    settings = Settings(repo_path=copy_feature_repo(tmp_path / "repo"), var_dir=tmp_path / "var",
                        profile="cluster", redis="127.0.0.1:1,127.0.0.1:2")
    with pytest.raises(EngineMissing) as missing:
        open_store(settings)
    assert "feature_store.cluster.yaml" in str(missing.value)
    assert "pyspark" in str(missing.value) and "make spark" in str(missing.value)
    # The doctor says the same.
    from skewless.definitions import DefinitionsError
    from skewless.doctor import definitions

    with pytest.raises(DefinitionsError) as doctor:
        definitions(settings)
    assert "pyspark" in str(doctor.value) and "make spark" in str(doctor.value)
