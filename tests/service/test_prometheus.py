"""Prometheus for real: the shipped rules pass promtool, the predictor's exposition passes
promtool's linter, and a real Prometheus (Debian's, started here on a free port) scrapes the
running service with the shipped prometheus.yml and answers queries over it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from skewless.embedded_redis import free_port
from skewless.settings import PROJECT_ROOT
from tests.support.debian import ensure_commands
from tests.support.service_harness import ROW, app_in_thread

pytestmark = pytest.mark.redis

RULES = PROJECT_ROOT / "prometheus" / "rules.yml"


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    return ensure_commands({"prometheus": "prometheus", "promtool": "prometheus"})


def promtool(tools, *args: str, stdin: str | None = None, cwd: Path | None = None):
    return subprocess.run([tools["promtool"], *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd, timeout=60)


def test_rules_are_valid_and_their_unit_tests_pass(tools):
    checked = promtool(tools, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 26 rules found" in checked.stdout
    tested = promtool(tools, "test", "rules", "rules_test.yml", cwd=RULES.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.fixture(scope="module")
def served(demo, tmp_path_factory):
    settings = demo.settings.model_copy(
        update={"feature_log_dir": tmp_path_factory.mktemp("prometheus-log")})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http, url


def test_the_exposition_passes_promtools_linter(tools, served):
    http, _ = served
    assert http.post("/predict", json=ROW).status_code == 200
    assert http.post("/predict", json={**ROW, "amount": "x"}).status_code == 422
    text = http.get("/metrics").text
    assert "skewless_http_requests_total" in text
    linted = promtool(tools, "check", "metrics", stdin=text)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout.strip() == linted.stderr.strip() == ""


def test_a_real_prometheus_scrapes_the_service(tools, served, tmp_path):
    http, url = served
    # The shipped prometheus.yml, pointed at this service and with the rules of this checkout.
    config = yaml.safe_load((PROJECT_ROOT / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"skewless", "skewless-worker"}
    job = jobs["skewless"]  # the predictor's (no worker runs here)
    config["scrape_configs"] = [job]
    job["static_configs"] = [{"targets": [url.removeprefix("http://")]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    prometheus = subprocess.Popen(
        [tools["prometheus"], f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

    def query(expr: str) -> list[dict]:
        body = api.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    try:
        deadline = time.monotonic() + 60
        while True:  # the query API answers 503 "Service Unavailable" until the TSDB is open
            assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "Prometheus never became ready"
            try:
                if api.get("/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.2)
        sent = 25
        for _ in range(sent):
            assert http.post("/predict", json=ROW).status_code == 200
        deadline = time.monotonic() + 60
        counted = 0.0
        expr = 'sum(skewless_http_requests_total{route="/predict", status="200"})'
        while counted < sent:
            assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, f"Prometheus saw {counted} of {sent} requests"
            result = query(expr)
            counted = float(result[0]["value"][1]) if result else 0.0
            time.sleep(0.5)
        # Every request the service counted, Prometheus has (the other tests' included).
        assert counted == float(next(
            line.split()[-1] for line in http.get("/metrics").text.splitlines()
            if line.startswith('skewless_http_requests_total{method="POST",route="/predict",'
                               'status="200"}')))
        (up,) = query('up{job="skewless"}')
        assert up["value"][1] == "1"
        groups = api.get("/api/v1/rules").json()["data"]["groups"]
        assert {g["name"] for g in groups} == {"skewless.recording", "skewless.alerts",
                                             "skewless.monitoring", "skewless.jobs"}
        assert all(r["health"] in ("ok", "unknown") for g in groups for r in g["rules"])
        # The recording rules evaluate over the scraped series.
        deadline = time.monotonic() + 30
        while not query("skewless:predictions:rate5m"):
            assert time.monotonic() < deadline, "the recording rule never produced a value"
            time.sleep(0.5)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        log.close()
        api.close()
