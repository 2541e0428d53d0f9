"""The rollout decision end to end, in the demo world with drift and delayed labels.

`skewless serve` as a subprocess scores the last served days of the drift scenario under
concurrent clients (tests/support/rollout_world.py). First a challenger trained on shuffled
labels shadows production: `skewless rollout apply` aborts it on its evidence. Then a
challenger trained on the events up to the first served day (it has seen the drift) answers
a 20% canary: once its labels have arrived, `skewless rollout apply` promotes it through the
acceptance gate, and the predictor follows. Every step is in the registry's history with its
evidence; the logged rows carry both scores and equal what was answered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import numpy as np
import pyarrow.compute as pc
import pytest

from skewless.embedded_redis import RedisServer, find_redis_server
from tests.support.rollout_world import NAME, RolloutWorld, build_rollout_world
from tests.support.service_harness import ServeProcess
from training.served import load_served

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutWorld]:
    root = tmp_path_factory.mktemp("rollout-world")
    redis = RedisServer(binary=find_redis_server(), data_dir=root / "redis").start()
    try:
        # A stronger drift than the monitor's world (3.5 logits, not 2): the recent model's
        # lead on the served days is then about 0.016 ROC AUC, clear on their labels.
        yield build_rollout_world(root, redis.connection_string, drift_bonus=3.5)
    finally:
        redis.stop()


def follow(server: ServeProcess, challenger: str | None, timeout: float = 30.0) -> None:
    """Wait until the process serves ``challenger`` (None: none)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = httpx.get(server.url + "/readyz", timeout=5).json()
        served = (ready.get("challenger") or {}).get("version")
        if served == challenger:
            return
        time.sleep(0.2)
    raise AssertionError(f"the process did not follow the registry to challenger {challenger}")


def run(world: RolloutWorld, *args: str) -> dict:
    done = world.cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout) if "--json" in args else {}


def test_a_shuffled_shadow_is_aborted_and_a_recent_canary_promoted(world, tmp_path):
    server = ServeProcess(world.env, tmp_path / "serve.log").start()
    try:
        run(world, "models", "shadow", NAME, world.shuffled, "--reason", "try it")
        follow(server, world.shuffled)
        world.serve_days(server, 0, 5)
        time.sleep(2.5)  # a row waits up to 1.25 budgets, then the log flushes every 0.2 s
        report = run(world, "rollout", "apply", "--json")
        c, decision = report["comparison"], report["decision"]
        assert c["challenger"] == world.shuffled and c["events"] > 5_000, c
        assert (decision["action"], decision["applied"]) == ("abort", True), decision
        breached = {check["name"] for check in decision["checks"] if check["breached"]}
        assert breached & {"rollout_max_score_psi", "rollout_abort_margin"}, decision
        print("shuffled:", json.dumps({k: c[k] for k in ("events", "score_psi", "agreement",
                                                           "error_rate")}),
              json.dumps(c["labelled"]), decision["reasons"])
        follow(server, None)

        run(world, "models", "canary", NAME, world.recent, "--percent", "20",
            "--reason", "learned the drift")
        follow(server, world.recent)
        world.serve_days(server, 5, 10)
        time.sleep(2.5)
        # Before its events' labels arrived, the policy waits; once they have, it promotes.
        early = run(world, "rollout", "apply", "--json", "--now", world.days[5].isoformat())
        assert early["decision"]["action"] == "wait", early["decision"]
        assert early["comparison"]["labelled"]["labels"] == 0
        assert world.registry_stage(world.recent) == "canary"
        later = (world.days[-1] + timedelta(days=30)).isoformat()
        report = run(world, "rollout", "apply", "--json", "--now", later)
        c, decision = report["comparison"], report["decision"]
        print("recent:", json.dumps({k: c[k] for k in (
            "events", "answered_by_challenger", "outcomes", "score_psi", "agreement")}),
            json.dumps(c["labelled"]), decision)
        assert (decision["action"], decision["applied"]) == ("promote", True), decision
        assert 0.15 < c["answered_by_challenger"] / c["events"] < 0.25
        follow(server, None)
        ready = httpx.get(server.url + "/readyz", timeout=5).json()
        assert ready["model_version"] == world.recent
    finally:
        server.stop()

    registry = world.registry()
    try:
        assert registry.production_version(NAME) == world.recent
        assert registry.get(NAME, world.shuffled).stage == "candidate"
        aborted = registry.get(NAME, world.shuffled).details()["transitions"][-1]
        assert aborted["actor"] == "skewless rollout" and "aborted" in aborted["reason"]
        promoted = registry.get(NAME, world.recent).details()["transitions"][-1]
        assert promoted["to"] == "production"
        assert promoted["evidence"]["rollout"]["comparison"]["labelled"]["labels"] >= 1
        assert promoted["evidence"]["previous_production"] == world.production
        assert "criteria" in json.dumps(promoted["evidence"])  # the gate's, beside it
        actions = [e.action for e in registry.audit_events()]
        assert "abort" in actions
    finally:
        registry.close()

    # Every logged row carries both versions and scores; the answer is the one named.
    logs = load_served(world.settings.feature_log_dir)
    rollout = logs.filter(pc.is_valid(logs["challenger_version"]))
    assert rollout.num_rows == world.served
    answered = np.asarray(rollout["score"].to_numpy(zero_copy_only=False), dtype=float)
    versions = rollout["model_version"].to_pylist()
    production = np.asarray(rollout["production_score"].to_numpy(zero_copy_only=False),
                            dtype=float)
    challenger = rollout["challenger_score"].to_pylist()
    for i, version in enumerate(versions):
        expected = challenger[i] if version == rollout["challenger_version"][i].as_py() \
            else production[i]
        assert answered[i] == expected
