"""Session fixtures: a private redis-server and the expensive worlds, each built once.

The worlds are shared read-only; the code that builds them lives in tests/support/. A test
that changes what a world holds (its Redis keys, its registry, its logs) works on a copy of
its settings with its own var dir, or restores the state it relies on in its own fixture.

Every test whose fixture closure includes one of the worlds is marked ``slow`` here, so no
test needs to remember the marker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skewless.embedded_redis import RedisServer, find_redis_server
from skewless.settings import export_for_feast
from tests.support.demo import DemoRepo, build_demo
from tests.support.drift_world import MonitoredWorld, build_monitored_world

# Fixtures that build a data set and train a model (minutes each).
WORLDS = frozenset({"demo", "drifted", "steady"})


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
def demo(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> DemoRepo:
    """The demo data set, run through the whole offline spine once (Redis not materialized:
    tests that read online values materialize what they need)."""
    return build_demo(tmp_path_factory.mktemp("demo"), redis_server)


@pytest.fixture(scope="session")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoredWorld]:
    """The drift scenario (drift from day 85 of 110), served, monitored and retrained."""
    run = build_monitored_world(tmp_path_factory.mktemp("drift-on"), drift=True)
    yield run
    run.redis.stop()


@pytest.fixture(scope="session")
def steady(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoredWorld]:
    """The same world without the drift: nothing to flag, nothing retrained."""
    run = build_monitored_world(tmp_path_factory.mktemp("drift-off"), drift=False)
    yield run
    run.redis.stop()
