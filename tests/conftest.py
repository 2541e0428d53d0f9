"""Session fixtures: a private redis-server and the expensive worlds, each built once.

The code that builds the worlds lives in tests/support/. The demo is built in this process
when a test first needs it; the worlds no other fixture builds on (the two drift worlds, the
skew check's world) are built in child processes that start with the session, so they take
shape beside the first tests (tests/support/background.py). The worlds are shared read-only:
a test that changes what one holds works on a copy of its settings with its own var dir, or
restores the state it relies on in its own fixture; the drift and skew worlds belong to the
modules that use them.

Every test whose fixture closure includes one of the worlds is marked ``slow`` here, so no
test needs to remember the marker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skewless.embedded_redis import RedisServer, find_redis_server
from skewless.settings import export_for_feast
from tests.support.background import Background
from tests.support.demo import DemoRepo, build_demo
from tests.support.drift_world import MonitoredWorld, build_monitored_world
from tests.support.skew_world import SkewWorld, build_skew_world

# Fixtures that build a data set and train a model (minutes each).
WORLDS = frozenset({"demo", "drifted", "steady", "skew_world"})


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
def demo(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> DemoRepo:
    """The demo data set, run through the whole offline spine once (Redis not materialized:
    tests that read online values materialize what they need)."""
    return build_demo(tmp_path_factory.mktemp("demo"), redis_server)


@pytest.fixture(scope="session", autouse=True)
def background(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    """The builders of the background worlds the selected tests use, started with the session."""
    used = set().union(*(getattr(item, "fixturenames", ()) for item in request.session.items))
    worlds = Background(tmp_path_factory.mktemp("background"))
    if used & {"drifted", "steady"}:
        worlds.start("drift-on", build_monitored_world, True)
        worlds.start("drift-off", build_monitored_world, False)
    if "skew_world" in used:
        worlds.start("skew", build_skew_world, persist=False)
    yield worlds
    worlds.close()


@pytest.fixture(scope="session")
def drifted(background: Background) -> MonitoredWorld:
    """The drift scenario (drift from day 85 of 110), served, monitored and retrained. The
    monitor's delayed-label test serves it again (its logs grow), after the tests that count
    the first serving's rows."""
    return background.world("drift-on")[0]


@pytest.fixture(scope="session")
def steady(background: Background) -> MonitoredWorld:
    """The same world without the drift: nothing to flag, nothing retrained."""
    return background.world("drift-off")[0]


@pytest.fixture(scope="session")
def skew_world(background: Background) -> tuple[SkewWorld, RedisServer]:
    """The skew check's world and its redis-server (test_skew's alone: it edits both)."""
    return background.world("skew")
