"""Errors the HTTP API answers with, each a status and a stable code.

Every one renders as ``{"error": {"code": ..., "message": ...}}``; messages never echo a
secret or a signature. Tree::

    ApiError
    ├── BadRequest (400)         malformed_json, malformed_payload, missing_event_id, bad_request
    ├── Unauthorized (401)       missing_signature, invalid_signature, stale_timestamp, unauthorized
    ├── NotFound (404)           unknown_source, not_found
    ├── RequestTimeout (408)     body_timeout
    ├── Conflict (409)           conflict
    ├── PayloadTooLarge (413)    payload_too_large
    └── Unavailable (503)        queue_unavailable
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class MalformedPayload(BadRequest):
    code = "malformed_payload"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class MissingSignature(Unauthorized):
    code = "missing_signature"


class InvalidSignature(Unauthorized):
    code = "invalid_signature"


class StaleTimestamp(Unauthorized):
    code = "stale_timestamp"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class RequestTimeout(ApiError):
    status = 408
    code = "body_timeout"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class Unavailable(ApiError):
    status = 503
    code = "queue_unavailable"
