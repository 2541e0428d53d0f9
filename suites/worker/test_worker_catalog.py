"""The catalog's jobs page and API: every run the database holds, as recorded, and each job's
schedule, next slot, last success and last run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import httpx

from service.app import create_catalog_app, serve_in_thread
from skewless.jobs import JOBS, JobRuns, Outcome
from skewless.schedules import parse_schedule

HOSTILE = '<script>alert("x")</script> exit code 1'


class Rows(HTMLParser):
    """The data-* attributes of each table row, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.table: str | None = None
        self.rows: dict[str, list[dict[str, str]]] = {}
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.table = attrs.get("id")
            self.rows[self.table] = []
        elif tag == "tr" and self.table and any(k.startswith("data-") for k in attrs):
            self.rows[self.table].append({k[5:]: v for k, v in attrs.items()
                                          if k.startswith("data-")})
        elif tag == "script":
            self.scripts += 1


def test_the_catalog_shows_each_job_and_every_run_recorded(world):
    settings = world.settings.model_copy(update={"schedule_monitor": "every 6h",
                                                 "schedule_logs_prune": "off"})
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(days=400)  # no worker's slot
    with JobRuns.from_settings(settings) as store:
        failed = store.claim("rollout", slot, "w1", slot + timedelta(hours=1)).run
        store.finish(failed.id, Outcome.FAILED, 3, HOSTILE, None, "/nowhere.log")
        done = store.claim("materialize", slot, "w2", slot + timedelta(hours=1)).run
        store.finish(done.id, Outcome.SUCCEEDED, 1, None, {"materialized_until": "x"}, None)
        recorded = store.runs(limit=100)
        last, succeeded = store.last_runs(), store.last_success()

    with serve_in_thread(create_catalog_app(settings)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        doc = http.get("/api/catalog/jobs").raise_for_status().json()
        page = http.get("/catalog/jobs")
        only = http.get("/api/catalog/jobs", params={"job": "rollout"}).json()
        unknown = http.get("/api/catalog/jobs", params={"job": "nope"}).json()
        seen = browse(url, failed.id)

    assert [(r["id"], r["outcome"], r["attempts"], r["error"]) for r in doc["runs"]] == \
        [(r.id, r.outcome, r.attempts, r.error) for r in recorded]
    by_job = {j["job"]: j for j in doc["jobs"]}
    assert list(by_job) == list(JOBS)
    assert by_job["monitor"]["schedule"] == "every 6h"
    assert by_job["logs-prune"]["schedule"] == "off" and by_job["logs-prune"]["next_slot"] is None
    assert datetime.fromisoformat(by_job["monitor"]["next_slot"]) == parse_schedule(
        "every 6h").get_next_fire_time(None, datetime.now(UTC))
    for name, job in by_job.items():
        assert (job["last_run"] or {}).get("id") == (last[name].id if name in last else None)
        assert (job["last_success"] or {}).get("id") == \
            (succeeded[name].id if name in succeeded else None)
    assert by_job["rollout"]["last_run"]["id"] == failed.id
    assert {r["job"] for r in only["runs"]} == {"rollout"}
    assert unknown["runs"] == [] and len(unknown["jobs"]) == len(JOBS)

    assert page.status_code == 200
    parsed = Rows()
    parsed.feed(page.text)
    assert [(r["run"], r["outcome"]) for r in parsed.rows["runs"]] == \
        [(str(r.id), r.outcome) for r in recorded]
    assert [r["job"] for r in parsed.rows["schedules"]] == list(JOBS)
    assert parsed.scripts == 0 and "&lt;script&gt;" in page.text  # the error text, escaped
    # In a browser: from the catalog's navigation to the jobs, then one job's runs.
    assert seen["jobs"] == list(JOBS)
    assert seen["rollout runs"] == [str(r.id) for r in recorded if r.job == "rollout"]
    assert seen["error"] == HOSTILE and seen["outcome"] == "failed"


def browse(url: str, run_id: int) -> dict[str, object]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.browser import headless_chromium

    with headless_chromium() as browser:
        wait = WebDriverWait(browser, 20)
        browser.get(url + "/catalog")
        browser.find_element(By.LINK_TEXT, "Jobs").click()
        wait.until(ready.presence_of_element_located((By.ID, "schedules")))
        jobs = [row.get_attribute("data-job")
                for row in browser.find_elements(By.CSS_SELECTOR, "#schedules tr[data-job]")]
        browser.find_element(By.CSS_SELECTOR, '#schedules tr[data-job="rollout"] a').click()
        wait.until(ready.url_contains("job=rollout"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#runs tr[data-run]")
        failed = browser.find_element(By.ID, f"run-{run_id}")
        return {"jobs": jobs, "rollout runs": [r.get_attribute("data-run") for r in rows],
                "error": failed.find_element(By.TAG_NAME, "pre").text,
                "outcome": failed.get_attribute("data-outcome")}
