"""Skewless's loop as an Airflow DAG, for teams whose schedules live in Airflow (3.x).

Each task is `skewless jobs run JOB --slot <the run's data interval end>` on a machine (or
image) with Skewless installed and the same SKEWLESS_* environment as the service: Airflow
schedules, Skewless claims the slot in its metadata database (a slot already run, by this
DAG or by a `skewless worker`, is not run twice: a rerun answers with its recorded outcome),
applies the job's timeout and retries (SKEWLESS_JOB_RETRIES, so the tasks have none of their
own), and records the run where `skewless jobs list`, the catalog's jobs page and the alerts
see it. Turn off the worker's schedule of each job this DAG runs
(SKEWLESS_SCHEDULE_<JOB>=off).

Copy this file into the DAGs folder; set SKEWLESS_BIN if `skewless` is not on the PATH.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

SKEWLESS = os.environ.get("SKEWLESS_BIN", "skewless")
SLOT = "{{ data_interval_end.isoformat() }}"


def job(dag: DAG, name: str, timeout: timedelta) -> BashOperator:
    """One of the loop's jobs for the run's slot; exit 1 unless it succeeded."""
    return BashOperator(
        task_id=name.replace("-", "_"),
        bash_command=f"{SKEWLESS} jobs run {name} --slot '{SLOT}'",
        execution_timeout=timeout,
        dag=dag,
    )


defaults = {"retries": 0}  # Skewless retries within the slot's run

# Hourly: materialize the new feature rows, then check what was served against them.
with DAG("skewless_hourly", schedule="5 * * * *", start_date=datetime(2026, 1, 1),
         catchup=False, max_active_runs=1, default_args=defaults,
         tags=["skewless"]) as hourly:
    job(hourly, "materialize", timedelta(hours=2)) >> job(hourly, "skew-check",
                                                          timedelta(hours=1))

# Every 15 minutes: the rollout policy (promote, abort or hold the challenger).
with DAG("skewless_rollout", schedule="*/15 * * * *", start_date=datetime(2026, 1, 1),
         catchup=False, max_active_runs=1, default_args=defaults,
         tags=["skewless"]) as rollout:
    job(rollout, "rollout", timedelta(minutes=30))

# Daily: the monitor (retraining through the gate when its policy is met), retention and the
# catalog's statistics.
with DAG("skewless_daily", schedule="40 2 * * *", start_date=datetime(2026, 1, 1),
         catchup=False, max_active_runs=1, default_args=defaults,
         tags=["skewless"]) as daily:
    job(daily, "monitor", timedelta(hours=3)) >> [
        job(daily, "logs-prune", timedelta(hours=1)),
        job(daily, "catalog-refresh", timedelta(hours=1)),
    ]
