"""When the loop's jobs run: schedules as APScheduler triggers, and the slot a run belongs to.

A schedule is a cron expression (five fields, UTC), an interval (``every 30s``, ``every 15m``,
``every 6h``, ``every 1d``) or ``off``. A *slot* is one scheduled time of a job: the unit that
runs at most once across all workers (``job_runs``' unique (job, slot)). Interval slots are
counted from :data:`ANCHOR`, not from when a worker started, so two workers started at
different times share them; cron slots are shared by nature.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

# The jobs a worker can run, in the order the loop runs them (skewless.jobs defines each).
JOB_NAMES = ("materialize", "skew-check", "monitor", "rollout", "logs-prune", "catalog-refresh")

ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
OFF = "off"
INTERVAL = re.compile(r"^every\s+(\d+)\s*([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# How far back a run looks for the slot it belongs to: a run starts milliseconds after its
# scheduled time (one executor thread per job), at worst within the misfire grace time.
SLOT_LOOKBACK = timedelta(minutes=5)


def parse_schedule(text: str) -> BaseTrigger | None:
    """The trigger of a schedule, or None for ``off``; ValueError saying what is wrong."""
    value = " ".join(text.split()).lower()
    if value == OFF:
        return None
    interval = INTERVAL.match(value)
    if interval:
        amount, unit = int(interval.group(1)), interval.group(2)
        if amount < 1:
            raise ValueError(f"{text!r}: an interval must be at least 1{unit}")
        return IntervalTrigger(**{UNITS[unit]: amount}, start_date=ANCHOR, timezone=UTC)
    if len(value.split()) != 5:
        raise ValueError(f"{text!r} is not a schedule: use a cron expression of five fields "
                         "(minute hour day month weekday, UTC), 'every N[s|m|h|d]' or 'off'")
    try:
        return CronTrigger.from_crontab(value, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid cron expression: {exc}") from None


def slot_of(trigger: BaseTrigger, now: datetime) -> datetime:
    """The latest scheduled time of ``trigger`` at or before ``now`` (the slot a run that
    started at ``now`` belongs to)."""
    fire = trigger.get_next_fire_time(None, now - SLOT_LOOKBACK)
    slot = None
    while fire is not None and fire <= now:
        slot = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    if slot is None:  # started later than the look-back allows: the run's own second
        return now.replace(microsecond=0)
    return slot.astimezone(UTC)


def period_of(trigger: BaseTrigger, now: datetime) -> float:
    """Seconds between the next two scheduled times: how often the job is expected to
    succeed (a cron schedule's gaps may vary; this is the coming one)."""
    first = trigger.get_next_fire_time(None, now)
    assert first is not None
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1))
    assert second is not None
    return (second - first).total_seconds()
