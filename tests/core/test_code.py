"""Code tests: settings, the embedded redis-server, the CLI's errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_client
from typer.testing import CliRunner

from skewless.cli import app
from skewless.embedded_redis import RedisServer, control_client, find_redis_server, redis_for
from skewless.settings import DEVELOPMENT_ADMIN_TOKEN, PROJECT_ROOT, Settings

runner = CliRunner()


def test_settings_read_prefixed_environment_and_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SKEWLESS_FEATURE_SERVICE=from_dotenv\nSKEWLESS_SEED=3\n")
    monkeypatch.setenv("SKEWLESS_SEED", "11")
    monkeypatch.setenv("SKEWLESS_HOLDOUT_DAYS", "3.5")
    settings = Settings()
    assert settings.feature_service == "from_dotenv"
    assert settings.seed == 11  # the environment wins over .env
    assert settings.holdout_days == 3.5
    monkeypatch.setenv("SKEWLESS_HOLDOUT_DAYS", "-1")
    with pytest.raises(ValueError, match="holdout_days"):
        Settings()


@pytest.mark.parametrize("example", sorted((PROJECT_ROOT / "config").glob("*.env.example")),
                         ids=lambda p: p.name)
def test_every_example_env_file_names_real_settings_with_valid_values(example, monkeypatch):
    from dotenv import dotenv_values

    values = dotenv_values(example)
    unknown = [k for k in values
               if k.removeprefix("SKEWLESS_").lower() not in Settings.model_fields]
    assert unknown == []
    for key in list(values):
        monkeypatch.delenv(key, raising=False)
    settings = Settings(_env_file=example)  # type: ignore[call-arg]  # valid, or it raises
    assert settings.model_fields_set >= {k.removeprefix("SKEWLESS_").lower() for k in values}


@pytest.mark.parametrize("example", ["production.env.example", "test.env.example",
                                     "development.env.example"])
def test_the_example_env_files_are_fit_to_serve(example, monkeypatch):
    from dotenv import dotenv_values

    for key in dotenv_values(PROJECT_ROOT / "config" / example):
        monkeypatch.delenv(key, raising=False)
    settings = Settings(_env_file=PROJECT_ROOT / "config" / example)  # type: ignore[call-arg]
    assert settings.serving_problems() == []
    if settings.environment != "development":  # named tokens only: no shared one to leak
        assert settings.admin_token.get_secret_value() == DEVELOPMENT_ADMIN_TOKEN
        assert settings.catalog_auth


def test_serve_refuses_an_unknown_environment_at_start(tmp_path):
    """`skewless serve` as the image runs it: one line naming the variable, exit 1."""
    (tmp_path / ".env").write_text(
        "SKEWLESS_ENVIRONMENT=prod\n"
        f"SKEWLESS_VAR_DIR={tmp_path / 'var'}\nSKEWLESS_REDIS=127.0.0.1:9\n")
    result = subprocess.run([sys.executable, "-m", "skewless.cli", "serve", "--port", "0"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "refusing to start: SKEWLESS_ENVIRONMENT must be one of development, test, " \
        "production, not 'prod'" in " ".join(result.stdout.split())
    assert "Traceback" not in result.stdout + result.stderr


def test_only_the_settings_module_reads_the_environment():
    pattern = re.compile(r"os\.environ|os\.getenv|getenv\(")
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for folder in ("skewless", "training", "service", "feature_repo")
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        if path.name != "settings.py" and pattern.search(path.read_text())
    ]
    assert offenders == []


def test_embedded_redis_starts_on_a_free_port_and_stops(tmp_path):
    server = RedisServer(binary=find_redis_server(), data_dir=tmp_path).start()
    client = server.client()
    assert client.set("k", "v") and client.get("k") == b"v"
    server.stop()
    with pytest.raises(redis_client.ConnectionError):
        control_client("127.0.0.1", server.port).ping()


def test_redis_for_uses_a_configured_server_without_starting_one(redis_server, tmp_path):
    settings = Settings(redis=redis_server.connection_string, var_dir=tmp_path)
    with redis_for(settings) as address:
        assert address == redis_server.connection_string
    assert not (tmp_path / "redis").exists()
    assert redis_server.client().ping()


def test_redis_for_starts_and_stops_a_private_server_under_var(tmp_path):
    settings = Settings(redis=None, var_dir=tmp_path)
    with redis_for(settings) as address:
        host, port = address.split(":")
        assert redis_client.Redis(host=host, port=int(port)).ping()
        assert (tmp_path / "redis").is_dir()
    with pytest.raises(redis_client.ConnectionError):
        control_client(host, int(port)).ping()


def test_embedded_data_survives_a_restart_in_the_same_directory(tmp_path):
    """Feast's registry remembers what was materialized; the embedded store must too."""
    first = RedisServer(binary=find_redis_server(), data_dir=tmp_path).start()
    first.client().set("feature", "value")
    first.stop()
    second = RedisServer(binary=find_redis_server(), data_dir=tmp_path).start()
    try:
        assert second.client().get("feature") == b"value"
    finally:
        second.stop()


def test_commands_use_a_running_detached_server(tmp_path, monkeypatch):
    from skewless.embedded_redis import start_detached, stop_detached

    settings = Settings(redis=None, var_dir=tmp_path)
    address = start_detached(settings)
    try:
        with redis_for(settings) as used:
            assert used == address
        host, port = address.split(":")
        assert redis_client.Redis(host=host, port=int(port)).ping()  # still running
    finally:
        assert stop_detached(settings)
    assert not stop_detached(settings)


def test_a_missing_configured_binary_is_named(tmp_path):
    from skewless.embedded_redis import RedisUnavailable

    with pytest.raises(RedisUnavailable, match="does-not-exist"):
        find_redis_server(tmp_path / "does-not-exist")


def test_detached_redis_for_feasts_cli_starts_once_and_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("SKEWLESS_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("SKEWLESS_REDIS", raising=False)
    first = runner.invoke(app, ["redis", "start"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("export SKEWLESS_REDIS=127.0.0.1:")
    second = runner.invoke(app, ["redis", "start"])
    assert second.output == first.output
    address = first.output.strip().split("=", 1)[1]
    host, port = address.split(":")
    assert redis_client.Redis(host=host, port=int(port)).ping()
    assert runner.invoke(app, ["redis", "stop"]).exit_code == 0
    with pytest.raises(redis_client.ConnectionError):
        control_client(host, int(port)).ping()


def test_cli_lists_the_pipeline_stages():
    result = subprocess.run([sys.executable, "-m", "skewless.cli", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("generate", "features", "apply", "materialize", "dataset", "train", "demo"):
        assert command in result.stdout


def test_cli_generate_writes_data_and_rejects_bad_options(tmp_path):
    ok = runner.invoke(app, ["generate", "--cards", "40", "--days", "15", "--out", str(tmp_path),
                             "--end", "2026-10-01T00:00:00"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "transactions.parquet").is_file() and (tmp_path / "meta.json").is_file()
    both = runner.invoke(app, ["generate", "--cards", "40", "--scale", "2", "--out", str(tmp_path)])
    assert both.exit_code == 2 and "--scale" in both.output
    bad_time = runner.invoke(app, ["generate", "--end", "yesterday", "--out", str(tmp_path)])
    assert bad_time.exit_code == 2 and "--end" in bad_time.output


def test_cli_train_names_a_missing_dataset(tmp_path):
    result = runner.invoke(app, ["train", "--dataset", str(tmp_path / "nope.parquet")])
    assert result.exit_code == 2
    assert "--dataset" in result.output


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("service", ("training",)),
    ("training", ("service",)),
    ("skewless", ("training", "service")),
])
def test_imports_point_one_way(folder, forbidden):
    """service → skewless ← training; only the CLI (the top of the house) imports both."""
    pattern = re.compile(rf"^\s*(from|import) ({'|'.join(forbidden)})\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        if not path.is_relative_to(PROJECT_ROOT / "skewless" / "cli")
        and pattern.search(path.read_text())
    ]
    assert offenders == []


def test_no_pickle_on_any_load_path():
    offenders = [
        str(p.relative_to(PROJECT_ROOT))
        for folder in ("skewless", "training", "service")
        for p in Path(PROJECT_ROOT / folder).rglob("*.py")
        if re.search(r"\bimport (pickle|joblib|dill|cloudpickle)\b|pickle\.load", p.read_text())
    ]
    assert offenders == []


def test_known_failures_print_one_line_not_a_traceback(tmp_path):
    import pandas as pd

    bogus = tmp_path / "not-a-set.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(bogus)
    env_file = tmp_path / ".env"
    env_file.write_text(f"SKEWLESS_VAR_DIR={tmp_path / 'var'}\n")
    result = subprocess.run([sys.executable, "-m", "skewless.cli", "train", "--dataset", str(bogus)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "is not a Skewless training set" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_bad_setting_is_one_line_naming_the_variable(clean_env):
    env = {**os.environ, "SKEWLESS_SCHEDULE_MONITOR": "every day", "SKEWLESS_SEED": "abc"}
    done = subprocess.run([str(Path(sys.executable).with_name("skewless")), "jobs", "schedule"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "configuration error: SKEWLESS_SEED: Input should be a valid integer, unable to parse "
        "string as an integer",
        "configuration error: SKEWLESS_SCHEDULE_MONITOR: Value error, 'every day' is not a "
        "schedule: use a cron expression of five fields (minute hour day month weekday, UTC), "
        "'every N[s|m|h|d]' or 'off'"]
