"""``GET /openapi.json``: the OpenAPI 3 document of ingest, health and ops (apispec +
the marshmallow schemas of :mod:`webhooks.ops.schemas`). Built once per app."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, current_app, jsonify

from webhooks.ops import schemas

bp = Blueprint("openapi", __name__)

ERROR = {"application/json": {"schema": "Error"}}


def _json(schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(content_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {content_type: {"schema": {"type": "string"}}}}


def _get(spec: APISpec, path: str, tag: str, summary: str, responses: dict[str, Any]) -> None:
    """A GET with no parameters (health, metrics, this document, the page)."""
    spec.path(
        path=path, operations={"get": {"tags": [tag], "summary": summary, "responses": responses}}
    )


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": ERROR}


def build_spec(with_ops: bool, version: str = "0.1.0") -> dict[str, Any]:
    spec = APISpec(
        title="Switchboard",
        version=version,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Signed webhooks in, ordered and retried vendor updates out."},
    )
    for name in (
        "Error",
        "IngestAnswer",
        "Health",
        "Readiness",
        "DeadLetterSummary",
        "DeadLetterPage",
        "DeadLetter",
        "ReplayResult",
        "Job",
        "EventDetail",
        "EventReplay",
        "AuditLog",
        "Counts",
    ):
        spec.components.schema(name, schema=getattr(schemas, name))
    spec.components.security_scheme("opsToken", {"type": "http", "scheme": "bearer"})

    spec.path(
        path="/webhooks/{source}",
        parameters=[_path("source", "configured source name")],
        operations={
            "post": {
                "tags": ["ingest"],
                "summary": "Receive a signed webhook",
                "description": "Verify, parse, store once, map through rules and queue. "
                "The body is the sender's own (Stripe, Standard Webhooks, HubSpot, HMAC).",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "202": _json("IngestAnswer", "accepted: every task is durably queued"),
                    "200": _json("IngestAnswer", "duplicate or ignored (no rule matched)"),
                    "400": _err("malformed body"),
                    "401": _err("bad or missing signature, stale timestamp"),
                    "404": _err("unknown source"),
                    "408": _err("the sender went silent mid-body (SWITCHBOARD_BODY_TIMEOUT)"),
                    "413": _err("body too large"),
                    "415": _err("unsupported media type"),
                    "503": _err(
                        "the queue is unavailable, or too few replicas confirmed the event "
                        "(SWITCHBOARD_MIN_REPLICAS): send it again"
                    ),
                },
            }
        },
    )
    _get(spec, "/healthz", "health", "Liveness", {"200": _json("Health", "the process answers")})
    _get(
        spec,
        "/readyz",
        "health",
        "Readiness: Redis reachable, config loaded, a worker beating",
        {
            "200": _json("Readiness", "ready"),
            "503": _json("Readiness", "not ready (detail says why)"),
        },
    )
    _get(
        spec,
        "/metrics",
        "health",
        "Prometheus metrics",
        {"200": _text("text/plain", "Prometheus text format")},
    )
    _get(
        spec,
        "/openapi.json",
        "health",
        "This document (OpenAPI 3)",
        {"200": _json({"type": "object"}, "the OpenAPI document")},
    )
    if with_ops:
        _ops_paths(spec)
        _get(
            spec,
            "/ops/",
            "ops",
            "The ops web page (HTML; signs in with the ops token)",
            {
                "200": _text("text/html", "the dead-letter list"),
                "302": {"description": "to /ops/login when not signed in"},
            },
        )
    return spec.to_dict()


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "in": "path",
        "name": name,
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _ops_paths(spec: APISpec) -> None:
    secured = {"security": [{"opsToken": []}], "tags": ["ops"]}
    unauthorized = _err("missing or wrong ops token")
    too_many = _err(
        "this address failed too often; wait Retry-After seconds (code too_many_failures)"
    )
    not_found = _err("no such dead letter / event / job")
    unconfirmed = _err(
        "Redis unavailable, or done on the master but not confirmed by enough replicas "
        "(SWITCHBOARD_MIN_REPLICAS): safe to send again"
    )
    bad = _err("invalid query or body")
    entry_id = _path("entry_id", "dead-letter id (its task's id)")
    spec.path(
        path="/ops/dead-letters",
        operations={
            "get": {
                **secured,
                "summary": "Dead letters, newest first, filtered, cursor-paged",
                "parameters": [{"in": "query", "schema": schemas.DeadLetterListArgs}],
                "responses": {
                    "200": _json("DeadLetterPage", "a page"),
                    "400": bad,
                    "401": unauthorized,
                    "429": too_many,
                },
            }
        },
    )
    spec.path(
        path="/ops/dead-letters/replay",
        operations={
            "post": {
                **secured,
                "summary": "Replay every dead letter matching a filter (a job)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": schemas.BulkReplayRequest}},
                },
                "responses": {
                    "202": {
                        **_json("Job", "job started; progress at the Location"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "400": bad,
                    "401": unauthorized,
                    "429": too_many,
                },
            }
        },
    )
    spec.path(
        path="/ops/dead-letters/{entry_id}",
        parameters=[entry_id],
        operations={
            "get": {
                **secured,
                "summary": "One dead letter in full: task, rule, event, every attempt",
                "responses": {
                    "200": _json("DeadLetter", "the entry"),
                    "401": unauthorized,
                    "429": too_many,
                    "404": not_found,
                },
            },
            "delete": {
                **secured,
                "summary": "Discard (recorded in the audit log)",
                "responses": {
                    "204": {"description": "discarded"},
                    "401": unauthorized,
                    "429": too_many,
                    "404": not_found,
                    "503": unconfirmed,
                },
            },
        },
    )
    spec.path(
        path="/ops/dead-letters/{entry_id}/replay",
        parameters=[entry_id],
        operations={
            "post": {
                **secured,
                "summary": "Replay one dead letter (idempotent: queued once)",
                "responses": {
                    "202": _json(
                        "ReplayResult",
                        "under way: status queued (by this call) or already_replaying "
                        "(an earlier press queued it; nothing queued again)",
                    ),
                    "401": unauthorized,
                    "429": too_many,
                    "404": not_found,
                    "409": _err("cannot be replayed (event expired, rule gone)"),
                    "503": unconfirmed,
                },
            }
        },
    )
    spec.path(
        path="/ops/jobs/{job_id}",
        parameters=[_path("job_id", "bulk replay job id")],
        operations={
            "get": {
                **secured,
                "summary": "Progress of a bulk replay",
                "responses": {
                    "200": _json("Job", "the job"),
                    "401": unauthorized,
                    "429": too_many,
                    "404": not_found,
                },
            },
            "delete": {
                **secured,
                "summary": "Cancel a bulk replay: a running one stops after the entry at "
                "hand (state cancelling, then cancelled); entries not reached stay as they are",
                "responses": {
                    "200": _json("Job", "the job, as it is now"),
                    "401": unauthorized,
                    "429": too_many,
                    "404": not_found,
                    "409": _err("the job has already ended"),
                },
            },
        },
    )
    spec.path(
        path="/ops/stats",
        operations={
            "get": {
                **secured,
                "summary": "Dead-letter counts per vendor and code",
                "responses": {"200": _json("Counts", "counts"), "401": unauthorized},
            }
        },
    )
    spec.path(
        path="/ops/audit",
        operations={
            "get": {
                **secured,
                "summary": "Audit log of replays and discards, newest first",
                "parameters": [{"in": "query", "schema": schemas.AuditArgs}],
                "responses": {
                    "200": _json("AuditLog", "records"),
                    "400": bad,
                    "401": unauthorized,
                    "429": too_many,
                },
            }
        },
    )
    source = _path("source", "source name")
    event_id = _path("event_id", "event id (URL-encoded; it may hold /)")
    spec.path(
        path="/ops/events/{source}/{event_id}",
        parameters=[source, event_id],
        operations={
            "get": {
                **secured,
                "summary": "A stored event, its tasks and each task's state",
                "responses": {
                    "200": _json("EventDetail", "the event"),
                    "401": unauthorized,
                    "429": too_many,
                    "404": not_found,
                },
            }
        },
    )
    spec.path(
        path="/ops/events/{source}/{event_id}/replay",
        parameters=[source, event_id],
        operations={
            "post": {
                **secured,
                "summary": "Map the stored event again with the current rules and queue it",
                "responses": {
                    "202": _json("EventReplay", "queued"),
                    "200": _json("EventReplay", "no rule matches it now"),
                    "401": unauthorized,
                    "429": too_many,
                    "404": not_found,
                    "409": _err("a task of this event is still in flight"),
                    "503": unconfirmed,
                },
            }
        },
    )


@bp.get("/openapi.json")
def openapi() -> Response:
    doc = current_app.extensions.get("switchboard_openapi")
    if doc is None:
        with_ops = "ops_api" in current_app.blueprints
        doc = current_app.extensions["switchboard_openapi"] = build_spec(with_ops)
    return jsonify(doc)
