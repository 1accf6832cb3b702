"""Schemathesis runs the app's own OpenAPI document against a real server process: no server
error, and every answer (status code, content type, headers, body) is one the document
describes. The schemas forbid extra keys, so a document that drifts from its schema fails.

Cases come from each operation's Hypothesis strategy, driven here directly: schemathesis's
pytest plugin does not run under pytest 9.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

pytest_plugins = ["tests.conftest_serve"]

EXAMPLES = 30  # per operation, both valid and invalid requests
# What the issue asks: no server error, and every answer as documented. Not asked (and not
# true of a free-text parameter such as span=abc): that every schema-valid request succeeds.
# A 503 is an answer, not an error, where the document says so (no model could start, a
# failed health gate, a busy state file): `documented_503` below stands for
# not_a_server_error, which counts every 5xx.
CHECKS = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def test_every_route_answers_as_its_openapi_document_says(serve):
    server = serve()
    server.post("/health/probe")  # models with history: documents with every field filled
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same cases every run: a red CI is reproducible
            database=None,
        )
        def check(case):  # type: ignore[no-untyped-def]
            response = case.call()
            documented = case.operation.definition.raw["responses"]
            if response.status_code >= 500:
                assert response.status_code == 503 and "503" in documented, (
                    f"{case.operation.label}: {response.status_code} {response.text[:300]}"
                )
            case.validate_response(response, checks=CHECKS)

        check()
        tested.append(operation.label)
    assert sorted(tested) == [
        "GET /",
        "GET /fallbacks",
        "GET /health",
        "GET /livez",
        "GET /metrics",
        "GET /readyz",
        "POST /health/probe",
        "POST /interviews/start",
    ]
