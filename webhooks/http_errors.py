"""Turns every error into a JSON body (DESIGN §4): API errors, HTTP errors, and the rest.

An unexpected exception is logged with its traceback and answered as a generic 500
JSON body: no traceback, no exception text (it could hold data) reaches the client.
A Redis outage is a 503 so the sender retries; so is a write that too few replicas
confirmed (``SWITCHBOARD_MIN_REPLICAS``), with its own code.
"""

from __future__ import annotations

import logging

import redis as redis_lib
from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

from webhooks.errors import ApiError, Unavailable
from worker.replication import NotReplicated

log = logging.getLogger("switchboard.web")

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(NotReplicated)
    def _not_replicated(exc: NotReplicated) -> tuple[Response, int]:
        log.warning("not confirmed by replicas: %s", exc)
        return error_response(503, "not_replicated", f"{exc}; send it again")

    @app.errorhandler(redis_lib.RedisError)
    def _redis_down(exc: redis_lib.RedisError) -> tuple[Response, int]:
        log.warning("redis unavailable: %s", type(exc).__name__)
        err = Unavailable("the queue is unavailable; retry later")
        return error_response(err.status, err.code, err.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        message = exc.description or exc.name
        allowed = sorted(getattr(exc, "valid_methods", None) or [])
        if status == 405 and allowed:  # say what would work (RFC 9110: an Allow header)
            message = f"use {' or '.join(m for m in allowed if m not in ('HEAD', 'OPTIONS'))}"
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        if status == 413 and limit:  # a Content-Length over it: as a chunked body is told
            message = f"the body is over {limit - 1} bytes"
        response, status = error_response(status, HTTP_CODES.get(status, "http_error"), message)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
