"""The metadata database and the model registry, on SQLite and on a private PostgreSQL.

Migrations up and down, stage changes with their audit, the database refusing a second
production version, two promotions racing, and the acceptance gate on real models.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from typer.testing import CliRunner

from skewless.cli import app as cli
from skewless.db import Base, downgrade, make_engine, schema_problem, upgrade
from skewless.gate import PromotionRefused
from skewless.jobs import JobRun  # noqa: F401  # its table joins Base.metadata
from skewless.registry import Conflict, Registry, RegistryError
from skewless.tokens import ApiToken  # noqa: F401  # its table joins Base.metadata
from skewless.validations import ValidationResult  # noqa: F401  # … and this one
from tests.support.artifacts import write_artifact
from training.dataset import TrainingSet
from training.evaluation.gate import promote
from training.train import train_model

TABLES = {"model_versions", "stage_transitions", "audit_events", "experiments", "experiment_runs",
          "validation_results", "api_tokens", "job_runs"}


def fake_artifact(root: Path, version: str, fingerprint: str = "sha256:" + "f" * 64) -> Path:
    """A small real model directory (registering it runs the artefact check)."""
    return write_artifact(root / version, version, fingerprint=fingerprint)


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_go_up_and_down_and_match_the_models(database):
    assert schema_problem(make_engine(database)) is not None  # not migrated yet
    upgrade(database)
    assert TABLES | {"alembic_version"} <= tables(database)
    engine = make_engine(database)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    assert schema_problem(engine) is None
    engine.dispose()
    downgrade(database, "base")
    assert not tables(database) & TABLES
    upgrade(database)
    assert TABLES <= tables(database)


@pytest.fixture
def registry(database, tmp_path):
    upgrade(database)
    registry = Registry(database)
    yield registry
    registry.close()


def test_promote_rollback_and_archive_leave_an_audit_trail(registry, tmp_path):
    for v in ("v1", "v2", "v3"):
        registry.register(fake_artifact(tmp_path / "models", v), actor="trainer")
    registry.promote("fraud", "v1", "alice", "first", {"gate": "x"}, expected_production=None)
    registry.promote("fraud", "v2", "bob", "better", {}, expected_production="v1")
    assert {r.version: r.stage for r in registry.versions("fraud")} == {
        "v1": "archived", "v2": "production", "v3": "candidate"}
    assert registry.rollback("fraud", "carol", "v2 misbehaves").version == "v1"
    assert registry.production_version("fraud") == "v1"
    registry.archive("fraud", "v3", "dave", "superseded")
    with pytest.raises(Conflict, match="is production"):
        registry.archive("fraud", "v1", "dave", "no")
    with pytest.raises(Conflict, match="changed to v1"):  # decided against a stale production
        registry.promote("fraud", "v3", "erin", "late", {}, expected_production="v2")
    history = [(t["from"], t["to"], t["actor"]) for t in registry.get("fraud", "v2").details()[
        "transitions"]]
    assert history == [(None, "candidate", "trainer"), ("candidate", "production", "bob"),
                       ("production", "archived", "carol")]
    v1 = registry.get("fraud", "v1").details()["transitions"]
    assert v1[1]["evidence"] == {"gate": "x", "previous_production": None}
    assert v1[-1]["reason"] == "rollback: v2 misbehaves"
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(tmp_path / "models" / "v1")


def test_the_database_itself_refuses_a_second_production_version(registry, tmp_path):
    for v in ("v1", "v2"):
        registry.register(fake_artifact(tmp_path / "models", v))
    registry.promote("fraud", "v1", "a", "r", {}, expected_production=None)
    with pytest.raises(sa.exc.IntegrityError), registry.engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE model_versions SET stage = 'production' WHERE version = 'v2'"))
    with pytest.raises(sa.exc.IntegrityError), registry.engine.begin() as connection:
        connection.execute(sa.text("UPDATE model_versions SET stage = 'gone'"))
    assert registry.production_version("fraud") == "v1"


def test_two_concurrent_promotions_leave_exactly_one_production(registry, tmp_path):
    for v in ("a1", "a2", "b1", "b2", "c1", "c2"):
        registry.register(fake_artifact(tmp_path / "models", v))
    production = None
    for pair in (("a1", "a2"), ("b1", "b2"), ("c1", "c2")):
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def race(version: str, expected: str | None = production,
                 barrier: threading.Barrier = barrier, outcomes: dict = outcomes) -> None:
            barrier.wait()
            try:
                registry.promote("fraud", version, "racer", "race", {},
                                 expected_production=expected)
                outcomes[version] = "won"
            except Conflict as exc:
                outcomes[version] = f"lost: {exc}"

        threads = [threading.Thread(target=race, args=(v,)) for v in pair]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        winners = [v for v, outcome in outcomes.items() if outcome == "won"]
        assert len(winners) == 1, outcomes
        stages = {r.version: r.stage for r in registry.versions("fraud")}
        assert list(stages.values()).count("production") == 1
        assert stages[winners[0]] == "production"
        production = winners[0]


def test_the_gate_refuses_a_worse_model_and_accepts_a_better_one(demo, tmp_path):
    settings = demo.settings.model_copy(update={"var_dir": tmp_path / "var"})
    upgrade(settings.resolved_database_url)
    registry = Registry.from_settings(settings)
    frame = demo.training_set.frame

    def worse(seed: int) -> Path:
        """A model trained on shuffled labels: no better than chance."""
        labels = np.random.default_rng(seed).permutation(frame["is_fraud"].to_numpy())
        noise = TrainingSet(frame.assign(is_fraud=labels), demo.training_set.service,
                            demo.training_set.cutoff, "is_fraud", "event_timestamp",
                            "transaction_id")
        return train_model(noise, settings.model_dir, settings.holdout_days,
                           settings.validation_days).directory

    first = registry.register(worse(1))
    # A first version is judged on its own: below the floor, refused.
    with pytest.raises(PromotionRefused, match="first-version floor .*< floor 0.7"):
        promote(settings, registry, "fraud_model_v1", first.version, "alice")
    row, decision = promote(settings, registry, "fraud_model_v1", first.version, "alice",
                            reason="a chance-level model to compare against", force=True)
    assert decision is None and row.stage == "production"
    good = registry.register(demo.model.directory)
    row, decision = promote(settings, registry, "fraud_model_v1", good.version, "alice")
    assert decision is not None and decision.accepted
    assert decision.candidate["score"] > 0.85 > 0.6 > decision.production["score"]
    assert decision.holdout["rows"] > 1000 and decision.holdout["positives"] > 10
    evidence = registry.get("fraud_model_v1", good.version).details()["transitions"][-1]
    assert evidence["evidence"]["gate"]["candidate"]["score"] == decision.candidate["score"]

    bad = registry.register(worse(2))
    with pytest.raises(PromotionRefused,
                       match="refused: not worse than production .*SKEWLESS_GATE_MARGIN") as refused:
        promote(settings, registry, "fraud_model_v1", bad.version, "mallory")
    assert not refused.value.decision.accepted  # type: ignore[union-attr]
    assert registry.production_version("fraud_model_v1") == good.version
    audit = registry.audit_events()[0]
    assert (audit.actor, audit.outcome) == ("mallory", "refused by the gate")
    assert audit.detail["gate"]["production"]["version"] == good.version

    with pytest.raises(RegistryError, match="needs a reason"):
        promote(settings, registry, "fraud_model_v1", bad.version, "mallory", force=True)
    env = {"SKEWLESS_REPO_PATH": str(settings.repo_path), "SKEWLESS_VAR_DIR": str(settings.var_dir)}
    archived = CliRunner().invoke(cli, ["models", "archive", "fraud_model_v1", bad.version,
                                        "--reason", "chance-level", "--json"], env=env)
    assert json.loads(archived.output) == {"archived": bad.version}
    forced = CliRunner().invoke(cli, ["models", "promote", "fraud_model_v1", bad.version,
                                      "--force", "--reason", "incident 42 hotfix"], env=env)
    assert forced.exit_code == 0, forced.output
    listed = json.loads(CliRunner().invoke(cli, ["models", "list", "--json"], env=env).output)
    assert {r["version"]: r["stage"] for r in listed} == {
        first.version: "archived", good.version: "archived", bad.version: "production"}
    shown = json.loads(CliRunner().invoke(
        cli, ["models", "show", "fraud_model_v1", bad.version, "--json"], env=env).output)
    last = shown["transitions"][-1]
    assert last["forced"] and last["reason"] == "incident 42 hotfix"
    assert registry.audit_events()[0].outcome == "forced"
    rolled = CliRunner().invoke(cli, ["models", "rollback", "fraud_model_v1", "--json"], env=env)
    assert json.loads(rolled.output) == {"production": good.version}
    assert registry.production_version("fraud_model_v1") == good.version
    registry.close()


def test_an_audit_event_keeps_a_clipped_copy_of_long_values(database):
    upgrade(database)
    registry = Registry(database)
    try:
        path = "/admin/" + "x" * 60_000
        registry.audit("a" * 5000, f"GET {path}", path, "404", {"reason": "r" * 10_000})
        (event,) = registry.audit_events(limit=1)
    finally:
        registry.close()
    assert len(event.action) <= 200 and event.action.startswith("GET /admin/xxx")
    assert len(event.target) <= 1000 and event.target.endswith("(60,007 characters)")
    assert len(event.actor) <= 200 and len(event.detail["reason"]) <= 2000


def test_reads_take_no_write_lock_on_sqlite(tmp_path):
    """A page or a poll must not queue behind a writer (nor block one) for a plain read."""
    import threading

    url = f"sqlite:///{tmp_path / 'meta.db'}"
    upgrade(url)
    registry = Registry(url)
    writer = make_engine(url)
    read: dict = {}

    def reads() -> None:
        read["versions"] = registry.versions()
        read["audit"] = registry.audit_events()

    try:
        with writer.begin() as connection:  # holds SQLite's write lock until the block ends
            connection.exec_driver_sql(
                "INSERT INTO audit_events (at, actor, action, target, outcome, detail) "
                "VALUES ('2026-12-01 00:00:00', 'w', 'write', '', 'ok', '{}')")
            reader = threading.Thread(target=reads)
            reader.start()
            reader.join(timeout=10)  # a locking read would wait out its 30 s busy timeout
            assert not reader.is_alive(), "a read waited for the write lock"
        assert read == {"versions": [], "audit": []}  # the uncommitted row is not seen
    finally:
        registry.close()
        writer.dispose()


def test_upgrading_a_registry_in_use_keeps_its_versions_and_history(database):
    """0004 rebuilds model_versions on SQLite (batch mode), which stage_transitions
    references: versions, their history and the references survive it, on both databases."""
    upgrade(database, "0003")
    engine = make_engine(database)
    empty = "{}"
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO model_versions (id, name, version, stage, artifact_uri, sha256, "
            "feature_service, fingerprint, contract, parameters, metrics, training_window, "
            "baseline, created_at, created_by) VALUES (1, 'fraud', 'v1', 'production', "
            "'/m/v1', :sha, 'fraud', 'sha256:x', :doc, :doc, :doc, :doc, :doc, :at, 'alice')"),
            {"sha": "a" * 64, "doc": empty, "at": "2026-12-01 00:00:00"})
        connection.execute(sa.text(
            "INSERT INTO stage_transitions (model_version_id, from_stage, to_stage, actor, at, "
            "reason, forced, evidence) VALUES (1, NULL, 'production', 'alice', :at, 'first', "
            ":forced, :doc)"), {"at": "2026-12-01 00:00:00", "forced": False, "doc": empty})
    engine.dispose()
    upgrade(database)
    engine = make_engine(database)
    with engine.connect() as connection:
        assert connection.execute(sa.text(
            "SELECT name, version, stage, experiment_run_id FROM model_versions")).all() == [
            ("fraud", "v1", "production", None)]
        assert connection.execute(sa.text(
            "SELECT model_version_id, reason FROM stage_transitions")).all() == [(1, "first")]
        references = {fk["referred_table"] for fk in sa.inspect(connection).get_foreign_keys(
            "model_versions")}
        assert references == {"experiment_runs"}
        if connection.dialect.name == "sqlite":
            assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            # The migration turned enforcement off for its copy only: it is on again.
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
