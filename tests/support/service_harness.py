"""Running the real predictor over HTTP: in a thread (fast) or as `skewless serve` (signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.dataset as pads

from service.app import create_app, serve_in_thread
from skewless.embedded_redis import free_port
from skewless.settings import Settings
from training.evaluation.gate import promote

ROW = {"card_id": 1, "merchant_id": 2, "amount": 12.5, "channel": "pos", "local_hour": 14}


@contextmanager
def app_in_thread(settings: Settings) -> Iterator[str]:
    """The app on uvicorn in a background thread, promoting through the real gate; yields its
    base URL."""
    with serve_in_thread(create_app(settings, promote=promote),
                         read_timeout=settings.request_read_timeout_seconds) as url:
        yield url


@dataclass
class ServeProcess:
    """`skewless serve` as a user runs it, with settings from the environment."""

    env: dict[str, str]
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServeProcess:
        self.port = free_port()
        skewless = Path(sys.executable).with_name("skewless")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(skewless), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env={**os.environ, **self.env, "FEAST_USAGE": "False"},
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"skewless serve exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"skewless serve did not start: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no draining, no flush, as an OOM kill or a power cut would end it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.terminate()
            try:
                self.wait()
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def serve_env(settings: Settings, **extra: object) -> dict[str, str]:
    env = {
        "SKEWLESS_REPO_PATH": str(settings.repo_path),
        "SKEWLESS_VAR_DIR": str(settings.var_dir),
        "SKEWLESS_REDIS": str(settings.redis),
    }
    env.update({f"SKEWLESS_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def read_logs(directory: Path) -> pd.DataFrame:
    """Every logged row under a feature-log directory (hidden in-progress files excluded)."""
    files = sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        return pd.DataFrame()
    return pads.dataset(files, format="parquet").to_table().to_pandas()
