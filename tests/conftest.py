"""Session fixtures: a private redis-server and the expensive worlds, each built once.

The code that builds the worlds lives in tests/support/: the demo is built in this process
when a test first needs it, the two drift worlds side by side in child processes
(tests/support/builders.py). The worlds are shared read-only: a test that changes what one
holds works on a copy of its settings with its own var dir, or restores the state it relies
on in its own fixture; the drift worlds belong to the monitor's tests.

Every test whose fixture closure includes one of the worlds is marked ``slow`` here, so no
test needs to remember the marker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skewless.embedded_redis import RedisServer, find_redis_server
from skewless.settings import export_for_feast
from tests.support.builders import Builders
from tests.support.demo import DemoRepo, build_demo
from tests.support.drift_world import MonitoredWorld, build_monitored_world
from tests.support.redis_cluster import LocalCluster

# Fixtures that build a data set and train a model (minutes each).
WORLDS = frozenset({"demo", "drifted", "steady"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if WORLDS.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(
        binary=find_redis_server(), data_dir=tmp_path_factory.mktemp("redis")
    ).start()
    export_for_feast(server.connection_string)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Redis Cluster: three masters, no replicas (started when a test first needs it)."""
    cluster = LocalCluster(find_redis_server(), tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> DemoRepo:
    """The demo data set, run through the whole offline spine once (Redis not materialized:
    tests that read online values materialize what they need)."""
    return build_demo(tmp_path_factory.mktemp("demo"), redis_server)


@pytest.fixture(scope="session")
def drift_worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builders]:
    """The world with drift and the one without, built side by side in child processes."""
    worlds = Builders(tmp_path_factory.mktemp("drift"))
    worlds.start("drift-on", build_monitored_world, True)
    worlds.start("drift-off", build_monitored_world, False)
    yield worlds
    worlds.close()


@pytest.fixture(scope="session")
def drifted(drift_worlds: Builders) -> MonitoredWorld:
    """The drift scenario (drift from day 85 of 110), served, monitored and retrained. The
    monitor's delayed-label test serves it again (its logs grow), after the tests that count
    the first serving's rows."""
    return drift_worlds.world("drift-on")[0]


@pytest.fixture(scope="session")
def steady(drift_worlds: Builders) -> MonitoredWorld:
    """The same world without the drift: nothing to flag, nothing retrained."""
    return drift_worlds.world("drift-off")[0]
