"""A Redis Cluster of three masters (no replicas) on free local ports, for tests and benches.

Each node is a redis-server started with ``--cluster-enabled yes`` in a directory of its own
(its nodes.conf keeps its identity and slots across a restart); ``redis-cli --cluster create``
(the redis-cli beside the binary, or on the PATH) joins them and spreads the 16,384 slots.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import yaml

from skewless.embedded_redis import RedisUnavailable


def redis_cluster_only(repo: Path) -> Path:
    """Make ``repo``'s cluster profile Redis Cluster online with DuckDB offline: its Spark
    offline store and engine need the Spark extra (`make spark`), which the online path does
    not use. What the tests of serving (and bench-serve) run; `make test-spark` runs the whole
    profile. Returns the file."""
    path = repo / "feature_store.cluster.yaml"
    config = yaml.safe_load(path.read_text())
    config["offline_store"] = {"type": "duckdb"}
    config.pop("batch_engine", None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (10,000 higher, so at most 55,535) is free too, and
    neither among ``taken`` (nor their bus ports)."""
    for _ in range(200):
        port = random.randint(20_000, 55_535)
        if {port, port + 10_000, port - 10_000} & taken:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RedisUnavailable("no free pair of ports for a cluster node")


def redis_cli(server: Path) -> Path:
    beside = server.with_name("redis-cli")
    if beside.is_file():
        return beside
    found = shutil.which("redis-cli")
    if found is None:
        raise RedisUnavailable(f"no redis-cli beside {server} or on the PATH")
    return Path(found)


@dataclass
class ClusterNode:
    binary: Path
    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
             "--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb",
             "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisUnavailable(f"cluster node {self.address} exited at start")
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RedisUnavailable(f"cluster node {self.address} did not answer in {timeout}s")

    def kill(self, save: bool = True) -> None:
        """Stop the node abruptly (SIGKILL), its data saved first when ``save`` (so a restart
        finds what was materialized)."""
        if save:
            self.client().save()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class LocalCluster:
    binary: Path
    directory: Path
    size: int = 3
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def connection_string(self) -> str:
        """Feast's connection string for it: every node, comma-separated."""
        return ",".join(node.address for node in self.nodes)

    def start(self, timeout: float = 30.0) -> LocalCluster:
        taken: set[int] = set()
        for i in range(self.size):
            port = cluster_port(taken)
            taken |= {port, port + 10_000}
            self.nodes.append(ClusterNode(self.binary, self.directory / f"node{i}", port))
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [str(redis_cli(self.binary)), "--cluster", "create",
                 *(node.address for node in self.nodes), "--cluster-replicas", "0",
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says the cluster is ok and knows all nodes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                infos = [node.client().cluster("info") for node in self.nodes]
            except redis.RedisError:
                infos = []
            if infos and all(i.get("cluster_state") == "ok"
                             and int(i.get("cluster_known_nodes", 0)) == self.size
                             for i in infos):
                return
            time.sleep(0.1)
        raise RedisUnavailable(f"the cluster was not ok within {timeout}s")

    def node_of(self, key: bytes) -> ClusterNode:
        """The node serving ``key``'s slot."""
        slot = int(self.nodes[0].client().cluster("keyslot", key))
        for start, end, master, *_ in self.nodes[0].client().execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                port = int(master[1])
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def flushall(self) -> None:
        for node in self.nodes:
            node.client().flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
