"""`skewless init REPO` on Feast's own template and on repos with other stores.

The template is made by `feast init` once per module and copied for each test; init runs
through the CLI as a user types it. No server is started.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from skewless.cli import app
from skewless.errors import InvalidInput
from skewless.settings import Settings

runner = CliRunner()
REDIS = {"type": "redis", "connection_string": "${SKEWLESS_REDIS}"}
DUCKDB = {"type": "duckdb"}
OPTIONS = ["--feature-service", "driver_activity_v1",
           "--events", "drivers/data/driver_stats.parquet",  # as typed in the repo's parent
           "--labels", "drivers/data/driver_quality_labels.parquet",
           "--event-id", "driver_id", "--label", "is_reliable",
           "--label-timestamp", "event_timestamp"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feast's `feast init` repo, as this Feast version writes it."""
    root = tmp_path_factory.mktemp("template")
    feast = Path(sys.executable).with_name("feast")
    subprocess.run([str(feast), "init", "drivers"], cwd=root, check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "FEAST_USAGE": "False", "HOME": str(root)})
    return root / "drivers" / "feature_repo"


@pytest.fixture
def repo(template: Path, tmp_path: Path, clean_env: Path,
         monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the template; the working directory is the repo's parent."""
    copy = tmp_path / "drivers"
    shutil.copytree(template, copy)
    monkeypatch.chdir(tmp_path)
    return copy


def init(repo: Path | str, *args: str) -> Result:
    return runner.invoke(app, ["init", str(repo), *args])


def snapshot(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()}


def test_init_gives_the_template_redis_and_duckdb_and_keeps_everything_else(
        repo, monkeypatch):
    before = snapshot(repo)
    original_text = (repo / "feature_store.yaml").read_text()
    original = yaml.safe_load(original_text)
    assert original["online_store"]["type"] == "sqlite" and "offline_store" not in original

    result = init(repo, *OPTIONS)
    assert result.exit_code == 0, result.output

    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    assert config["online_store"] == REDIS and config["offline_store"] == DUCKDB
    keys = list(config)
    assert keys.index("offline_store") == keys.index("online_store") + 1  # added beside it
    others = {k: v for k, v in original.items() if k != "online_store"}
    assert {k: config[k] for k in others} == others  # project, registry, provider, auth, ...
    text = (repo / "feature_store.yaml").read_text()
    assert all(line in text for line in original_text.splitlines() if line.startswith("#"))
    assert (repo / "feature_store.yaml.orig").read_text() == original_text

    # No definition, data or other file changed; only these were added or rewritten.
    after = snapshot(repo)
    assert set(after) - set(before) == {"feature_store.yaml.orig", "skewless.env",
                                        ".skewless/.gitignore"}
    assert {k for k in before if after[k] != before[k]} == {"feature_store.yaml"}

    # Feast reads it as Skewless needs it.
    from feast.repo_config import load_repo_config

    monkeypatch.setenv("SKEWLESS_REDIS", "127.0.0.1:6390")
    feast_config = load_repo_config(repo, repo / "feature_store.yaml")
    assert feast_config.online_store.connection_string == "127.0.0.1:6390"
    assert feast_config.offline_store.type == "duckdb"

    assert f"export SKEWLESS_REPO_PATH={repo}" in result.output
    assert "skewless doctor" in result.output
    assert "sqlite → Redis" in result.output and "→ duckdb" in result.output


def test_every_command_finds_the_repos_settings_from_another_directory(repo, tmp_path,
                                                                      monkeypatch):
    assert init(repo, *OPTIONS, "--truth", str(tmp_path / "truth.parquet")).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SKEWLESS_REPO_PATH", str(repo))
    from skewless.cli.common import load_settings

    settings = load_settings()
    assert settings.feature_service == "driver_activity_v1"
    assert settings.resolved_events_path == repo / "data" / "driver_stats.parquet"
    assert settings.resolved_labels_path == repo / "data" / "driver_quality_labels.parquet"
    assert settings.resolved_truth_path == tmp_path / "truth.parquet"  # outside: absolute
    assert (settings.event_id_column, settings.label_column,
            settings.label_timestamp_column) == ("driver_id", "is_reliable", "event_timestamp")
    assert settings.event_timestamp_column == "event_timestamp"  # not given: the default
    assert settings.var_dir == repo / ".skewless"
    assert settings.redis is None  # unset: commands start an embedded server

    # The working directory's .env, then the environment, beat the repo's file.
    (elsewhere / ".env").write_text("SKEWLESS_FEATURE_SERVICE=driver_activity_v2\n"
                                    "SKEWLESS_LABEL_COLUMN=from_dotenv\n")
    monkeypatch.setenv("SKEWLESS_LABEL_COLUMN", "from_environment")
    settings = load_settings()
    assert settings.feature_service == "driver_activity_v2"
    assert settings.label_column == "from_environment"
    assert settings.event_id_column == "driver_id"


def test_a_second_run_changes_nothing_and_says_so(repo):
    assert init(repo, *OPTIONS).exit_code == 0
    prepared = snapshot(repo)
    for args in (OPTIONS, []):
        again = init(repo, *args)
        assert again.exit_code == 0, again.output
        assert "nothing to change" in again.output
        assert "kept: skewless.env: it has these settings already" in again.output
        assert snapshot(repo) == prepared


def test_paths_in_the_repo_are_written_relative_and_others_absolute(repo, tmp_path):
    outside = tmp_path / "warehouse" / "events.parquet"
    result = init(repo, "--events", str(repo / "data" / "driver_stats.parquet"),
                  "--labels", str(outside), "--label", "is late #1")
    assert result.exit_code == 0, result.output
    text = (repo / "skewless.env").read_text()
    assert "SKEWLESS_EVENTS_PATH=data/driver_stats.parquet\n" in text
    assert f"SKEWLESS_LABELS_PATH={outside}\n" in text
    assert "# SKEWLESS_FEATURE_SERVICE=fraud_model_v1\n" in text  # not given: commented
    assert "no feature service given" in result.output
    assert f"the labels file {outside} does not exist yet" in result.output
    settings = Settings(repo_path=repo)
    assert settings.label_column == "is late #1"  # quoted: the comment sign is the value's
    assert settings.resolved_labels_path == outside


def test_an_existing_settings_file_is_kept_unless_forced_and_then_saved(repo):
    assert init(repo, "--label", "first").exit_code == 0
    refused = init(repo, "--label", "second")
    assert refused.exit_code == 1
    assert isinstance(refused.exception, InvalidInput)
    assert "differs from these options (SKEWLESS_LABEL_COLUMN)" in str(refused.exception)
    assert Settings(repo_path=repo).label_column == "first"

    assert init(repo, "--label", "second", "--force").exit_code == 0
    assert init(repo, "--label", "third", "--force").exit_code == 0
    assert Settings(repo_path=repo).label_column == "third"
    assert "SKEWLESS_LABEL_COLUMN=first" in (repo / "skewless.env.orig").read_text()
    assert "SKEWLESS_LABEL_COLUMN=second" in (repo / "skewless.env.orig.1").read_text()

    # Without options a differing file is kept as it is, and the run succeeds.
    (repo / "skewless.env").write_text("SKEWLESS_VAR_DIR=state\n")
    kept = init(repo)
    assert kept.exit_code == 0 and "skewless.env, as it is" in kept.output
    assert (repo / "skewless.env").read_text() == "SKEWLESS_VAR_DIR=state\n"


def test_an_earlier_saved_feature_store_yaml_is_never_overwritten(repo):
    original = (repo / "feature_store.yaml").read_text()
    assert init(repo).exit_code == 0
    (repo / "feature_store.yaml").write_text(original.replace("no_auth", "no_auth  # again"))
    assert init(repo).exit_code == 0
    assert (repo / "feature_store.yaml.orig").read_text() == original
    assert "# again" in (repo / "feature_store.yaml.orig.1").read_text()


def test_a_directory_without_feature_store_yaml_is_refused(tmp_path, clean_env):
    result = init(tmp_path)
    assert result.exit_code == 1
    assert isinstance(result.exception, InvalidInput)
    assert "has no feature_store.yaml" in str(result.exception)
    assert list(tmp_path.iterdir()) == [clean_env]  # nothing written


def write_repo(root: Path, online: object, offline: object = None) -> Path:
    repo = root / "repo"
    repo.mkdir()
    config = {"project": "p", "registry": "data/registry.db", "provider": "local",
              "online_store": online, "entity_key_serialization_version": 3}
    if offline is not None:
        config["offline_store"] = offline
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return repo


@pytest.mark.parametrize(("online", "named"), [
    ({"type": "remote", "path": "http://features:6566"}, "'remote'"),
    ({"type": "dynamodb", "region": "eu-west-1"}, "'dynamodb'"),
    ({"type": "redis", "redis_type": "redis_sentinel", "connection_string": "s:26379"},
     "'redis (redis_sentinel)'"),
])
def test_an_online_store_skewless_cannot_serve_from_is_refused_unless_forced(
        tmp_path, clean_env, online, named):
    repo = write_repo(tmp_path, online)
    before = snapshot(repo)
    refused = init(repo)
    assert refused.exit_code == 1
    message = str(refused.exception)
    assert f"has a {named} online store" in message
    assert "Skewless's predictor reads Redis or Redis Cluster" in message and "--force" in message
    assert snapshot(repo) == before  # a refusal changes nothing

    forced = init(repo, "--force")
    assert forced.exit_code == 0, forced.output
    assert yaml.safe_load((repo / "feature_store.yaml").read_text())["online_store"] == REDIS
    assert yaml.safe_load((repo / "feature_store.yaml.orig").read_text())["online_store"] == online


def test_a_redis_cluster_and_another_offline_engine_are_kept(tmp_path, clean_env):
    cluster = {"type": "redis", "redis_type": "redis_cluster",
               "connection_string": "node1:6379,node2:6379"}
    spark = {"type": "spark", "spark_conf": {"spark.master": "local[2]"}}
    repo = write_repo(tmp_path, cluster, spark)
    text = (repo / "feature_store.yaml").read_text()
    result = init(repo)
    assert result.exit_code == 0, result.output
    assert (repo / "feature_store.yaml").read_text() == text
    assert not (repo / "feature_store.yaml.orig").exists()
    assert "kept: the Redis Cluster online store" in result.output
    assert "kept: the 'spark' offline store" in result.output


def test_a_redis_store_elsewhere_keeps_its_settings_and_its_address(tmp_path, clean_env):
    online = {"type": "redis", "connection_string": "cache:6379,db=2", "key_ttl_seconds": 3600}
    repo = write_repo(tmp_path, online, {"type": "file"})
    assert init(repo).exit_code == 0
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    assert config["online_store"] == {**online, "connection_string": "${SKEWLESS_REDIS}"}
    assert config["offline_store"] == DUCKDB
    assert Settings(repo_path=repo).redis == "cache:6379,db=2"  # commands keep that server
    again = init(repo)
    assert again.exit_code == 0 and "nothing to change" in again.output


def test_a_layout_the_line_edit_cannot_follow_is_rewritten_whole(tmp_path, clean_env):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        "project: p\nregistry: data/registry.db\nprovider: local\n"
        "online_store: &store\n  type: sqlite\n  path: data/online.db\n"
        "batch_engine: *store\nentity_key_serialization_version: 3\n")
    result = init(repo)
    assert result.exit_code == 0, result.output
    assert "rewritten without its comments" in result.output
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    assert config["online_store"] == REDIS and config["offline_store"] == DUCKDB
    assert config["batch_engine"] == {"type": "sqlite", "path": "data/online.db"}
