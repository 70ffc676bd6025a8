"""Errors a vendor connector raises, each carrying the dead-letter code it maps to.

The tree, so a caller catches exactly the level it means::

    VendorError
    ├── RetryableError            -- worth another attempt after a backoff
    │   ├── Timeout               -- connect/read timeout, the vendor did not answer in time
    │   ├── Unavailable           -- network error, 5xx, a fault the vendor calls transient
    │   ├── RateLimited           -- 429 (and vendor equivalents): spends no attempt
    │   └── Unexpected            -- a connector raised something else (a bug, an answer it
    │                                did not expect): retried, so it ends ``exhausted``
    └── PermanentError            -- another attempt cannot succeed: dead letter at once
        ├── NotFound              -- the target record does not exist        (not_found)
        ├── Rejected              -- validation, permission, a 3xx, other 4xx (rejected)
        ├── AuthFailed            -- credentials refused even after a refresh (auth_failed)
        └── InvalidFields         -- rendered fields failed the op's schema  (invalid_fields)

``AuthExpired`` is internal to connectors: it means "refresh the session/token once and
try again"; a connector that cannot recover turns it into ``AuthFailed``.
Messages never contain credentials: connectors build them from status codes and vendor
error text only, and the dead-letter store redacts known secrets once more.
"""

from __future__ import annotations

from typing import Any


class VendorError(Exception):
    """Base of every connector failure. One no subclass names (none is raised) would be a
    ``rejected`` dead letter: DESIGN's codes are the only ones an entry carries."""

    code = "rejected"
    retryable = False

    def __init__(self, message: str, *, status: int | None = None, excerpt: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.excerpt = excerpt

    def __str__(self) -> str:
        return self.message


class RetryableError(VendorError):
    """A transient failure: retry with backoff until the vendor's max_attempts.
    ``retry_after``: the seconds the vendor asked us to wait (``Retry-After``), if any."""

    code = "exhausted"  # the code used when retries run out
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class Timeout(RetryableError):
    pass


class Unavailable(RetryableError):
    pass


class RateLimited(RetryableError):
    pass


class Unexpected(RetryableError):
    """Made by the runner from any other exception a connector raised: retried with backoff
    like a transient failure, then dead-lettered ``exhausted``. Without it such a task
    would run again every lease, with no attempt recorded, until its record expired."""


class UnknownVendor(RetryableError):
    """A task for a vendor this worker's config does not have: retried (the web may carry a
    newer config than this worker during a rollout), then dead-lettered ``unknown_vendor``."""

    code = "unknown_vendor"


class PermanentError(VendorError):
    """A failure another attempt cannot fix: the task becomes a dead letter."""

    code = "rejected"


class NotFound(PermanentError):
    code = "not_found"


class Rejected(PermanentError):
    code = "rejected"


class AuthFailed(PermanentError):
    code = "auth_failed"


class InvalidFields(PermanentError):
    code = "invalid_fields"


class AuthExpired(VendorError):
    """Session or token no longer valid: the connector refreshes it once, then retries."""

    code = "auth_failed"
