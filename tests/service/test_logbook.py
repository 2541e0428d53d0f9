"""The served-feature log writer on its own: schema, date partitions, atomic files."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from service.logbook import LoggedRow, LogLayout, split_by_day, write_day_file
from tests.support.service_harness import read_logs


def layout() -> LogLayout:
    feast_schema = pa.schema([
        ("card_id", pa.int64()), ("amount", pa.float64()),
        ("v__f", pa.float64()), ("v__f__timestamp", pa.timestamp("s", tz="UTC")),
        ("v__f__status", pa.int32()),
        ("__log_timestamp", pa.timestamp("us", tz="UTC")), ("__log_date", pa.date32()),
        ("__request_id", pa.string()),
    ])
    return LogLayout.from_feast(feast_schema, ["card_id"], ["amount"], ["v__f"],
                                event_id="transaction_id")


def row(request_id: str, served: datetime, value: float | None, stamp: float | None,
        event_id: str | None = None) -> LoggedRow:
    return LoggedRow(request_id, int(served.timestamp() * 1e6), "m1", 0.25, event_id, (7,),
                     (12.5,),
                     (value,), (1 if value is not None else 3,), (stamp,))


def test_rows_across_midnight_land_in_two_date_partitions(tmp_path):
    before = datetime(2026, 11, 22, 23, 59, 59, 999_000, tzinfo=UTC)
    after = datetime(2026, 11, 23, 0, 0, 0, 1_000, tzinfo=UTC)
    rows = [row("a", before, 1.5, before.timestamp() - 3600.7, "t-1"),
            row("b", after, None, None)]
    lay = layout()
    files = [write_day_file(tmp_path, lay.schema, day, [part])
             for day, part in split_by_day(lay.to_batch(rows))]
    assert [f.parent.name for f in files] == ["__log_date=2026-11-22", "__log_date=2026-11-23"]
    assert not list(tmp_path.rglob(".*"))
    logged = read_logs(tmp_path).sort_values("__request_id").reset_index(drop=True)
    assert logged["__request_id"].tolist() == ["a", "b"]
    assert logged["v__f"].iloc[0] == 1.5 and logged["v__f"].isna().iloc[1]
    assert logged["v__f__status"].tolist() == [1, 3]
    # Feature times in whole seconds (Feast's schema), the log time to the microsecond.
    assert logged["v__f__timestamp"].iloc[0] == datetime(2026, 11, 22, 22, 59, 59, tzinfo=UTC)
    assert logged["__log_timestamp"].iloc[1] == after
    assert logged["model_version"].tolist() == ["m1", "m1"]
    assert logged["transaction_id"].iloc[0] == "t-1" and logged["transaction_id"].isna().iloc[1]


def test_an_event_id_that_is_already_a_key_gets_no_extra_column():
    lay = layout()
    keyed = LogLayout.from_feast(pa.schema(list(lay.schema)[:-3]), ["card_id"], ["amount"],
                                 ["v__f"], event_id="card_id")
    assert keyed.event_id_column is None and keyed.schema.names.count("card_id") == 1


def test_rows_the_schema_cannot_hold_are_dead_lettered_and_the_rest_written(tmp_path):
    """Invariant: rows written + rows dead-lettered = rows appended (the 2xx responses)."""
    import asyncio
    import json

    from service.logbook import LogBook

    now = datetime.now(UTC)
    good = [row(f"ok-{i}", now, float(i), now.timestamp()) for i in range(40)]
    bad = [row("too-big", now, 1.0, None)._replace(keys=(2**70,)),
           row("surrogate", now, 1.0, None, event_id="t-\ud800")]
    later = [row(f"later-{i}", now, 2.0, None) for i in range(5)]
    counted: list[int] = []

    async def scenario() -> LogBook:
        book = LogBook(tmp_path / "log", layout(), capacity=1000, flush_rows=1000,
                       flush_seconds=0.05, fallback_directory=tmp_path / "fallback",
                       dead_letter_directory=tmp_path / "dead", on_dead_letter=counted.append)
        book.start()
        book.append(good[:20] + bad[:1] + good[20:] + bad[1:])
        while book.depth:  # the writer goes on past the bad rows
            await asyncio.sleep(0.01)
        book.append(later)
        await book.close()
        return book

    book = asyncio.run(scenario())
    written = read_logs(tmp_path / "log")["__request_id"].tolist()
    assert sorted(written) == sorted(r.request_id for r in good + later)
    lines = [json.loads(line) for f in (tmp_path / "dead").glob("*.jsonl")
             for line in f.read_text().splitlines()]
    assert sorted(x["row"]["request_id"] for x in lines) == ["surrogate", "too-big"]
    assert all(x["error"] for x in lines)
    assert book.rows_written + book.rows_dead_lettered == len(good) + len(bad) + len(later)
    assert book.rows_dead_lettered == sum(counted) == 2
    assert not (tmp_path / "fallback").exists()


def test_a_failed_write_leaves_no_staging_file(tmp_path, monkeypatch):
    import errno

    import pytest

    from service import logbook

    def disk_full(table, fh, **_):
        fh.write(b"PAR1" + b"x" * 4096)  # part of a file, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logbook.pq, "write_table", disk_full)
    lay = layout()
    now = datetime.now(UTC)
    with pytest.raises(OSError, match="No space"):
        write_day_file(tmp_path, lay.schema, now.date(), [lay.to_batch([row("a", now, 1.0, None)])])
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_date_whose_file_fails_is_retried_alone_and_nothing_is_written_twice(tmp_path):
    """A batch across UTC midnight: the second date cannot be written at first; the first
    date's file is written once, the second's once its partition can be made."""
    import asyncio

    from service.logbook import LogBook

    before = datetime(2026, 11, 22, 23, 59, 59, tzinfo=UTC)
    after = datetime(2026, 11, 23, 0, 0, 1, tzinfo=UTC)
    rows = [row(f"b{i}", before, 1.0, None) for i in range(3)] + \
        [row(f"a{i}", after, 1.0, None) for i in range(2)]
    log = tmp_path / "log"
    log.mkdir()
    blocker = log / "__log_date=2026-11-23"
    blocker.write_text("not a directory")  # the second date's partition cannot be made

    async def scenario() -> LogBook:
        book = LogBook(log, layout(), capacity=100, flush_rows=100, flush_seconds=0.05,
                       fallback_directory=tmp_path / "fallback")
        book.start()
        book.append(rows)
        while book.rows_written < 3 or book.last_error is None:
            await asyncio.sleep(0.01)
        assert book.depth == 2  # only the failing date waits
        blocker.unlink()
        while book.depth:
            await asyncio.sleep(0.01)
        await book.close()
        return book

    book = asyncio.run(scenario())
    logged = read_logs(log)
    assert sorted(logged["__request_id"]) == sorted(r.request_id for r in rows)  # once each
    assert book.rows_written == 5
    assert len(list((log / "__log_date=2026-11-22").glob("*.parquet"))) == 1
    assert not [p for p in log.rglob(".*")]
