"""Expectations on the feature tables: the demo's honest tables pass; each rule fails on a
table crafted to break it, with the feature, the rule, the offending count and examples; a
failure stops `skewless materialize` and `skewless dataset` with the report and exit 1;
`--accept-failures --reason` goes on, stored as accepted and audited under the caller's name.

A small world of its own (the demo's repo and pipeline over 300 cards, `feast apply`, the
metadata database migrated): the tests break its tables and put them back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from skewless.cli import app as cli
from skewless.db import upgrade
from skewless.embedded_redis import RedisServer
from skewless.expectations import Target, load_schema, validate_table
from skewless.feast_cli import run_feast
from skewless.registry import Registry
from skewless.settings import Settings
from skewless.validations import ValidationStore
from tests.support.demo import copy_feature_repo
from training.generate import GenerateConfig, generate, write_generated
from training.pipeline import PipelinePaths, build_feature_tables

END = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
VIEWS = ("card_activity", "card_profile", "merchant_stats")


@dataclass
class World:
    settings: Settings
    env: dict[str, str]

    def table(self, name: str) -> Path:
        if name == "transaction_request":
            return self.settings.resolved_events_path
        return self.settings.data_dir / f"{name}.parquet"

    def target(self, name: str, path: Path | None = None) -> Target:
        kind = "request source" if name == "transaction_request" else "feature view"
        return Target(name, kind, f"expectations.{name}", path or self.table(name),
                      "event_timestamp")

    def schema(self, name: str):
        return load_schema(self.settings.repo_path, self.target(name), {})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> World:
    root = tmp_path_factory.mktemp("expectations")
    settings = Settings(repo_path=copy_feature_repo(root / "feature_repo"), var_dir=root / "var",
                        redis=redis_server.connection_string, database_url=None,
                        events_path=None, labels_path=None, truth_path=None,
                        feature_log_dir=None)
    data = generate(GenerateConfig(cards=300, days=40, end=END, seed=11))
    write_generated(data, settings.raw_dir)
    build_feature_tables(PipelinePaths.from_settings(settings))
    run_feast(settings, "apply")
    upgrade(settings.resolved_database_url)
    env = {"SKEWLESS_REPO_PATH": str(settings.repo_path), "SKEWLESS_VAR_DIR": str(settings.var_dir),
           "SKEWLESS_REDIS": redis_server.connection_string}
    return World(settings, env)


@pytest.fixture
def skewless(world: World, monkeypatch: pytest.MonkeyPatch):
    for key, value in world.env.items():
        monkeypatch.setenv(key, value)

    def run(*args: str):
        return CliRunner().invoke(cli, list(args))
    return run


@pytest.fixture
def broken(world: World, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Copies of the tables the test may overwrite, put back afterwards."""
    saved = {}
    for name in (*VIEWS, "transaction_request"):
        saved[name] = tmp_path / f"{name}.parquet"
        shutil.copy(world.table(name), saved[name])
    yield saved
    for name, copy in saved.items():
        shutil.copy(copy, world.table(name))


def check(world: World, name: str, frame: pl.DataFrame, tmp_path: Path,
          previous_rows: int | None = None, reference: datetime = END):
    path = tmp_path / f"crafted-{name}.parquet"
    frame.write_parquet(path)
    return validate_table(world.target(name, path), world.schema(name), reference, previous_rows)


def honest(world: World, name: str) -> pl.DataFrame:
    return pl.read_parquet(world.table(name))


def only(result, rule: str):
    found = [f for f in result.findings if f.rule == rule]
    assert len(found) == 1, result.findings
    return found[0]


# The rules, one crafted table each ---------------------------------------------------------

def test_the_honest_tables_pass_every_expectation(world):
    for name in (*VIEWS, "transaction_request"):
        result = validate_table(world.target(name), world.schema(name), END, None)
        assert result.passed, (name, result.findings)
        assert result.rows == honest(world, name).height


def test_a_negative_amount_breaks_the_range(world, tmp_path):
    frame = honest(world, "card_activity")
    rows = pl.int_range(pl.len()) < 7
    frame = frame.with_columns(amount_sum_7d=pl.when(rows).then(-5.5)
                               .otherwise(pl.col("amount_sum_7d")))
    finding = only(check(world, "card_activity", frame, tmp_path),
                   "greater_than_or_equal_to(0)")
    assert finding.feature == "amount_sum_7d" and finding.count == 7
    assert finding.examples == ("-5.5",)


def test_a_renamed_category_is_not_allowed(world, tmp_path):
    frame = honest(world, "merchant_stats")
    renamed = frame.with_columns(merchant_category=pl.col("merchant_category")
                                 .replace("grocery", "groceries"))
    expected = frame.filter(pl.col("merchant_category") == "grocery").height
    assert expected > 0
    finding = only(check(world, "merchant_stats", renamed, tmp_path), "isin")
    assert (finding.feature, finding.count, finding.examples) == (
        "merchant_category", expected, ("groceries",))


def test_nulls_where_none_are_allowed(world, tmp_path):
    frame = honest(world, "card_profile")
    frame = frame.with_columns(card_type=pl.when(pl.int_range(pl.len()) % 10 == 0)
                               .then(None).otherwise(pl.col("card_type")))
    finding = only(check(world, "card_profile", frame, tmp_path), "not_null")
    assert finding.feature == "card_type"
    assert finding.count == (frame.height + 9) // 10


def test_half_the_amounts_null_breaks_the_maximum_null_rate(world, tmp_path):
    frame = honest(world, "card_activity")
    frame = frame.with_columns(amount_mean_7d=pl.when(pl.int_range(pl.len()) % 2 == 0)
                               .then(None).otherwise(pl.col("amount_mean_7d")))
    nulls = frame["amount_mean_7d"].null_count()
    finding = only(check(world, "card_activity", frame, tmp_path), "max_null_rate")
    assert (finding.feature, finding.count) == ("amount_mean_7d", nulls)
    assert finding.examples == (f"{nulls / frame.height:.2%} null, at most 20.00%",)


def test_a_repeated_key_breaks_uniqueness(world, tmp_path):
    frame = honest(world, "card_activity")
    doubled = pl.concat([frame, frame.head(4)])
    finding = only(check(world, "card_activity", doubled, tmp_path), "unique")
    assert finding.feature == "card_id, event_timestamp, created_timestamp"
    assert finding.count == 8  # both rows of each of the 4 repeated keys


def test_a_column_of_another_type_and_a_missing_column(world, tmp_path):
    frame = honest(world, "card_activity").with_columns(pl.col("txn_count_7d").cast(pl.Float64))
    frame = frame.drop("distinct_merchants_7d")
    result = check(world, "card_activity", frame, tmp_path)
    typed = only(result, "type")
    assert (typed.feature, typed.count, typed.examples) == ("txn_count_7d", frame.height,
                                                             ("found Float64",))
    gone = only(result, "present")
    assert (gone.feature, gone.count) == ("distinct_merchants_7d", frame.height)


def test_yesterdays_file_is_not_fresh(world, tmp_path):
    frame = honest(world, "card_activity")
    newest = frame["event_timestamp"].max()
    assert isinstance(newest, datetime)
    # Fresh at the data's end; three days later the same file is stale (max_age 2d).
    assert check(world, "card_activity", frame, tmp_path, reference=newest).passed
    later = newest + timedelta(days=3)
    finding = only(check(world, "card_activity", frame, tmp_path, reference=later), "freshness")
    assert finding.feature == "event_timestamp" and finding.count == frame.height
    assert newest.isoformat() in finding.examples[0] and "at most 2d" in finding.examples[0]


def test_the_row_count_against_the_previous_run(world, tmp_path):
    frame = honest(world, "merchant_stats")
    assert check(world, "merchant_stats", frame, tmp_path, previous_rows=frame.height).passed
    assert check(world, "merchant_stats", frame, tmp_path,
                 previous_rows=int(frame.height * 1.4)).passed  # within ±50%
    finding = only(check(world, "merchant_stats", frame.head(frame.height // 3), tmp_path,
                         previous_rows=frame.height), "volume")
    assert finding.count == frame.height - frame.height // 3
    assert f"previous run's {frame.height:,}" in finding.examples[0]


def test_request_fields_out_of_their_ranges(world, tmp_path):
    frame = honest(world, "transaction_request")
    frame = frame.with_columns(
        local_hour=pl.when(pl.int_range(pl.len()) < 3).then(24).otherwise(pl.col("local_hour")),
        channel=pl.when(pl.int_range(pl.len()) < 2).then(pl.lit("mail"))
        .otherwise(pl.col("channel")))
    result = check(world, "transaction_request", frame, tmp_path)
    hour = only(result, "in_range(0, 23)")
    assert (hour.feature, hour.count, hour.examples) == ("local_hour", 3, ("24",))
    channel = only(result, "isin")
    assert (channel.feature, channel.count, channel.examples) == ("channel", 2, ("mail",))


# The steps they block -----------------------------------------------------------------------

def test_validate_passes_on_the_honest_tables_and_stores_each_result(world, skewless):
    done = skewless("validate", "--as-of", END.isoformat(), "--json")
    assert done.exit_code == 0, done.output
    doc = json.loads(done.output)
    assert doc["passed"] and doc["step"] == "validate"
    assert {r["target"] for r in doc["results"]} == {*VIEWS, "transaction_request"}
    with ValidationStore.from_settings(world.settings) as store:
        for name in VIEWS:
            latest = store.latest(name)
            assert latest is not None and latest.run_id == doc["run_id"]
            assert latest.status == "passed" and latest.rows == honest(world, name).height


def test_a_failure_stops_materialize_and_dataset_with_the_report(world, skewless, broken):
    assert skewless("validate", "--as-of", END.isoformat()).exit_code == 0  # a baseline
    frame = honest(world, "card_activity")
    frame.with_columns(amount_mean_7d=pl.when(pl.int_range(pl.len()) % 2 == 0).then(None)
                       .otherwise(pl.col("amount_mean_7d"))).write_parquet(
        world.table("card_activity"))
    stopped = skewless("materialize", "--end", END.isoformat())
    assert stopped.exit_code == 1, stopped.output
    flat = " ".join(stopped.output.split())
    assert "feature view card_activity: failed" in flat
    assert "amount_mean_7d" in flat and "max_null_rate" in flat
    assert "materialized" not in flat  # Feast never ran
    dataset = skewless("dataset", "--output", str(world.settings.var_dir / "set.parquet"),
                       "--cutoff", END.isoformat())
    assert dataset.exit_code == 1, dataset.output
    assert "max_null_rate" in dataset.output
    assert not (world.settings.var_dir / "set.parquet").exists()
    with ValidationStore.from_settings(world.settings) as store:
        latest = store.latest("card_activity")
        assert latest is not None and (latest.step, latest.status) == ("dataset", "failed")
        assert [f.rule for f in latest.finding_list] == ["max_null_rate"]
        # A failed run is no baseline for the volume rule.
        assert store.previous_rows("card_activity") == frame.height


def test_accepting_failures_needs_a_reason_and_is_audited(world, skewless, broken):
    frame = honest(world, "merchant_stats")
    frame.with_columns(merchant_category=pl.col("merchant_category")
                       .replace("fuel", "petrol")).write_parquet(world.table("merchant_stats"))
    no_reason = skewless("validate", "--as-of", END.isoformat(), "--accept-failures")
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    reason = "petrol is fuel renamed upstream; mapping lands tomorrow"
    accepted = skewless("validate", "--as-of", END.isoformat(), "--accept-failures",
                        "--reason", reason, "--json")
    assert accepted.exit_code == 0, accepted.output
    doc = json.loads(accepted.output)
    assert not doc["passed"] and doc["accepted"]
    with ValidationStore.from_settings(world.settings) as store:
        latest = store.latest("merchant_stats")
        assert latest is not None and (latest.status, latest.reason) == ("accepted", reason)
        assert store.latest("card_profile").status == "passed"  # type: ignore[union-attr]
    with Registry.from_settings(world.settings) as registry:
        event = registry.audit_events(limit=1)[0]
    assert (event.action, event.target, event.outcome) == (
        "accept validation failures", "merchant_stats", "accepted")
    assert event.detail["reason"] == reason and event.detail["run_id"] == doc["run_id"]
    assert event.detail["findings"]["merchant_stats"][0]["examples"] == ["petrol"]


def test_a_directory_that_is_not_a_feast_repo_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKEWLESS_REPO_PATH", str(tmp_path))
    monkeypatch.setenv("SKEWLESS_VAR_DIR", str(tmp_path / "var"))
    from skewless.cli import main

    monkeypatch.setattr("sys.argv", ["skewless", "validate"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"error: {tmp_path}/feature_store.yaml does not exist" in out
    assert "Traceback" not in out


def test_the_request_fields_limits_come_from_the_schema_checks(world):
    from pandera.polars import Check, Column

    from skewless.expectations import FieldLimits, request_limits

    snapshot_sources = [type("Source", (), {"name": "transaction_request",
                                            "tags": {"expectations":
                                                     "expectations.transaction_request"}})()]
    limits = request_limits(world.settings.repo_path, snapshot_sources,
                            ["amount", "channel", "local_hour"])
    assert limits["local_hour"].bounds == {"ge": 0, "le": 23}
    assert limits["amount"].bounds == {"ge": 0, "le": 1_000_000}
    assert limits["channel"].allowed == ("pos", "online", "atm")
    opened = FieldLimits.of("x", Column(float, Check.in_range(0, 1, include_min=False,
                                                              include_max=False)))
    assert opened.bounds == {"gt": 0, "lt": 1}
