"""Worlds built side by side in child processes.

The two drift worlds each take a minute or more of generating, training and serving, mostly
in one process; built one after the other they leave a core idle while the test process
waits. Here each builder is a spawned child process (two at a time) and the fixture waits for
both. Each world's redis-server belongs to the test process, so it outlives its builder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from skewless.embedded_redis import RedisServer, find_redis_server

BUILDERS = 2  # the machine has 2 cores


class Builders:
    def __init__(self, root: Path) -> None:
        self.root = root
        # spawn: a builder starts clean, not as a copy of a process running servers in threads
        self.pool = ProcessPoolExecutor(max_workers=BUILDERS, mp_context=get_context("spawn"),
                                        initializer=_output_to, initargs=(root / "builders.log",))
        self.servers: dict[str, RedisServer] = {}
        self.builds: dict[str, Future[Any]] = {}

    def start(self, name: str, build: Callable[..., Any], *args: Any, persist: bool = True) -> None:
        """Start ``build(directory, redis_address, *args)`` with a redis-server of its own."""
        server = RedisServer(binary=find_redis_server(), data_dir=self.root / name / "redis",
                             persist=persist).start()
        self.servers[name] = server
        self.builds[name] = self.pool.submit(build, self.root / name, server.connection_string,
                                             *args)

    def world(self, name: str) -> tuple[Any, RedisServer]:
        """The built world (waiting for its builder) and its redis-server."""
        return self.builds[name].result(), self.servers[name]

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        for server in self.servers.values():
            server.stop()


def _output_to(log: Path) -> None:
    """A builder's stdout and stderr go to ``log``, not into some test's captured output."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
