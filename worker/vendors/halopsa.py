"""HaloPSA connector: ``update_client`` via ``POST /api/Client`` with OAuth2 client credentials.

``base_url`` is the instance root: the token endpoint is ``<base>/auth/token`` and the API
lives under ``<base>/api``.

Facts (see shared/vendors/halopsa.md; C = confirmed, I = inferred):
- C Token: ``POST /auth/token`` form body ``grant_type=client_credentials&client_id&
  client_secret&scope`` (scope default ``all``) -> ``{"access_token", "token_type",
  "expires_in"}``. The token is cached (one lock, so concurrent tasks fetch it once) until
  shortly before ``expires_in``.
- I Hosted instances need ``?tenant=<tenant>`` on the token URL: ``auth.tenant`` is
  optional and only sent when configured.
- I Bad client credentials -> 400/401 with an OAuth error body: ``auth_failed`` at once.
- C API calls send ``Authorization: Bearer <token>``; a 401 means the token is
  invalid/expired: drop it, fetch a new one once and retry; a second 401 -> ``auth_failed``.
- C Update body is a JSON array ``[{"id": <int>, ...fields}]``; fields ``name``,
  ``colour`` (hex ``#RRGGBB``), ``inactive``, ``notes``, ``toplevel_id``; 200/201 answers
  the saved client(s).
- I Unknown id -> 400/404 with a message: ``not_found`` when the message says "not found",
  else ``rejected``; validation -> 400 (``rejected``). 429 honours ``Retry-After`` (I).
- I Untested against a real instance: whether an unknown ``id`` is refused (as assumed)
  or silently creates a client. Batching several clients per call is possible (the body is
  an array) but not used: one task, one call.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from marshmallow import Schema, fields, validate

from worker.vendors import errors
from worker.vendors.base import Connector, VendorInstance, json_body
from worker.vendors.values import Text, WholeNumber

#: refresh this long before the vendor's expiry (capped to a tenth of short lifetimes)
EXPIRY_MARGIN = 30.0
#: lifetime assumed when the token answer has no usable ``expires_in``
DEFAULT_LIFETIME = 300.0
TOKEN_PATH = "/auth/token"
API_PREFIX = "/api"


class HaloAuth(Schema):
    client_id = fields.String(required=True, validate=validate.Length(min=1))
    client_secret = fields.String(required=True, validate=validate.Length(min=1))
    tenant = fields.String(load_default=None, allow_none=True)
    scope = fields.String(load_default="all")


class UpdateClient(Schema):
    name = Text(validate=validate.Length(min=1))
    colour = fields.String(
        validate=validate.Regexp(r"^#[0-9A-Fa-f]{6}$", error="must be a hex colour like #E83C4A")
    )
    inactive = fields.Boolean()
    notes = Text()
    toplevel_id = WholeNumber()


@dataclass(frozen=True)
class Token:
    value: str
    refresh_at: float  # time.monotonic() after which a new token is fetched


class HaloPSA(Connector):
    kind = "halopsa"
    ops: ClassVar = {"update_client": UpdateClient}
    auth_schema = HaloAuth
    target_field = WholeNumber(required=True)
    max_requests: ClassVar[int] = 4  # token, call; a new token, the call again

    def __init__(self, instance: VendorInstance, transport: httpx.BaseTransport | None = None):
        super().__init__(instance, transport)
        # tests and tools build VendorInstance by hand: apply the schema defaults here too
        self.auth = HaloAuth().load(dict(instance.auth))
        self._token: Token | None = None
        self._token_lock = threading.Lock()
        self._local = threading.local()  # the token each thread last sent

    # -- the op -------------------------------------------------------------------------
    def op_update_client(self, target: int, fields_: dict[str, Any]) -> dict[str, Any]:
        body = [{"id": target, **fields_}]
        response = self.with_auth_retry(lambda: self._api("POST", "/Client", json=body))
        saved = saved_id(response)
        if saved is not None and saved != target:  # C: it answers the client it saved
            raise errors.Rejected(
                f"{self.name} saved client {saved}, not {target}: "
                "an unknown id may have made a new client",
                status=response.status_code,
            )
        return {"status": response.status_code, "id": target}

    # -- token --------------------------------------------------------------------------
    def refresh_auth(self) -> None:
        """Forget the token this thread saw refused, unless another thread replaced it."""
        stale = getattr(self._local, "token", None)
        with self._token_lock:
            if stale is None or (self._token is not None and self._token.value == stale):
                self._token = None

    def access_token(self) -> str:
        """The cached bearer token, fetched (once, under the lock) when missing or stale."""
        with self._token_lock:
            token = self._token
            if token is None or time.monotonic() >= token.refresh_at:
                token = self._token = self._fetch_token()
            return token.value

    def _fetch_token(self) -> Token:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.auth["client_id"],
            "client_secret": self.auth["client_secret"],
            "scope": self.auth["scope"],
        }
        params = {"tenant": self.auth["tenant"]} if self.auth["tenant"] else None
        started = time.monotonic()
        response = self.send("POST", TOKEN_PATH, data=form, params=params)
        data = json_body(response)
        if not 200 <= response.status_code < 300:
            code = data.get("error") if isinstance(data, dict) else None
            # 400/401 is the OAuth refusal; another 4xx (404: wrong base_url) is named as such
            refused = response.status_code in (400, 401)
            what = "refused the client credentials" if refused else "answered"
            raise self.scrub(
                errors.AuthFailed(
                    f"{self.name}: token endpoint {what} "
                    f"({response.status_code} {code or 'no error code'})",
                    status=response.status_code,
                    excerpt=self.excerpt(response),
                )
            )
        value = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            # never excerpt a 2xx token answer: it may hold a token in an odd shape
            raise errors.AuthFailed(
                f"{self.name}: token endpoint answered {response.status_code} "
                "without an access_token (is base_url the instance root?)",
                status=response.status_code,
            )
        return Token(value, started + self._refresh_after(data.get("expires_in")))

    @staticmethod
    def _refresh_after(expires_in: Any) -> float:
        try:
            lifetime = float(expires_in)
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME
        if lifetime <= 0:
            lifetime = DEFAULT_LIFETIME
        return lifetime - min(EXPIRY_MARGIN, lifetime / 10)

    # -- API calls ----------------------------------------------------------------------
    def _api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self._local.token = self.access_token()
        headers = {"Authorization": f"Bearer {token}"}
        response = self.send(method, f"{API_PREFIX}{path}", headers=headers, **kwargs)
        self._raise_for_answer(response)
        return response

    def _raise_for_answer(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        message = vendor_message(response)
        detail = f"{self.name} answered {status}: {message or 'no message'}"
        kw: dict[str, Any] = {"status": status, "excerpt": self.excerpt(response)}
        if status == 401:
            raise self.scrub(errors.AuthExpired(detail, **kw))
        if status == 403:  # the API user lacks permission: a refresh cannot fix that
            raise self.scrub(errors.AuthFailed(detail, **kw))
        if status in (400, 404) and "not found" in message.lower():
            raise self.scrub(errors.NotFound(detail, **kw))
        raise self.scrub(errors.Rejected(detail, **kw))

    # -- keeping secrets out of errors ----------------------------------------------------
    def secret_values(self) -> list[str]:
        token = self._token
        found = [str(self.auth["client_secret"])]
        if token is not None:
            found.append(token.value)
        sent = getattr(self._local, "token", None)  # this thread's, if since replaced
        if sent:
            found.append(sent)
        return found


def saved_id(response: httpx.Response) -> int | None:
    """The ``id`` of the client an update answered (the object, or the first of an array);
    None when the answer does not say."""
    data = json_body(response)
    if isinstance(data, list) and data:
        data = data[0]
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def vendor_message(response: httpx.Response) -> str:
    """Halo's error text: a JSON ``message``/``error``/``title`` or the plain body."""
    data = json_body(response)
    if isinstance(data, dict):
        for key in ("message", "error_description", "error", "title", "detail"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])
        return ""
    if isinstance(data, str):
        return data[:200]
    text = response.text.strip()
    return "" if text.startswith("<") else text[:200]  # an HTML error page says nothing useful
