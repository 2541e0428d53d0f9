"""Rollout stages in the registry, on SQLite and on a private PostgreSQL.

Shadow and canary versions, at most one of them per model name (the database refuses a
second, whatever the code does), a canary's share of traffic held in range by the database,
every change with its transition and audit event, two racing calls, and the commands.
"""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from skewless.cli import app as cli
from skewless.cli import main
from skewless.db import upgrade
from skewless.registry import ArtifactRefused, Conflict, NotFound, Registry, RegistryError
from tests.support.artifacts import write_artifact


@pytest.fixture
def registry(database, tmp_path):
    """A registry with fraud v1 in production and v2, v3 as candidates."""
    upgrade(database)
    registry = Registry(database)
    for v in ("v1", "v2", "v3"):
        registry.register(write_artifact(tmp_path / "models" / v, v), actor="trainer")
    registry.promote("fraud", "v1", "alice", "first", {}, expected_production=None)
    yield registry
    registry.close()


def stages(registry: Registry) -> dict[str, tuple[str, float | None]]:
    return {r.version: (r.stage, r.traffic_percent) for r in registry.versions("fraud")}


def test_shadow_then_canary_then_promote_leaves_transitions_and_audit(registry):
    registry.shadow("fraud", "v2", "bob", "compare on live traffic")
    status = registry.rollout("fraud").to_json()
    assert {k: status[k] for k in ("production", "challenger", "stage", "traffic_percent", "by",
                                   "reason", "started_by")} == {
        "production": "v1", "challenger": "v2", "stage": "shadow", "traffic_percent": None,
        "by": "bob", "reason": "compare on live traffic", "started_by": "bob"}
    registry.canary("fraud", "v2", 5, "carol", "shadow looked fine")
    registry.canary("fraud", "v2", 20, "dave", "widen")
    assert stages(registry) == {"v1": ("production", None), "v2": ("canary", 20.0),
                                "v3": ("candidate", None)}
    status = registry.rollout("fraud").to_json()
    assert (status["stage"], status["traffic_percent"], status["by"], status["started_by"]) == (
        "canary", 20.0, "dave", "bob")
    assert status["since"] > status["started_at"]

    registry.promote("fraud", "v2", "erin", "canary held", {}, expected_production="v1")
    assert stages(registry) == {"v1": ("archived", None), "v2": ("production", None),
                                "v3": ("candidate", None)}
    assert registry.rollout("fraud").to_json()["challenger"] is None
    history = registry.get("fraud", "v2").details()["transitions"]
    assert [(t["from"], t["to"], t["actor"]) for t in history] == [
        (None, "candidate", "trainer"), ("candidate", "shadow", "bob"),
        ("shadow", "canary", "carol"), ("canary", "canary", "dave"),
        ("canary", "production", "erin")]
    assert history[3]["evidence"]["traffic_percent"] == 20.0
    assert history[3]["evidence"]["previous_traffic_percent"] == 5.0
    assert history[1]["evidence"]["production"] == "v1"
    assert history[1]["evidence"]["sha256"] == registry.get("fraud", "v2").sha256
    assert history[1]["evidence"]["artifact_checked_at"]
    assert history[-1]["evidence"]["ended_rollout"] == {"stage": "canary",
                                                         "traffic_percent": 20.0}
    audit = [(e.actor, e.action, e.target, e.outcome)
             for e in reversed(registry.audit_events()) if e.action != "check artefact"]
    assert audit == [("bob", "shadow", "fraud/v2", "done"), ("carol", "canary", "fraud/v2", "done"),
                     ("dave", "canary", "fraud/v2", "done")]


def test_end_rollout_sends_the_challenger_back_to_candidate(registry):
    registry.canary("fraud", "v3", 10, "bob", "try it")
    assert registry.end_rollout("fraud", "carol", "error rate up").version == "v3"
    assert stages(registry)["v3"] == ("candidate", None)
    last = registry.get("fraud", "v3").details()["transitions"][-1]
    assert (last["from"], last["to"], last["reason"]) == (
        "canary", "candidate", "rollout ended: error rate up")
    assert last["evidence"] == {"ended_rollout": {"stage": "canary", "traffic_percent": 10.0}}
    event = registry.audit_events(limit=1)[0]
    assert (event.action, event.target, event.outcome) == ("end rollout", "fraud/v3", "done")
    with pytest.raises(Conflict, match=r"^model fraud has no challenger \(shadow or canary\): "
                                       "no rollout to end$"):
        registry.end_rollout("fraud", "carol", "again")
    with pytest.raises(NotFound, match="^no model named nope is registered$"):
        registry.end_rollout("nope", "carol", "x")
    registry.shadow("fraud", "v3", "bob", "again, in shadow")  # a candidate again: may retry
    assert registry.archive("fraud", "v3", "bob", "gave up").traffic_percent is None
    assert registry.rollout("fraud").challenger is None


def test_refusals_name_the_problem_and_are_audited(registry, tmp_path):
    with pytest.raises(NotFound, match="^model fraud has no version v9$"):
        registry.shadow("fraud", "v9", "bob", "x")
    with pytest.raises(Conflict, match="^model fraud version v1 is already production: only a "
                                       "candidate can challenge it$"):
        registry.canary("fraud", "v1", 5, "bob", "x")
    for percent in (0, -1, 50.5, float("nan")):
        with pytest.raises(RegistryError, match="^traffic percent must be above 0 and at most "
                                                "50, not "):
            registry.canary("fraud", "v2", percent, "bob", "x")
    registry.canary("fraud", "v2", 50, "bob", "the largest share")
    with pytest.raises(Conflict, match="^model fraud version v2 is already the canary at 50%$"):
        registry.canary("fraud", "v2", 50, "bob", "x")
    with pytest.raises(Conflict, match=r"^model fraud already has a challenger: version v2 "
                                       r"\(canary at 50%\); end its rollout first "
                                       r"\(`skewless models end-rollout fraud`\)$"):
        registry.shadow("fraud", "v3", "bob", "x")
    registry.shadow("fraud", "v2", "bob", "take its traffic away")  # canary → shadow
    assert stages(registry)["v2"] == ("shadow", None)
    registry.archive("fraud", "v3", "bob", "x")
    with pytest.raises(Conflict, match="^model fraud version v3 is archived: only a candidate "
                                       "can be rolled out$"):
        registry.shadow("fraud", "v3", "bob", "x")
    refused = [e for e in registry.audit_events() if e.outcome == "refused"]
    assert len(refused) == 9
    assert refused[0].detail == {"reason": "x", "error": "model fraud version v3 is archived: "
                                 "only a candidate can be rolled out"}
    assert refused[-1].detail["error"] == "model fraud has no version v9"


def test_a_challenger_needs_a_production_version_and_a_sound_artefact(database, tmp_path):
    upgrade(database)
    with Registry(database) as registry:
        registry.register(write_artifact(tmp_path / "m" / "v1", "v1"))
        registry.register(write_artifact(tmp_path / "m" / "v2", "v2"))
        with pytest.raises(Conflict, match="^model fraud has no production version for v1 to "
                                           "challenge: promote a first version instead$"):
            registry.shadow("fraud", "v1", "bob", "x")
        registry.promote("fraud", "v1", "alice", "first", {}, expected_production=None)
        (tmp_path / "m" / "v2" / "model.txt").write_text("tree\nnot a model\n")
        with pytest.raises(ArtifactRefused, match="^model fraud version v2 may not take "
                                                  "traffic: .*sha256"):
            registry.canary("fraud", "v2", 1, "bob", "x")
        assert registry.challenger("fraud") is None


RAW_INSERT = (
    "INSERT INTO model_versions (name, version, stage, artifact_uri, sha256, feature_service, "
    "fingerprint, contract, parameters, metrics, training_window, baseline, created_at, "
    "created_by) VALUES ('fraud', 'v4', 'shadow', '/m', :sha, 'fraud', 'sha256:x', :doc, :doc, "
    ":doc, :doc, :doc, :at, 'raw')")


@pytest.mark.parametrize("sql", [
    "UPDATE model_versions SET stage = 'shadow' WHERE version = 'v3'",
    "UPDATE model_versions SET stage = 'canary', traffic_percent = 5 WHERE version = 'v3'",
    RAW_INSERT,
    "UPDATE model_versions SET stage = 'canary', traffic_percent = 60 WHERE version = 'v2'",
    "UPDATE model_versions SET stage = 'canary', traffic_percent = 0 WHERE version = 'v2'",
    "UPDATE model_versions SET stage = 'canary' WHERE version = 'v2'",
    "UPDATE model_versions SET traffic_percent = 5 WHERE version = 'v3'",
], ids=["second-shadow", "shadow-and-canary", "raw-insert", "share-above-50", "share-zero",
        "canary-without-share", "share-without-canary"])
def test_the_database_itself_refuses_a_second_challenger_and_a_bad_share(registry, sql):
    registry.shadow("fraud", "v2", "bob", "x")
    with pytest.raises(sa.exc.IntegrityError), registry.engine.begin() as connection:
        connection.execute(sa.text(sql), {"sha": "a" * 64, "doc": "{}",
                                          "at": "2026-12-01 00:00:00"})
    assert stages(registry) == {"v1": ("production", None), "v2": ("shadow", None),
                                "v3": ("candidate", None)}


def test_two_concurrent_shadow_calls_leave_exactly_one_challenger(registry, tmp_path):
    for v in ("a1", "a2", "b1", "b2", "c1", "c2"):
        registry.register(write_artifact(tmp_path / "race" / v, v))
    for pair in (("a1", "a2"), ("b1", "b2"), ("c1", "c2")):
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def race(version: str, barrier: threading.Barrier = barrier,
                 outcomes: dict = outcomes) -> None:
            barrier.wait()
            try:
                registry.shadow("fraud", version, "racer", "race")
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
        (loser,) = set(pair) - set(winners)
        assert "challenger" in outcomes[loser]
        challengers = [r.version for r in registry.versions("fraud") if r.stage == "shadow"]
        assert challengers == winners
        registry.end_rollout("fraud", "racer", "next round")


# The commands -----------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch) -> dict[str, str]:
    """A SQLite registry as the `skewless` command sees it: fraud v1 production, v2 and v3
    candidates."""
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    upgrade(url)
    with Registry(url) as registry:
        for v in ("v1", "v2", "v3"):
            registry.register(write_artifact(tmp_path / "models" / v, v))
        registry.promote("fraud", "v1", "alice", "first", {}, expected_production=None)
    env = {"SKEWLESS_DATABASE_URL": url, "SKEWLESS_VAR_DIR": str(tmp_path / "var")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run(args: list[str], env: dict[str, str]) -> dict:
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output) if "--json" in args else {"output": result.output}


def test_the_rollout_commands(cli_env):
    run(["models", "shadow", "fraud", "v2", "--reason", "look first"], cli_env)
    status = run(["models", "rollout", "fraud", "--json"], cli_env)
    assert (status["production"], status["challenger"], status["stage"]) == (
        "v1", "v2", "shadow")
    run(["models", "canary", "fraud", "v2", "--percent", "2.5"], cli_env)
    text = run(["models", "rollout", "fraud"], cli_env)["output"]
    assert "fraud: production v1; challenger v2 canary at 2.5% of requests" in text
    ended = run(["models", "end-rollout", "fraud", "--reason", "enough", "--json"], cli_env)
    assert ended == {"ended": "v2", "stage": "candidate"}
    status = run(["models", "rollout", "fraud", "--json"], cli_env)
    assert (status["challenger"], status["stage"]) == (None, None)
    shown = run(["models", "list", "fraud", "--json"], cli_env)
    assert {r["version"]: r["stage"] for r in shown} == {
        "v1": "production", "v2": "candidate", "v3": "candidate"}


@pytest.mark.parametrize(("args", "message"), [
    (["models", "shadow", "fraud", "v9"], "error: model fraud has no version v9"),
    (["models", "canary", "fraud", "v1", "--percent", "5"],
     "error: model fraud version v1 is already production: only a candidate can challenge it"),
    (["models", "canary", "fraud", "v2", "--percent", "75"],
     "error: traffic percent must be above 0 and at most 50, not 75.0"),
    (["models", "canary", "fraud", "v2", "--percent", "0"],
     "error: traffic percent must be above 0 and at most 50, not 0.0"),
    (["models", "shadow", "fraud", "v3"],
     "error: model fraud already has a challenger: version v2 (shadow); end its rollout first "
     "(`skewless models end-rollout fraud`)"),
    (["models", "rollout", "nope"], "error: no model named nope is registered"),
], ids=["unknown-version", "already-production", "percent-above-50", "percent-zero",
        "another-challenger", "unknown-model"])
def test_rollout_commands_refuse_with_exit_1_naming_the_problem(cli_env, monkeypatch, capsys,
                                                                  args, message):
    with Registry(cli_env["SKEWLESS_DATABASE_URL"]) as registry:
        registry.shadow("fraud", "v2", "bob", "in the way")
    monkeypatch.setattr("sys.argv", ["skewless", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    assert capsys.readouterr().out.strip() == message


def test_end_rollout_without_a_challenger_exits_1(cli_env, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["skewless", "models", "end-rollout", "fraud"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    assert capsys.readouterr().out.strip() == (
        "error: model fraud has no challenger (shadow or canary): no rollout to end")


def test_the_models_command_lists_the_rollout_commands():
    text = CliRunner().invoke(cli, ["models", "--help"]).output
    for command in ("shadow", "canary", "rollout", "end-rollout"):
        assert command in text
