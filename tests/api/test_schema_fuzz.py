"""Property-based requests for every operation of the server's OpenAPI schema (schemathesis): whatever the body,
query or path, the answer is never a 5xx. A fresh server with no model and no hub access (a launch that gets as
far as fetching files is refused with 404), so no generated request can download or load anything."""

from __future__ import annotations

import pytest
import schemathesis
from api_helpers import start_server
from hypothesis import HealthCheck, given, settings

from vlserve.api.app import create_app
from vlserve.config import ServerConfig
from vlserve.errors import NotFound
from vlserve.serving.embedded import EmbeddedHost

EXAMPLES_PER_OPERATION = 40


def no_hub(resolved, **kwargs):
    raise NotFound("no model files in the fuzzing server")


@pytest.fixture(scope="module")
def fuzz_server(vlserve_home):
    server = start_server(create_app(ServerConfig(), host=EmbeddedHost(fetch_model=no_hub)))
    yield server
    server.stop()


def test_no_request_makes_a_server_error(fuzz_server):
    """Each operation of the schema gets EXAMPLES_PER_OPERATION generated requests (schemathesis' pytest plugin
    is not used: it does not load under this pytest)."""
    api = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    failures, calls = [], 0
    for result in api.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        @given(case=operation.as_strategy())
        def call(case) -> None:
            nonlocal calls
            calls += 1
            response = case.call(timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

        call()
    print(f"{calls} generated requests over {len(list(api.get_all_operations()))} operations")
    assert calls >= 300 and not failures, failures
