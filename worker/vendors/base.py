"""The connector interface every vendor implements, and the HTTP plumbing they share.

A connector is built once per vendor instance (``vendors:`` in the config) and owns one
pooled ``httpx.Client`` with explicit timeouts and limits. ``apply(op, target, fields)``
validates the fields against the op's marshmallow schema, then calls the vendor; every
failure leaves as a :mod:`worker.vendors.errors` exception. The client keeps no cookies
and caches joined URLs (:mod:`worker.vendors.http`). Redirects are never followed:
a followed 3xx turns a PUT/POST into a GET that "succeeds".
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import httpx
from marshmallow import Schema, ValidationError, fields

from worker.metrics import observe_call
from worker.redact import Redactor
from worker.vendors import errors
from worker.vendors.http import VendorClient

EXCERPT_CHARS = 500
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 2.0
    max_delay: float = 600.0


@dataclass(frozen=True)
class CircuitPolicy:
    """Open the vendor's circuit after ``failures`` transient failures in a row."""

    failures: int = 5
    cooldown: float = 30.0


@dataclass(frozen=True)
class VendorInstance:
    """One configured vendor: what a connector is built from (plain data, from config)."""

    name: str
    kind: str
    base_url: str
    auth: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    rate_limit: tuple[int, float] | None = None  # (count, per seconds)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    circuit: CircuitPolicy = field(default_factory=CircuitPolicy)
    timeout: float = 10.0
    max_in_flight: int = 5  # this process's connection pool
    concurrency: int | None = None  # calls in flight across all workers (worker.inflight)


class NoAuth(Schema):
    pass


class Connector:
    """Base of the per-vendor connectors; subclasses set the class attributes and ops."""

    kind: ClassVar[str]
    #: op name -> marshmallow schema of the fields that op accepts
    ops: ClassVar[Mapping[str, type[Schema]]] = {}
    #: per op, the kind of record it changes, for a vendor whose ops change records of
    #: different kinds whose ids may coincide (see :meth:`record_key`)
    record_kinds: ClassVar[Mapping[str, str]] = {}
    #: schema of the ``auth:`` block in the vendor's config
    auth_schema: ClassVar[type[Schema]] = NoAuth
    #: schema of the ``options:`` block (vendor-specific switches)
    options_schema: ClassVar[type[Schema]] = NoAuth
    #: how the target id must look (a schema field); ints for most vendors
    target_field: ClassVar[fields.Field] = fields.String(required=True)

    def __init__(self, instance: VendorInstance, transport: httpx.BaseTransport | None = None):
        self.instance = instance
        self.name = instance.name
        self.http = VendorClient(
            base_url=instance.base_url.rstrip("/"),
            timeout=httpx.Timeout(instance.timeout, connect=min(5.0, instance.timeout)),
            limits=httpx.Limits(
                max_connections=instance.max_in_flight,
                max_keepalive_connections=instance.max_in_flight,
            ),
            follow_redirects=False,
            transport=transport,
            headers={"User-Agent": "switchboard/0.1"},
        )
        self._schemas: dict[str, Schema] = {}

    # -- the public entry points ------------------------------------------------------
    def apply(self, op: str, target: str, fields_: Mapping[str, Any]) -> dict[str, Any]:
        """Validate, then apply ``fields_`` to ``target`` through ``op``."""
        if op not in self.ops:
            raise errors.Rejected(f"{self.kind} has no op {op!r}")
        return self.apply_clean(op, self.validate_target(target), self.validate_fields(op, fields_))

    def apply_clean(
        self, op: str, clean_target: Any, clean_fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply fields that :meth:`validate_fields` / :meth:`validate_target` returned."""
        method = getattr(self, f"op_{op}")
        return method(clean_target, clean_fields)  # type: ignore[no-any-return]

    @classmethod
    def record_key(cls, op: str, target: str) -> str:
        """The record ``op`` changes, as ordering keys it (the per-record lock and field
        versions): the target, or ``<kind>:<target>`` for an op of a declared kind."""
        kind = cls.record_kinds.get(op)
        return f"{kind}:{target}" if kind else target

    def validate_fields(self, op: str, fields_: Mapping[str, Any]) -> dict[str, Any]:
        schema = self._schemas.get(op)
        if schema is None:  # one instance per op: building a Schema deep-copies its fields
            schema = self._schemas[op] = self.ops[op]()
        try:
            return schema.load(dict(fields_))  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise errors.InvalidFields(
                f"fields rejected by {self.kind}.{op}: {exc.messages}"
            ) from exc

    def validate_target(self, target: Any) -> Any:
        try:
            return self.target_field.deserialize(target)
        except ValidationError as exc:
            raise errors.InvalidFields(f"target {target!r}: {exc.messages}") from exc

    def close(self) -> None:
        self.http.close()

    # -- auth refresh, shared by session/token vendors ----------------------------------
    def refresh_auth(self) -> None:
        """Drop the cached session/token so the next call obtains a new one."""

    def with_auth_retry(
        self, call: Callable[[], T], stale: Callable[[errors.VendorError], bool] | None = None
    ) -> T:
        """Run ``call``; on :class:`AuthExpired` (or an error ``stale`` says may be a dead
        session too) refresh once and run it again.

        A second expiry means the credentials themselves are refused: ``AuthFailed``.
        """
        try:
            return call()
        except errors.AuthExpired:
            pass
        except errors.VendorError as exc:
            if stale is None or not stale(exc):
                raise
        self.refresh_auth()
        try:
            return call()
        except errors.AuthExpired as exc:
            raise errors.AuthFailed(
                f"{self.name}: credentials refused after a refresh",
                status=exc.status,
                excerpt=exc.excerpt,
            ) from exc

    # -- shared HTTP plumbing ---------------------------------------------------------
    def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request; transport failures, 3xx, 408, 429 and 5xx become errors.

        Other 4xx answers are returned for the connector to classify (vendors differ).
        Every error leaving here is already scrubbed of this connector's secrets.
        """
        try:
            return self._send(method, url, **kwargs)
        except errors.VendorError as exc:
            raise self.scrub(exc)  # noqa: B904 - the cause is chained already

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        started = time.perf_counter()
        where = self.http.url(url)  # the whole URL: "calling /rest/..." named no host
        shown = where.copy_with(userinfo=b"") if where.userinfo else where  # no password
        try:
            response = self.http.request(method, where, **kwargs)
        except httpx.TimeoutException as exc:
            observe_call(self.name, None, time.perf_counter() - started)
            raise errors.Timeout(f"{self.name}: {type(exc).__name__} calling {shown}") from exc
        except httpx.RequestError as exc:  # transport, or an answer that cannot be decoded
            observe_call(self.name, None, time.perf_counter() - started)
            raise errors.Unavailable(f"{self.name}: {type(exc).__name__} calling {shown}") from exc
        observe_call(self.name, response.status_code, time.perf_counter() - started)
        _answers.status = response.status_code
        return self.check_common(response)

    # -- secrets never leave in an error ---------------------------------------------
    def secret_values(self) -> list[str]:
        """Credentials (and sessions/tokens) that must never appear in an error we raise."""
        return []

    def redact(self, text: str) -> str:
        """``text`` with every secret value blanked, in any form (however short)."""
        return Redactor(str(s) for s in self.secret_values() if s).text(text) or text

    def scrub(self, exc: errors.VendorError) -> errors.VendorError:
        """``exc`` with its message and excerpt redacted, should a vendor echo a secret."""
        exc.message = self.redact(exc.message)
        exc.args = (exc.message,)
        if exc.excerpt:
            exc.excerpt = self.redact(exc.excerpt)
        return exc

    def excerpt(self, response: httpx.Response) -> str:
        """The start of the vendor's answer, redacted *before* it is cut (no half secrets)."""
        return excerpt_of(response, self.redact)

    def check_common(self, response: httpx.Response) -> httpx.Response:
        status = response.status_code
        if status < 300 or (400 <= status < 500 and status not in (408, 429)):
            return response  # the common case: no excerpt built for an answer we keep
        if 300 <= status < 400:
            location = response.headers.get("location", "(none)")
            raise errors.Rejected(
                f"{self.name} answered {status} redirect to {location}; not followed",
                status=status,
                excerpt=self.excerpt(response),
            )
        if status == 429:
            raise errors.RateLimited(
                f"{self.name} rate limited the call",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                status=status,
                excerpt=self.excerpt(response),
            )
        if status == 408:
            raise errors.Timeout(
                f"{self.name} answered 408", status=status, excerpt=self.excerpt(response)
            )
        if status >= 500 and not self.handles_5xx:
            raise errors.Unavailable(
                f"{self.name} answered {status}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                status=status,
                excerpt=self.excerpt(response),
            )
        return response

    #: PortaBilling reports faults (even not-found) as HTTP 500; it classifies them itself
    handles_5xx: ClassVar[bool] = False
    #: the most HTTP requests one op can make (a login, the call, and both again after
    #: a refused session): a run's lock and lease are sized for that many
    max_requests: ClassVar[int] = 1
    #: calls in flight across all workers when the config sets no ``concurrency``
    concurrency: ClassVar[int | None] = None


_answers = threading.local()


def answered(reset: bool = False) -> int | None:
    """The HTTP status of the last vendor answer this thread got (a successful op's, for
    its attempt record); ``reset`` forgets it first (before an op)."""
    if reset:
        _answers.status = None
    return getattr(_answers, "status", None)


def excerpt_of(response: httpx.Response, redact: Callable[[str], str] = str) -> str:
    """The start of a vendor's answer, for dead letters (redacted again when stored)."""
    try:
        text = response.text
    except Exception:  # undecodable body: keep the record useful anyway
        return "<undecodable body>"
    return redact(text)[:EXCERPT_CHARS]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:  # delta-seconds (RFC 9110); a decimal is tolerated, some vendors send "1.5"
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
