"""The job record's rules, on SQLite and PostgreSQL: a slot runs once across workers, a job
still running its previous slot is not started again, a run whose worker vanished is
abandoned; and the schedules' syntax and slots."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from skewless.db import upgrade
from skewless.jobs import JOBS, JobRuns, Outcome, parse_output
from skewless.schedules import parse_schedule, period_of, slot_of
from skewless.settings import Settings

SLOT = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)


@pytest.fixture
def store(database):
    upgrade(database)
    with JobRuns(database) as runs:
        yield runs


def later(seconds: float = 3600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_of_workers_claiming_one_slot_together_one_wins(store):
    claims = []
    barrier = threading.Barrier(8)

    def claim(n):
        barrier.wait()
        claims.append(store.claim("materialize", SLOT, f"w{n}", later()))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [c for c in claims if not c.taken and not c.skipped]
    assert len(winners) == 1 and len(claims) == 8
    assert {c.run.id for c in claims} == {winners[0].run.id}  # the others see the winner's row
    assert [r.worker for r in store.runs("materialize")] == [winners[0].run.worker]


def test_a_job_still_running_its_slot_skips_the_next_until_it_ends(store):
    first = store.claim("monitor", SLOT, "a", later()).run
    second = store.claim("monitor", SLOT + timedelta(minutes=5), "b", later())
    assert second.skipped and second.run.outcome == Outcome.SKIPPED
    assert f"slot {SLOT.isoformat()} still running on a" in second.run.error
    assert not store.claim("skew-check", SLOT, "b", later()).skipped  # other jobs go on
    store.finish(first.id, Outcome.SUCCEEDED, 1, None, {"report": "r.json"}, "log")
    third = store.claim("monitor", SLOT + timedelta(minutes=10), "b", later())
    assert not third.skipped and not third.taken
    assert store.last_success()["monitor"].produced == {"report": "r.json"}
    # A skipped slot stays skipped: another worker cannot run it afterwards.
    assert store.claim("monitor", SLOT + timedelta(minutes=5), "c", later()).taken


def test_a_run_past_its_deadline_is_abandoned_and_no_longer_blocks(store):
    stale = store.claim("rollout", SLOT, "gone", datetime.now(UTC) - timedelta(seconds=1)).run
    fresh = store.claim("rollout", SLOT + timedelta(minutes=15), "b", later())
    assert not fresh.skipped
    assert store.get(stale.id).outcome == Outcome.ABANDONED
    store.finish(fresh.run.id, Outcome.FAILED, 3, "exit code 1\nboom", None, None)
    last = store.last_runs()["rollout"]
    assert (last.outcome, last.attempts, last.error) == ("failed", 3, "exit code 1\nboom")
    assert "rollout" not in store.last_success()


def test_schedules_parse_and_slots_are_shared_by_every_worker():
    now = datetime(2026, 12, 4, 6, 51, 17, 250_000, tzinfo=UTC)
    every = parse_schedule("every 20s")
    assert slot_of(every, now) == datetime(2026, 12, 4, 6, 51, 0, tzinfo=UTC)
    assert period_of(every, now) == 20
    cron = parse_schedule("*/15 * * * *")
    assert slot_of(cron, datetime(2026, 12, 4, 6, 45, 0, 3000, tzinfo=UTC)) == \
        datetime(2026, 12, 4, 6, 45, tzinfo=UTC)
    assert period_of(parse_schedule("40 2 * * *"), now) == 86_400
    assert parse_schedule(" OFF ") is None
    for bad, says in (("every 0s", "at least 1s"), ("* * *", "five fields"),
                      ("61 * * * *", "not a valid cron"), ("every 5 weeks", "five fields")):
        with pytest.raises(ValueError, match=says):
            parse_schedule(bad)


def test_settings_refuse_a_bad_schedule_or_timeout_naming_it(clean_env, monkeypatch):
    monkeypatch.setenv("SKEWLESS_SCHEDULE_MONITOR", "every day")
    with pytest.raises(ValidationError, match="schedule_monitor"):
        Settings()
    monkeypatch.delenv("SKEWLESS_SCHEDULE_MONITOR")
    monkeypatch.setenv("SKEWLESS_JOB_TIMEOUTS", '{"materialise": 60}')
    with pytest.raises(ValidationError, match="'materialise' is not a job"):
        Settings()
    monkeypatch.setenv("SKEWLESS_JOB_TIMEOUTS", '{"materialize": 7200}')
    assert Settings().job_timeouts == {"materialize": 7200}


def test_each_job_is_a_skewless_command_for_its_slot(tmp_path):
    from typer.main import get_command

    from skewless.cli import app
    from skewless.jobs import Context

    settings = Settings(var_dir=tmp_path)
    ctx = Context(settings, SLOT, None)
    cli = get_command(app)
    for job in JOBS.values():
        argv = job.command(ctx)
        group = cli
        while hasattr(group, "commands") and argv and argv[0] in group.commands:
            group = group.commands[argv.pop(0)]
        assert not hasattr(group, "commands"), (job.name, argv)  # a command, not a group
        names = {opt for param in group.params for opt in getattr(param, "opts", [])}
        assert {a for a in argv if a.startswith("--")} <= names, (job.name, argv)
    def since(previous):
        argv = JOBS["skew-check"].command(Context(settings, SLOT, previous))
        return argv[argv.index("--since") + 1]

    window = SLOT - timedelta(days=settings.monitor_window_days)
    assert since(SLOT - timedelta(hours=1)) == (SLOT - timedelta(hours=1)).isoformat()
    assert since(None) == since(window - timedelta(days=30)) == window.isoformat()
    assert parse_output('warming up\n{"rows": 3}\n') == {"rows": 3}
    assert parse_output("no json") is None
