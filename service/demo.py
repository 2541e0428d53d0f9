"""The serving half of `skewless demo`: start the predictor, score recent events, stop cleanly."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from service.app import create_app, serve_in_thread
from skewless.embedded_redis import redis_for
from skewless.settings import Settings


def sample_requests(settings: Settings, fields: list[str], n: int) -> list[dict[str, Any]]:
    """Recent events from the raw data, the largest amounts first (the interesting ones)."""
    events = pd.read_parquet(settings.resolved_events_path, columns=fields)
    recent = events.tail(5_000)
    picked = pd.concat([recent.nlargest(n // 2, "amount") if "amount" in recent else recent[:0],
                        recent.tail(n)]).drop_duplicates().head(n)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in picked.to_dict("records")]


def run_serving_demo(settings: Settings, console: Console, n: int = 6) -> dict[str, Any]:
    with redis_for(settings) as address:
        app = create_app(settings.model_copy(update={"redis": address}))
        started = time.perf_counter()
        started_at = datetime.now(UTC)
        spec = app.state.spec
        # The event id rides along, so the served log can be joined with later labels.
        fields = list(dict.fromkeys([settings.event_id_column, *(
            f.name for f in (*spec.entity_keys, *spec.request_fields))]))
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as http:
            ready = http.get("/readyz")
            if ready.status_code != 200:
                raise RuntimeError(f"predictor not ready: {ready.json()['detail']}")
            rows = sample_requests(settings, fields, n)
            table = Table(title=f"Scored by {url}/predict?explain=true")
            for name in [*fields, "score", "flag", "main reason (log-odds)"]:
                table.add_column(name, overflow="fold")
            timings = []
            for row in rows:
                response = http.post("/predict", params={"explain": "true"}, json=row)
                response.raise_for_status()
                body = response.json()
                timings.append(response.headers["server-timing"])
                name, value = max(((k, v) for k, v in body["contributions"].items()
                                   if k != "bias"), key=lambda kv: abs(kv[1]))
                table.add_row(*(str(row[f]) for f in fields), f"{body['score']:.4f}",
                              "yes" if body["decision"] else "no",
                              f"{name.split('__', 1)[1]} {value:+.2f}")
            batch = http.post("/predict/batch", json={"rows": rows})
            batch.raise_for_status()
            console.print(table)
            console.print(f"Server-Timing of the last request: {timings[-1]}")
            console.print(f"one /predict/batch of {len(rows)} rows: "
                          f"{batch.headers['server-timing']}")
            console.print(f"while it ran: {url}/docs (OpenAPI), {url}/catalog, {url}/readyz, "
                          f"{url}/metrics")
        predictor = app.state.predictor
        console.print(
            f"predictor stopped cleanly after {time.perf_counter() - started:.1f} s; "
            f"{predictor.logbook.rows_written} served rows logged to {predictor.logbook.directory}"
        )
        console.print("keep it running with: [bold]skewless serve[/] (port "
                      f"{settings.api_port}, SKEWLESS_API_PORT)")
        return {"url": url, "logged_rows": predictor.logbook.rows_written,
                "started_at": started_at, "log_dir": predictor.logbook.directory}
