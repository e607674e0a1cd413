"""Property-based fuzzing of every operation in the app's own OpenAPI document (schemathesis).

Bounded so it stays well under a minute: a few examples per operation, no deadline, deterministic
(derandomize) so that a failure reproduces. Asserts no 5xx and that status codes, content types and
bodies conform to the documented schema (declared `responses=`).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# Operations are listed at collection time from a throw-away app (building the OpenAPI document needs
# no database); the calls go to the test client's app.
PATHS = create_app().openapi()["paths"]
# Negative cases need something to break (a free-form string path id cannot be invalid): operations
# without a body or non-path parameters get positive cases only.
OPERATIONS = [
    (method.upper(), path, mode)
    for path, item in PATHS.items()
    for method, spec in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE
    or spec.get("requestBody")
    or any(param["in"] != "path" for param in spec.get("parameters", []))
]


@pytest.mark.parametrize(
    ("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS]
)
def test_api_conforms_to_its_schema(
    client: TestClient, auth_headers: dict[str, str], method: str, path: str, mode: GenerationMode
) -> None:
    api = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operation = api[path][method]
    # Invalid input must be refused cleanly (a documented 4xx), never crash; valid input must also
    # produce bodies that match the response models.
    checks = CHECKS if mode is GenerationMode.POSITIVE else CHECKS[:3]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(headers=auth_headers, checks=checks)

    run()
