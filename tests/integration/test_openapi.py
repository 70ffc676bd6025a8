"""/openapi.json describes ingest, health and ops; schemathesis finds no 5xx against it."""

from __future__ import annotations

import re

import pytest

from tests.ops.support import OPS


def test_openapi_describes_ingest_health_and_ops(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/webhooks/{source}",
        "/healthz",
        "/readyz",
        "/ops/dead-letters",
        "/ops/dead-letters/{entry_id}",
        "/ops/dead-letters/{entry_id}/replay",
        "/ops/dead-letters/replay",
        "/ops/events/{source}/{event_id}",
        "/ops/events/{source}/{event_id}/replay",
        "/ops/audit",
        "/ops/jobs/{job_id}",
    ):
        assert path in doc["paths"], path
    params = {p["name"] for p in doc["paths"]["/ops/dead-letters"]["get"]["parameters"]}
    assert {"vendor", "rule", "source", "code", "since", "until", "limit", "cursor"} <= params
    assert "DeadLetter" in doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["opsToken"]["scheme"] == "bearer"


def test_every_route_but_the_pages_forms_is_in_the_document(app, client):
    # "OpenAPI 3 of everything here" (DESIGN): a route added without its entry fails here
    documented = set(client.get("/openapi.json").get_json()["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or (
            rule.endpoint.startswith("ops_page.") and rule.endpoint != "ops_page.index"
        ):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        assert path in documented, (rule.rule, rule.endpoint)


def test_metrics_say_their_content_type_once(client):
    content_type = client.get("/metrics").headers["Content-Type"]
    assert content_type.startswith("text/plain; version=") and content_type.count("charset") == 1


def test_schemathesis_finds_no_server_errors(app, redis, worker):
    # with a worker beating, /readyz is 200: its 503 (no worker) is by design, not a fault
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(case=op.as_strategy())
        def run(case) -> None:
            response = case.call(headers=OPS)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code))
            case.validate_response(response, checks=[not_a_server_error])

        run()
    assert failures == []
