"""schemathesis against the service's own OpenAPI schema, on a real uvicorn process.

Every operation of /openapi.json gets generated requests (valid and invalid path, query and body values)
with an admin token, so authorisation lets every handler run. No response may be a 5xx, and a response
whose status code the schema declares must match its declared schema. ``GATEKEEPER_SCHEMATHESIS_EXAMPLES``
bounds the examples per operation (25 in CI).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from app.client import stow
from app.main import api_routes
from testkit.dicom_factory import make_series
from tests.conftest import Stack

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("GATEKEEPER_SCHEMATHESIS_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def api(stack_factory) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = stack_factory(worker=False)  # no worker: a generated training job must stay queued
    with stack.client("pacs") as c:  # something for the reads to find
        spec, blobs = make_series(3)
        assert stow(c, blobs).status_code == 200
        assert c.post(f"/series/{spec.series_uid}/complete").status_code == 200
    return stack


@pytest.fixture(scope="module")
def api_schema(api: Stack):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(f"{api.service.url}/openapi.json")


@schemathesis.check
def no_server_error(ctx, response, case) -> bool | None:  # type: ignore[no-untyped-def]
    """A 5xx fails, except /readyz's documented 503 "not ready" (this stack has no promoted scorer)."""
    if case.operation.path == "/readyz" and response.status_code == 503:
        return True
    return not_a_server_error(ctx, response, case)


# One test per operation, named by it. (schemathesis' own pytest fixture loader reads a pytest attribute that
# pytest 9 removed, so the strategies are drawn here with @given instead.)
# (a path converter, "{tag_path:path}", is "{tag_path}" in the schema)
OPERATIONS = [
    (method, route.path.replace(":path}", "}")) for route in api_routes() for method in sorted(route.methods or ())
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors_and_declared_responses(api: Stack, api_schema, method: str, path: str) -> None:  # type: ignore[no-untyped-def]
    operation = api_schema[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    token = {"Authorization": f"Bearer {api.tokens['admin']}"}

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate(headers=token, checks=[no_server_error, response_schema_conformance], timeout=30)

    check()
