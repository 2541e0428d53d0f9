"""A concurrent client for the fault tests: threads that keep sending, every outcome kept.

Each worker has its own ``httpx.Client`` (its own keep-alive connection) and POSTs the rows in
turn until stopped. An outcome is kept for every request, answered or not: its HTTP status and
the JSON ``detail`` of a non-2xx answer, or ``status=None`` and the error's text when the
request failed below HTTP (refused, reset, timed out). A fault test starts a load, injects its
fault, and then asserts over the outcomes by when they were sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Outcome:
    started: float  # time.monotonic() when sent
    elapsed: float  # seconds to the answer (or to the error)
    status: int | None  # HTTP status, None for a transport error (refused, reset, timeout)
    detail: str | None  # JSON "detail" of a non-2xx answer, or the transport error's text
    model_version: str | None  # of a 200
    request_id: str | None = None  # of a 200 to /predict: the id its logged row carries

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _detail(response: httpx.Response) -> str:
    """The ``detail`` of an error answer as text (JSON-encoded when it is not a string)."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else json.dumps(detail)


class Load:
    """Threads that POST bodies to url+path in a loop until stopped; every outcome is kept."""

    def __init__(self, url: str, rows: Sequence[dict[str, Any]], *, workers: int = 4,
                 path: str = "/predict", timeout: float = 5.0, pause: float = 0.0) -> None:
        if not rows:
            raise ValueError("a load needs at least one row to send")
        self.url = url.rstrip("/")
        self.rows = list(rows)
        self.workers = workers
        self.path = path
        self.timeout = timeout
        self.pause = pause
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Load:
        if self._threads:
            raise RuntimeError("this load has already been started")
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True,
                                          name=f"load-{n}") for n in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Outcome]:
        """Stop sending and wait for every request in flight to end; returns all outcomes."""
        self._stopping.set()
        for thread in self._threads:
            # A request in flight ends by its answer or its timeout.
            thread.join(self.timeout + 10)
            if thread.is_alive():
                raise RuntimeError(f"{thread.name} did not stop")
        return self.outcomes

    @property
    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def ok(self) -> int:
        with self._lock:
            return sum(o.ok for o in self._outcomes)

    def wait_for(self, predicate: Callable[[list[Outcome]], bool], timeout: float) -> bool:
        """Poll until ``predicate(outcomes so far)`` holds; False when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.outcomes):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _run(self, worker: int) -> None:
        # Workers start at different rows so they do not send the same bodies in step.
        i = worker
        with httpx.Client(base_url=self.url, timeout=self.timeout) as http:
            while not self._stopping.is_set():
                body = self.rows[i % len(self.rows)]
                i += 1
                started = time.monotonic()
                outcome = self._send(http, body, started)
                with self._lock:
                    self._outcomes.append(outcome)
                if self.pause:
                    self._stopping.wait(self.pause)

    def _send(self, http: httpx.Client, body: dict[str, Any], started: float) -> Outcome:
        try:
            response = http.post(self.path, json=body)
        except httpx.HTTPError as exc:  # refused, reset, timed out, a broken answer
            return Outcome(started, time.monotonic() - started, None,
                           f"{type(exc).__name__}: {exc}", None)
        elapsed = time.monotonic() - started
        if not 200 <= response.status_code < 300:
            return Outcome(started, elapsed, response.status_code, _detail(response), None)
        version = request_id = None
        if response.status_code == 200:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if isinstance(answer, dict) and isinstance(answer.get("model_version"), str):
                version = answer["model_version"]
            if isinstance(answer, dict) and isinstance(answer.get("request_id"), str):
                request_id = answer["request_id"]
        return Outcome(started, elapsed, response.status_code, None, version, request_id)
