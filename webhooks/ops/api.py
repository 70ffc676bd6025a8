"""The ops JSON API under ``/ops`` (DESIGN §4), bearer-token only.

Every request names its operator by the token it presents (:mod:`webhooks.ops.auth`);
that name is the *who* of the audit log. Errors are the usual JSON error bodies.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from marshmallow import Schema, ValidationError

from webhooks.errors import ApiError, BadRequest, Conflict, NotFound, Unauthorized
from webhooks.http_errors import error_response
from webhooks.ops import schemas, throttle
from webhooks.ops.auth import identify
from webhooks.ops.service import ConflictError, NotFoundError, Ops, OpsError
from webhooks.state import get_state

bp = Blueprint("ops_api", __name__, url_prefix="/ops")


def ops() -> Ops:
    state = get_state()
    redactor = state.dead_letters.redactor
    settings = state.settings
    return Ops(
        state.redis,
        state.rules,
        redactor,
        settings.event_ttl_seconds,
        settings.min_replicas,
        settings.replica_timeout,
    )


def tokens() -> dict[str, str]:
    return current_app.extensions["switchboard_ops_tokens"]  # type: ignore[no-any-return]


@bp.before_request
def _authenticate() -> None:
    client, address = get_state().redis, request.remote_addr or "unknown"
    throttle.check(client, address)  # 429 while this address has failed too often
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    who = identify(tokens(), presented.strip()) if scheme.lower() == "bearer" else None
    if who is None:
        throttle.failed(client, address)
        raise Unauthorized("a valid ops bearer token is required")
    g.ops_who = who


@bp.errorhandler(throttle.TooManyFailures)
def _too_many(exc: throttle.TooManyFailures) -> tuple[Response, int, dict[str, str]]:
    response, status = error_response(exc.status, exc.code, exc.message)
    return response, status, {"Retry-After": str(exc.retry_after)}


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="switchboard-ops"'
    return response


@bp.errorhandler(OpsError)
def _ops_error(exc: OpsError) -> tuple[Response, int]:
    err = translate(exc)
    return error_response(err.status, err.code, err.message)


def translate(exc: OpsError) -> ApiError:
    if isinstance(exc, NotFoundError):
        return NotFound(str(exc))
    if isinstance(exc, ConflictError):
        return Conflict(str(exc))
    return ApiError(str(exc))


def load(schema: Schema, data: Any) -> dict[str, Any]:
    try:
        return schema.load(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        fields = ", ".join(f"{k}: {' '.join(map(str, v))}" for k, v in _flat(exc.messages))
        raise BadRequest(f"invalid request ({fields})") from None


def _flat(messages: Any) -> list[tuple[str, Any]]:
    if isinstance(messages, dict):
        return [(k, v if isinstance(v, list) else [v]) for k, v in messages.items()]
    return [("_", messages if isinstance(messages, list) else [messages])]


def _args(schema: Schema) -> dict[str, Any]:
    """The query's arguments; one given empty (``?vendor=&limit=``, as a form sends it) is
    not given. A bulk replay's JSON body has no such leniency: there an empty filter must
    not widen the replay to every entry (:data:`webhooks.ops.schemas._GIVEN`)."""
    return load(schema, {k: v for k, v in request.args.items() if v != ""})


# -- dead letters ------------------------------------------------------------------------
@bp.get("/dead-letters")
def list_dead_letters() -> Response:
    args = _args(schemas.DeadLetterListArgs())
    page = ops().list(**args)
    return jsonify({"items": page.items, "next_cursor": page.next_cursor})


@bp.get("/dead-letters/<entry_id>")
def show_dead_letter(entry_id: str) -> Response:
    return jsonify(ops().entry(entry_id))


@bp.post("/dead-letters/<entry_id>/replay")
def replay_dead_letter(entry_id: str) -> tuple[Response, int]:
    result = ops().replay(entry_id, who=g.ops_who)
    # 202 either way (DESIGN): the replay is under way; "status" says whether this call
    # queued it or found it already queued by an earlier press
    return jsonify(result), 202


@bp.delete("/dead-letters/<entry_id>")
def discard_dead_letter(entry_id: str) -> tuple[str, int]:
    ops().discard(entry_id, who=g.ops_who)
    return "", 204


@bp.post("/dead-letters/replay")
def bulk_replay() -> tuple[Response, int, dict[str, str]]:
    if not request.is_json:
        raise BadRequest("send the filter as JSON, with Content-Type: application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # 60k "[" is within the size limit
        body = None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object (the filter)")
    args = load(schemas.BulkReplayRequest(), body)
    replay_all = args.pop("all")
    if not args and not replay_all:
        raise BadRequest('no filter given: send {"all": true} to replay every dead letter')
    service = ops()
    job = service.start_bulk_replay(args, who=g.ops_who)
    service.run_bulk_replay_in_thread(job["id"])
    location = url_for("ops_api.show_job", job_id=job["id"])
    return jsonify(job), 202, {"Location": location}


@bp.get("/jobs/<job_id>")
def show_job(job_id: str) -> Response:
    return jsonify(ops().job(job_id))


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str) -> Response:
    """Stop a bulk replay (409 if it already ended); the job as it is now."""
    return jsonify(ops().cancel_bulk_replay(job_id, who=g.ops_who))


@bp.get("/stats")
def stats() -> Response:
    return jsonify(ops().counts())


@bp.get("/audit")
def audit() -> Response:
    args = _args(schemas.AuditArgs())
    items = ops().audit(limit=args["limit"], action=args.get("action"), entry_id=args.get("id"))
    return jsonify({"items": items})


# -- events ------------------------------------------------------------------------------
@bp.get("/events/<source>/<path:event_id>")  # an id may hold "/" (hmac sources)
def show_event(source: str, event_id: str) -> Response:
    return jsonify(ops().event(source, event_id))


@bp.post("/events/<source>/<path:event_id>/replay")
def replay_event(source: str, event_id: str) -> tuple[Response, int]:
    result = ops().replay_event(source, event_id, who=g.ops_who)
    return jsonify(result), 202 if result["tasks"] else 200
