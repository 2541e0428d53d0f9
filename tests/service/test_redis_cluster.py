"""The cluster profile's online store: the predictor on a three-node Redis Cluster.

`skewless materialize` writes there (Feast's CLI, the profile's feature_store.cluster.yaml);
the predictor reads one pipelined batch per node per request, each node only the keys of its
own slots (counted by the nodes' INFO commandstats and by the client's per-node batches); a
node down is a 503 (and a failed readiness) naming it, and serving recovers when it returns.
(That the served values equal Feast's SDK on the cluster, TTL included, is test_features'.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
from redis.asyncio.cluster import ClusterNode

from service.app import create_app, serve_in_thread
from skewless.feast_cli import run_feast
from skewless.settings import redis_for_feast
from tests.support.redis_cluster import redis_cluster_only
from training.evaluation.gate import promote

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def world(demo, redis_cluster, tmp_path_factory):
    """The demo applied and materialized into the cluster by the profile's commands."""
    root = tmp_path_factory.mktemp("cluster-serving")
    redis_cluster.flushall()
    settings = demo.settings.model_copy(update={
        "profile": "cluster", "redis": redis_cluster.connection_string,
        "feature_log_dir": root / "log"})
    redis_cluster_only(settings.repo_path)
    run_feast(settings, "apply")
    # The profile's registry is new: Feast's incremental start would be now minus the TTL.
    run_feast(settings, "materialize", "2015-01-01T00:00:00",
              (demo.cutoff.replace(tzinfo=None)).isoformat(timespec="seconds"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKEWLESS_")}
    env.update(SKEWLESS_PROFILE="cluster", SKEWLESS_REDIS=redis_cluster.connection_string,
               SKEWLESS_REPO_PATH=str(settings.repo_path), SKEWLESS_VAR_DIR=str(settings.var_dir),
               FEAST_USAGE="False")
    cli = subprocess.run(
        [sys.executable, "-m", "skewless.cli", "materialize", "--end",
         demo.cutoff.isoformat()], env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "materialized" in cli.stdout
    keys = sum(node.client().dbsize() for node in redis_cluster.nodes)
    assert all(node.client().dbsize() > 0 for node in redis_cluster.nodes), keys
    rows = [{"card_id": int(r.card_id), "merchant_id": int(r.merchant_id),
             "amount": float(r.amount), "channel": r.channel, "local_hour": int(r.local_hour)}
            for r in demo.data.transactions.tail(300).itertuples()]
    with redis_for_feast(redis_cluster.connection_string):
        yield settings, rows


def commandstats(node) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in node.client().info("commandstats").items()}


def test_one_batch_per_node_per_request_each_node_reading_only_its_keys(
        world, redis_cluster, monkeypatch):
    settings, rows = world
    batches: list[str] = []
    original = ClusterNode.execute_pipeline

    async def counted(self, commands):
        batches.append(self.name)
        return await original(self, commands)

    monkeypatch.setattr(ClusterNode, "execute_pipeline", counted)
    app = create_app(settings, promote=promote)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        plan = app.state.predictor.plan
        assert http.post("/predict", json=rows[0]).status_code == 200  # connections made
        before = {node.address: commandstats(node) for node in redis_cluster.nodes}
        batches.clear()
        for row in rows[1:201]:
            response = http.post("/predict", json=row)
            assert response.status_code == 200, response.text
        after = {node.address: commandstats(node) for node in redis_cluster.nodes}

    expected_reads: Counter[str] = Counter()
    expected_batches: Counter[str] = Counter()
    for row in rows[1:201]:
        nodes = [redis_cluster.node_of(key).address for key, _ in plan.commands([row])]
        expected_reads.update(nodes)
        expected_batches.update(set(nodes))
    assert len(expected_batches) == 3  # the requests' keys span every node
    for address in after:
        delta = {k: after[address].get(k, 0) - before[address].get(k, 0) for k in after[address]}
        # Each HMGET where its key lives (none redirected), and nothing else per request:
        # no topology lookups (CLUSTER ...), no other reads. A new connection says who it is
        # (CLIENT SETINFO, twice): this test's own INFO client, at most one of the predictor's.
        assert delta.get("hmget", 0) == expected_reads[address], (address, delta)
        assert delta.get("client", 0) <= 4, (address, delta)
        assert {k for k, v in delta.items() if v and k not in ("hmget", "info", "client")
                } == set(), delta
    assert Counter(batches) == expected_batches  # one batch per node a request touches


def test_a_node_down_is_a_503_naming_it_and_serving_recovers_when_it_returns(
        world, redis_cluster):
    settings, rows = world
    app = create_app(settings, promote=promote)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        plan = app.state.predictor.plan
        victim = redis_cluster.nodes[1]
        row = next(r for r in rows if victim.address in {
            redis_cluster.node_of(key).address for key, _ in plan.commands([r])})
        healthy = http.post("/predict", json=row)
        assert healthy.status_code == 200, healthy.text

        victim.kill()
        try:
            for _ in range(3):  # at once, and once the others have noticed (node timeout 2 s)
                down = http.post("/predict", json=row)
                assert down.status_code == 503, down.text
                assert victim.address in down.json()["detail"], down.json()
                assert "\\x" not in down.text  # no raw key bytes in the message
                time.sleep(1.5)
            ready = http.get("/readyz")
            assert ready.status_code == 503 and victim.address in ready.text, ready.text
        finally:
            victim.start()
        redis_cluster.wait_ok()
        deadline = time.monotonic() + 30
        while True:
            back = http.post("/predict", json=row)
            if back.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert back.status_code == 200, back.text
        assert back.json()["score"] == healthy.json()["score"]
        assert http.get("/readyz").status_code == 200
