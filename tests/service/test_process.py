"""`skewless serve` as a process: Redis outages, SIGTERM draining, loss-free feature logging."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pyarrow as pa
import pytest

from skewless.embedded_redis import RedisServer, find_redis_server
from tests.support.service_harness import ROW, ServeProcess, read_logs, serve_env

pytestmark = pytest.mark.redis


def test_redis_outage_answers_503_fast_and_service_resumes(demo, tmp_path):
    redis = RedisServer(binary=find_redis_server(), data_dir=tmp_path / "redis",
                        persist=False).start()
    settings = demo.settings.model_copy(update={"redis": redis.connection_string})
    server = ServeProcess(serve_env(settings, feature_log_dir=tmp_path / "log"),
                          tmp_path / "serve.log").start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.post("/predict", json=ROW).status_code == 200
            redis.stop()
            for _ in range(3):
                started = time.monotonic()
                response = http.post("/predict", json=ROW)
                assert time.monotonic() - started < 1.0
                assert response.status_code == 503
                assert response.json()["detail"].startswith("online store unavailable: ")
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert "online store unavailable" in ready.json()["detail"]
            assert http.get("/healthz").status_code == 200
            metrics = http.get("/metrics").text
            assert 'route="/predict",status="503"} 3.0' in metrics
            assert "Traceback" not in response.text

            redis.start()  # same port
            assert http.post("/predict", json=ROW).status_code == 200
            assert http.get("/readyz").status_code == 200
    finally:
        server.stop()
        redis.stop()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def _hammer(url: str, accepted: list[str], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        while not stop.is_set():
            try:
                response = http.post("/predict", json=ROW)
            except httpx.TransportError:
                return  # the server stopped listening
            if response.status_code == 200:
                accepted.append(response.json()["request_id"])
            else:
                assert response.status_code == 503, response.text


def test_every_accepted_prediction_is_logged_across_sigterm_and_restart(demo, tmp_path):
    """N 2xx responses → exactly N logged rows, with requests in flight at SIGTERM.

    The write interval is an hour, so every row reaches disk through the shutdown flush.
    """
    store = demo.store()
    service = store.get_feature_service(demo.settings.feature_service)
    log_dir = demo.settings.data_dir / "feature_logs" / service.name
    shutil.rmtree(log_dir, ignore_errors=True)  # the feature service's own destination
    env = serve_env(demo.settings, feature_log_flush_seconds=3600,
                    feature_log_flush_rows=10**6)
    accepted: list[str] = []
    for run in range(2):
        server = ServeProcess(env, tmp_path / f"serve-{run}.log").start()
        stop = threading.Event()
        workers = [threading.Thread(target=_hammer, args=(server.url, accepted, stop))
                   for _ in range(8)]
        before = len(accepted)
        for w in workers:
            w.start()
        while len(accepted) < before + 300:
            time.sleep(0.01)
        server.terminate()  # while 8 clients keep sending
        assert server.wait() == 0
        stop.set()
        for w in workers:
            w.join()
        assert len(accepted) > before + 300
        assert "Traceback" not in server.log_path.read_text()

    logged = read_logs(log_dir)
    assert len(logged) == len(accepted)
    assert sorted(logged["__request_id"]) == sorted(accepted)
    assert not list(log_dir.rglob(".*.inprogress"))

    # Read back through Feast: its logging source and retrieval over the same destination.
    from feast.feature_logging import FeatureServiceLoggingSource

    feast_schema = FeatureServiceLoggingSource(service, store.project).get_schema(store.registry)
    now = datetime.now(UTC)
    table = store._get_provider().retrieve_feature_service_logs(
        service, now - timedelta(hours=1), now + timedelta(minutes=1), store.config,
        store.registry).to_arrow()
    assert table.num_rows == len(accepted)
    for field in feast_schema:
        if field.name == "__log_date":
            continue  # Feast drops the partition column when it reads logs back
        got = table.schema.field(field.name).type
        assert got == field.type or (pa.types.is_timestamp(got) and pa.types.is_timestamp(
            field.type)), field.name
    statuses = table.column("card_activity__txn_count_1d__status").to_pylist()
    assert set(statuses) <= {1, 2, 3, 4}
