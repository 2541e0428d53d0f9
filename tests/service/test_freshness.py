"""The served values' ages: the predictor's histogram against ages computed from Redis.

The demo materialized into the private redis-server; the app served in a thread. For each
request, the event time Feast stored beside each view's values (``_ts:<view>`` in the
entity's hash) is read straight from Redis with Feast's own key encoding; the histogram's
``_count`` must grow by exactly the values served with an event time, and its ``_sum`` by
the ages — each within the request's own start and end. The objectives are exported from
the views' tags.
"""

from __future__ import annotations

import time

import httpx
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families

from skewless.feast_cli import run_feast
from tests.support.service_harness import ROW, app_in_thread

pytestmark = pytest.mark.redis
VIEWS = {"card_activity": ("card_id",), "card_profile": ("card_id",),
         "merchant_stats": ("merchant_id",)}


@pytest.fixture(scope="module")
def served(demo, redis_server, tmp_path_factory):
    redis_server.client().flushall()
    run_feast(demo.settings, "materialize", "2015-01-01T00:00:00",
              demo.cutoff.strftime("%Y-%m-%dT%H:%M:%S"))
    settings = demo.settings.model_copy(
        update={"feature_log_dir": tmp_path_factory.mktemp("freshness-log")})
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http, redis_server.client(), demo.store()


def stored_event_time(client, store, view: str, keys: dict[str, int]) -> float | None:
    """The view's event time in the entity's hash, as Feast's Redis store wrote it."""
    entity = EntityKey(join_keys=list(keys), entity_values=[
        Value(int64_val=v) for v in keys.values()])
    key = serialize_entity_key(
        entity, store.config.entity_key_serialization_version) + store.project.encode()
    raw = client.hget(key, f"_ts:{view}")
    if raw is None:
        return None
    stamp = Timestamp.FromString(raw)
    return stamp.seconds + stamp.nanos / 1e9


def age_series(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "skewless_feature_age_seconds":
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count")):
                    out[(sample.labels["view"], sample.name.rsplit("_", 1)[1])] = sample.value
    return out


def test_the_age_histogram_equals_ages_computed_from_redis(served, demo):
    http, client, store = served
    before = age_series(http.get("/metrics").text)
    txns = demo.data.transactions.tail(40)
    rows = [{**ROW, "card_id": int(t.card_id), "merchant_id": int(t.merchant_id)}
            for t in txns.itertuples()] + [{**ROW, "card_id": 999_999_999}]  # unknown card
    count = dict.fromkeys(VIEWS, 0)
    low = dict.fromkeys(VIEWS, 0.0)
    high = dict.fromkeys(VIEWS, 0.0)
    for row in rows:
        stamps = {view: stored_event_time(client, store, view, {k: row[k] for k in keys})
                  for view, keys in VIEWS.items()}
        started = time.time()
        assert http.post("/predict", json=row).status_code == 200
        ended = time.time()
        for view, stamp in stamps.items():
            if stamp is not None:
                count[view] += 1
                low[view] += started - stamp
                high[view] += ended - stamp
    after = age_series(http.get("/metrics").text)
    assert count["card_activity"] >= 40 and count["merchant_stats"] >= 40  # all but one
    for view in VIEWS:
        served_count = after[(view, "count")] - before.get((view, "count"), 0.0)
        served_sum = after[(view, "sum")] - before.get((view, "sum"), 0.0)
        assert served_count == count[view], view
        assert low[view] - 1e-3 <= served_sum <= high[view] + 1e-3, (view, served_sum)


def test_the_objectives_are_exported_from_the_views_tags(served):
    http, _, _ = served
    objectives = {s.labels["view"]: s.value
                  for family in text_string_to_metric_families(http.get("/metrics").text)
                  if family.name == "skewless_feature_freshness_objective_seconds"
                  for s in family.samples}
    assert objectives == {"card_activity": 30 * 3600.0, "merchant_stats": 30 * 3600.0}
