"""Every operation of the predictor's own OpenAPI, fuzzed against the real service (`make test-fuzz`).

Schemathesis draws valid and invalid requests from the schema the service publishes, sends
them over HTTP to the app served by uvicorn (a throwaway metadata database, a valid admin
token, so admin operations run past 401) and checks each answer: no 5xx, a documented status,
content type and body, and invalid data refused.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from skewless.registry import bootstrap_production
from tests.support.service_harness import app_in_thread

pytestmark = pytest.mark.redis

EXAMPLES = 200  # per operation and generation mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


@pytest.fixture(scope="module")
def served_api(demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    settings = demo.settings.model_copy(update={
        "feature_log_dir": root / "log", "database_url": f"sqlite:///{root / 'meta.db'}"})
    bootstrap_production(settings, demo.model.directory)
    with app_in_thread(settings) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        yield schema, {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}


def fuzz(operation, mode: GenerationMode, headers: dict[str, str]) -> bool:
    """Draw up to EXAMPLES requests of ``mode`` for ``operation``; the first failure raises.

    False when no request of that mode exists: an operation without parameters, or whose only
    parameters are path segments any text fits, has no invalid request to send.
    """

    # The token is part of every request (never mutated), so admin operations run past 401.
    @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        case.call_and_validate(checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        return False
    return True


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_every_operation_answers_as_documented(served_api, mode):
    schema, headers = served_api
    failures = {}
    nothing_to_send = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 10
    for operation in operations:
        try:
            if not fuzz(operation, mode, headers):
                nothing_to_send.append(operation)
        except Exception as exc:  # every operation is tried; all failures are reported
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:600]}"
    assert failures == {}
    # Every operation with a body or a query parameter got invalid requests (bad JSON values,
    # out-of-range or mistyped parameters, a parameter given twice).
    assert [op.label for op in nothing_to_send if len(op.body) or len(op.query)] == []
    if mode is GenerationMode.POSITIVE:
        assert nothing_to_send == []
