"""A private PostgreSQL 15 cluster for tests: initdb in a temporary directory, a free port.

PostgreSQL refuses to run as root, so the cluster belongs to the ``postgres`` system user
when the tests run as root. Only the cluster made here is ever touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from skewless.embedded_redis import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresCluster:
    def __init__(self) -> None:
        # Not under pytest's tmp_path: its parents are private to root, and the server
        # runs as the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="skewless-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [*(["runuser", "-u", "postgres", "--"] if self.as_user else []), *args]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresCluster:
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--encoding=UTF8", "--no-sync")
        self.start_server()
        return self

    def start_server(self) -> None:
        """Start the server on the cluster's data directory and port; returns once it accepts
        connections."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                  "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")

    def stop_server(self) -> None:
        """Stop the server as an operator's restart does (``-m fast``: sessions are ended, open
        transactions rolled back), keeping the data directory for :meth:`start_server`."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self._run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (if it runs) and delete the cluster."""
        try:
            status = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status",
                               check=False)
            if status.returncode == 0:  # 3: not running (a test stopped it)
                self.stop_server()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
