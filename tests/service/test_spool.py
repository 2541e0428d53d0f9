"""The spool of spool durability on its own: its file format, and replay exactly once."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

from service.logbook import LogBook
from service.spool import Spool, decode, encode
from tests.service.test_logbook import layout, row
from tests.support.service_harness import read_logs


def test_rows_come_back_as_they_went_in_and_unsynced_lines_are_skipped():
    now = datetime.now(UTC)
    rows = [row("a", now, math.nan, None, "t-\ud800"), row("b", now, math.inf, 5.5),
            row("c", now, None, None)._replace(keys=(b"\x00\xff",))]
    data = encode(rows)
    back, skipped = decode(data)
    assert skipped == 0
    assert [r.request_id for r in back] == ["a", "b", "c"]
    assert math.isnan(back[0].values[0]) and back[1].values[0] == math.inf
    assert back[0].event_id == "t-\ud800" and back[2].keys == (b"\x00\xff",)
    assert back[1] == rows[1] and back[2] == rows[2]
    assert all(type(r.values) is tuple for r in back)
    # A write cut short (no newline at the end) and a line whose checksum fails are skipped.
    lines = data.split(b"\n")
    flipped = lines[1].replace(b'"b"', b'"x"')
    torn = b"\n".join([lines[0], flipped, lines[2][:-5]])
    back, skipped = decode(torn)
    assert [r.request_id for r in back] == ["a"] and skipped == 2


def book(tmp_path, spool: Spool) -> LogBook:
    return LogBook(tmp_path / "log", layout(), capacity=10_000, flush_rows=10_000,
                   flush_seconds=0.05, fallback_directory=tmp_path / "fallback",
                   dead_letter_directory=tmp_path / "dead", spool=spool)


def test_a_killed_process_rows_are_replayed_once_and_the_spool_emptied(tmp_path):
    now = datetime.now(UTC)
    first = [row(f"w{i}", now, float(i), None) for i in range(30)]  # written before the kill
    second = [row(f"k{i}", now, float(i), None) for i in range(20)]  # only in the spool
    spool_dir = tmp_path / "spool"

    async def killed() -> None:
        logbook = book(tmp_path, Spool(spool_dir, segment_rows=8))
        logbook.start()
        for i in range(0, 30, 5):
            await logbook.append(first[i:i + 5])  # type: ignore[misc]
        while logbook.rows_written < 30:
            await asyncio.sleep(0.01)
        # Written segments are released; a crash between a write and its release can leave
        # one behind, so keep a copy of every segment to put back (replay must skip those).
        logbook._stopping = True  # the writer stops: what follows stays in the spool only
        await logbook._task  # type: ignore[misc]
        for i in range(0, 20, 4):
            await logbook.append(second[i:i + 4])  # type: ignore[misc]
        assert logbook.depth == 20  # answered, synced, never written: then SIGKILL

    asyncio.run(killed())
    assert len(read_logs(tmp_path / "log")) == 30
    assert list(spool_dir.glob("*.spool"))

    async def restarted() -> LogBook:
        logbook = book(tmp_path, Spool(spool_dir))
        logbook.start()
        assert logbook.rows_replayed == 20
        await logbook.append([row("new", now, 1.0, None)])  # type: ignore[misc]
        await logbook.close()
        return logbook

    logbook = asyncio.run(restarted())
    logged = read_logs(tmp_path / "log")["__request_id"].tolist()
    assert sorted(logged) == sorted([r.request_id for r in first + second] + ["new"])
    assert logbook.rows_written == 21
    assert not list(spool_dir.glob("*.spool"))  # everything is logged: nothing to replay


def test_rows_already_logged_are_not_logged_again_when_a_segment_outlived_them(tmp_path):
    """A crash after a write and before its segment was deleted."""
    now = datetime.now(UTC)
    rows = [row(f"r{i}", now, float(i), None) for i in range(12)]
    spool_dir = tmp_path / "spool"
    kept = tmp_path / "kept"

    async def run_once() -> None:
        logbook = book(tmp_path, Spool(spool_dir, segment_rows=100))
        logbook.start()
        await logbook.append(rows)  # type: ignore[misc]
        kept.mkdir()
        for path in spool_dir.glob("*.spool"):  # the segment as it was before its release
            (kept / path.name).write_bytes(path.read_bytes())
        while logbook.rows_written < 12:
            await asyncio.sleep(0.01)
        await logbook.close()

    asyncio.run(run_once())
    assert not list(spool_dir.glob("*.spool"))
    for path in kept.iterdir():
        (spool_dir / path.name).write_bytes(path.read_bytes())

    async def restarted() -> LogBook:
        logbook = book(tmp_path, Spool(spool_dir))
        logbook.start()
        await logbook.close()
        return logbook

    logbook = asyncio.run(restarted())
    assert logbook.rows_replayed == 0 and logbook.rows_written == 0
    assert sorted(read_logs(tmp_path / "log")["__request_id"]) == sorted(r.request_id
                                                                          for r in rows)
    assert not list(spool_dir.glob("*.spool"))


def test_a_group_that_cannot_be_synced_is_refused_and_never_replayed(tmp_path, monkeypatch):
    import errno

    import pytest

    from service import spool as spool_module
    from service.spool import SpoolUnavailable

    now = datetime.now(UTC)
    spool_dir = tmp_path / "spool"
    real = spool_module.os.fdatasync
    calls = {"n": 0}

    def flaky(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second group's sync fails: its bytes were written
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(spool_module.os, "fdatasync", flaky)

    async def scenario() -> LogBook:
        logbook = book(tmp_path, Spool(spool_dir))
        logbook._stopping = True  # nothing is written: the spool alone holds the rows
        await logbook.append([row("ok-1", now, 1.0, None)])  # type: ignore[misc]
        with pytest.raises(SpoolUnavailable, match="feature log spool unavailable"):
            await logbook.append([row("refused", now, 1.0, None)])  # type: ignore[misc]
        assert logbook.spool is not None and "Input/output error" in (logbook.spool.last_error
                                                                      or "")  # /readyz: 503
        await logbook.append([row("ok-2", now, 1.0, None)])  # type: ignore[misc]
        assert logbook.spool.last_error is None
        assert logbook.depth == 2  # the refused row is not in the buffer either
        return logbook

    asyncio.run(scenario())
    rows, skipped = decode(b"".join(p.read_bytes() for p in sorted(spool_dir.glob("*.spool"))))
    assert [r.request_id for r in rows] == ["ok-1", "ok-2"] and skipped == 0
