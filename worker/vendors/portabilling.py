"""PortaOne PortaBilling (JSON "REST" API) connector: ``update_customer``, ``update_account``.

Facts (see shared/vendors/portabilling.md; C = confirmed, I = inferred):

- C Every call is ``POST /rest/<Service>/<method>`` with two JSON documents, ``auth_info``
  and ``params``: form-encoded (each a form field holding a JSON string; every release) or
  one JSON body (newer releases). ``options.content_type`` picks ``form`` (default) or
  ``json``.
- C ``POST /rest/Session/login`` with ``params={"login", "token"|"password"}`` answers
  ``{"session_id"}``; later calls send ``auth_info={"session_id"}``. We log in once per
  connector instance and reuse the session. I: the login call carries no ``auth_info``.
- C Failures are HTTP 500 with ``{"faultcode", "faultstring"}``; an expired session is
  one of them. I: fault codes are classified by substring (:func:`classify_fault`):
  ``not_found`` -> NotFound, ``auth`` -> log in again once then AuthFailed, ``Client.``
  -> Rejected, any other 500 -> log in again and call once more (C: an expired session
  is *a* 500 fault, its code is I; n8n and PortaOne's MCP server re-log in on any), then
  Unavailable (retried). 502/503/504 and network errors are
  retried; 3xx/408/429 are handled by the base class.
- C ``update_customer``: ``params={"customer_info": {"i_customer", ...}}``, only the fields
  sent change; field names, types and allowed values below; booleans travel as 1/0 and
  datetimes as ``YYYY-MM-DD HH:MM:SS`` UTC. I: the common CustomerInfo contact fields
  (``email``, ``firstname``...) -- accepted as plain strings, no length limits known.
- I ``update_account``: ``params={"account_info": {"i_account", ...}}`` with the AccountInfo
  fields listed in the vendor file; enums as for customers.

Secrets (login, token, password, session id) never appear in an error message or
excerpt: every vendor text passes through :meth:`PortaBilling.redact` first, in case the
server echoes the request back.
"""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import UTC, date, datetime
from typing import Any, ClassVar

import httpx
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from worker.times import to_epoch
from worker.vendors import errors
from worker.vendors.base import Connector, json_body, parse_retry_after
from worker.vendors.values import Text, WholeNumber

WIRE_DATETIME = "%Y-%m-%d %H:%M:%S"


# -- field types: each loads a config/template value into its wire form ------------------
class WireFlag(fields.Boolean):
    """A boolean that travels as 1/0 (C: the community node's ``prepareBody``)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:  # type: ignore[override]
        return int(bool(super()._deserialize(value, attr, data, **kwargs)))


MIN_UNIX_TIME = 1e9  # 2001-09-09: smaller numbers are not taken as unix times


class WireDateTime(fields.Field):
    """A datetime sent as ``YYYY-MM-DD HH:MM:SS`` in UTC (C).

    Accepts ``datetime``/``date`` objects, ISO 8601 strings (``T`` or space, optional
    offset or ``Z``) and unix times (seconds or milliseconds, as Stripe's ``created`` and
    HubSpot's ``occurredAt``: a template cannot convert them itself). A value without an
    offset is taken as UTC already, which is how the API itself reads it (C: "date-time
    attributes in UTC by default").
    """

    default_error_messages = {"invalid": "Not a valid datetime (want YYYY-MM-DD HH:MM:SS)."}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        moment = _to_datetime(value)
        if moment is None:
            raise self.make_error("invalid")
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return moment.strftime(WIRE_DATETIME)


def _to_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value.strip())
    try:  # unix time, as Stripe and HubSpot give it (s, ms, ...), or a string of digits
        seconds = to_epoch(value)
    except ValueError:
        return None
    if seconds < MIN_UNIX_TIME:  # 2024 is a year, not 33 minutes into 1970
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


class CountryCode(fields.String):
    """ISO 3166-1 alpha-2 (C); lower case is accepted and sent upper case.

    Only the shape is checked (two letters); PortaBilling itself refuses unknown codes.
    """

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip().upper()
        if len(text) != 2 or not text.isascii() or not text.isalpha():
            raise self.make_error("invalid")
        return text


def _choice(*allowed: str) -> fields.String:
    return fields.String(validate=validate.OneOf(allowed))


def _text(max_len: int | None = None) -> fields.String:
    return Text(validate=validate.Length(max=max_len) if max_len else None)


def _number() -> fields.Float:
    # Float refuses NaN/inf by default; numeric strings from templates are accepted.
    return fields.Float()


def _id() -> fields.Integer:
    return WholeNumber(minimum=0)


BILL_STATUS = ("O", "S", "C", "E")  # C: open, suspended, closed, exported
YES_NO = ("Y", "N")


class UpdateCustomer(Schema):
    """CustomerInfo fields ``update_customer`` may change (C unless marked I)."""

    name = _text()
    companyname = _text(100)
    baddr1 = _text(41)
    address_line_2 = _text(167)
    city = _text(31)
    country = CountryCode()
    cont1 = _text(120)
    cont2 = _text(120)
    bcc = _text(99)
    note = _text()
    api_token = fields.String(validate=validate.Regexp(r"^[0-9A-Fa-f-]{36}$"))
    balance = _number()
    credit_limit = _number()
    credit_limit_until = WireDateTime()
    credit_exceed = WireFlag()
    discount_rate = _number()
    bill_status = _choice(*BILL_STATUS)
    blocked = _choice(*YES_NO)
    bill_suspension_delayed = WireFlag()
    balance_transfer_allowed = _choice(*YES_NO)
    callshop_enabled = _choice(*YES_NO)
    bp_charge_cc = _choice("Y", "N", "")
    billing_lock = _choice("N", "C", "F")
    # C names, I types: the source lists them without their values, so any string goes.
    send_invoices = _text()
    send_statistics = _text()
    deactivate_on = WireDateTime()
    iso_4217 = fields.String(validate=validate.Regexp(r"^[A-Z]{3}$"))
    i_customer_class = _id()
    i_billing_period = _id()
    i_time_zone = _id()
    i_parent = _id()
    i_rep = _id()
    i_lang = _text()  # C name; PortaBilling language ids are codes like "en" (I)
    # I: common CustomerInfo fields not in the community node's list; limits unknown.
    email = _text()
    firstname = _text()
    lastname = _text()
    midinit = _text()
    phone1 = _text()
    phone2 = _text()
    faxnum = _text()
    state = _text()
    zip = _text()
    baddr2 = _text()
    baddr3 = _text()
    baddr4 = _text()
    baddr5 = _text()
    refnum = _text()


class UpdateAccount(Schema):
    """AccountInfo fields ``update_account`` may change (I: the whole list, see docstring)."""

    blocked = _choice(*YES_NO)
    bill_status = _choice(*BILL_STATUS)
    credit_limit = _number()
    email = _text()
    baddr1 = _text(41)
    city = _text(31)
    zip = _text()
    country = CountryCode()
    note = _text()


class PortaAuth(Schema):
    """``login`` and exactly one of ``token`` (API token) or ``password`` (C)."""

    login = fields.String(required=True, validate=validate.Length(min=1))
    token = fields.String(validate=validate.Length(min=1))
    password = fields.String(validate=validate.Length(min=1))

    @validates_schema
    def _one_secret(self, data: dict[str, Any], **kwargs: Any) -> None:
        given = [key for key in ("token", "password") if key in data]
        if len(given) != 1:
            raise ValidationError("give exactly one of token or password", "_schema")


class PortaOptions(Schema):
    content_type = fields.String(load_default="form", validate=validate.OneOf(("form", "json")))


# -- fault classification: pure, so unit tests need no server --------------------------
def classify_fault(faultcode: str | None) -> type[errors.VendorError]:
    """The error a 500 fault maps to, by substring of its code (I, vendor file).

    Checked in the vendor file's order: ``not_found`` before ``auth`` before ``Client.``,
    so ``Client.Customer.customer_not_found`` is still a not-found.
    """
    code = faultcode or ""
    if "not_found" in code:
        return errors.NotFound
    if "auth" in code.lower():
        return errors.AuthExpired
    if code.startswith("Client."):
        return errors.Rejected
    return errors.Unavailable


def classify_status(status: int) -> type[errors.VendorError] | None:
    """The error for a non-2xx status that carries no usable fault body; None on 2xx."""
    if 200 <= status < 300:
        return None
    if status == 401:  # I: a proxy or a bearer-token release; worth one fresh login
        return errors.AuthExpired
    if status >= 500:
        return errors.Unavailable
    return errors.Rejected


def fault_of(data: Any) -> tuple[str, str] | None:
    """``(faultcode, faultstring)`` of a fault body, or None if it is not one."""
    if isinstance(data, dict) and isinstance(data.get("faultcode"), str):
        return data["faultcode"], str(data.get("faultstring", ""))
    return None


class PortaBilling(Connector):
    kind = "portabilling"
    ops: ClassVar = {"update_customer": UpdateCustomer, "update_account": UpdateAccount}
    # i_customer and i_account are separate numberings: customer 1001 is not account 1001
    record_kinds: ClassVar = {"update_customer": "customer", "update_account": "account"}
    auth_schema = PortaAuth
    options_schema = PortaOptions
    target_field = WholeNumber(required=True)
    #: every PortaBilling fault is an HTTP 500, not-found and bad session included
    handles_5xx: ClassVar[bool] = True
    max_requests: ClassVar[int] = 4  # login, call; a new login, the call again
    concurrency: ClassVar[int | None] = 5  # vendor file: "default 5 in flight"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session_lock = threading.Lock()
        self._session_id: str | None = None
        # the session each thread last used, so a refresh drops only a stale session
        self._local = threading.local()

    # -- ops ----------------------------------------------------------------------------
    def op_update_customer(self, target: int, fields_: dict[str, Any]) -> dict[str, Any]:
        params = {"customer_info": {"i_customer": target, **fields_}}
        answer = self.call("Customer", "update_customer", params)
        return {"i_customer": answer.get("i_customer", target)}

    def op_update_account(self, target: int, fields_: dict[str, Any]) -> dict[str, Any]:
        params = {"account_info": {"i_account": target, **fields_}}
        answer = self.call("Account", "update_account", params)
        return {"i_account": answer.get("i_account", target)}

    # -- session ------------------------------------------------------------------------
    def session_id(self) -> str:
        """The shared session, logging in first if there is none (one login at a time)."""
        with self._session_lock:
            if self._session_id is None:
                self._session_id = self._login()
            return self._session_id

    def refresh_auth(self) -> None:
        """Forget the session this thread saw fail, unless another thread replaced it."""
        stale = getattr(self._local, "session_id", None)
        with self._session_lock:
            if stale is None or self._session_id == stale:
                self._session_id = None

    def _login(self) -> str:
        auth = self.instance.auth
        params = {"login": auth["login"]}
        secret = "token" if auth.get("token") else "password"
        params[secret] = auth[secret]
        try:
            answer = self._post("Session", "login", None, params)
        except (errors.AuthExpired, errors.PermanentError) as exc:
            # any refusal of the login itself (bad token, unknown user -- whatever its
            # fault code says) is about the credentials, not the task's target, and
            # logging in again cannot help
            raise errors.AuthFailed(
                f"{self.name}: login refused", status=exc.status, excerpt=exc.excerpt
            ) from exc
        session = answer.get("session_id")
        if not isinstance(session, str) or not session:
            raise errors.Unavailable(f"{self.name}: login answered without a session_id")
        return session

    # -- calls --------------------------------------------------------------------------
    def call(self, service: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One authenticated call, made again once on a new session when the session was
        refused (``AuthFailed`` if it is refused again) or answered a 500 fault of no
        known kind (which may be a dead session too). At most :attr:`max_requests`."""
        return self.with_auth_retry(
            lambda: self._call(service, method, params),
            stale=lambda exc: bool(getattr(exc, "unclassified_fault", False)),
        )

    def _call(self, service: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        session = self.session_id()
        self._local.session_id = session
        return self._post(service, method, {"session_id": session}, params)

    def _post(
        self, service: str, method: str, auth_info: dict[str, Any] | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        url = f"/rest/{service}/{method}"
        # send() scrubs the errors it raises (3xx/408/429/transport) of our secrets
        response = self.send("POST", url, **self._body(auth_info, params))
        return self._answer(response, f"{service}/{method}")

    def _body(self, auth_info: dict[str, Any] | None, params: dict[str, Any]) -> dict[str, Any]:
        document = {"params": params}
        if auth_info is not None:
            document["auth_info"] = auth_info
        if self.instance.options.get("content_type", "form") == "json":
            return {"json": document}
        return {"data": {key: json.dumps(value) for key, value in document.items()}}

    def _answer(self, response: httpx.Response, what: str) -> dict[str, Any]:
        """The JSON answer of a 2xx, or the classified error of anything else."""
        status = response.status_code
        data = json_body(response)
        excerpt = self.excerpt(response)  # redacted before it is cut: no half secrets
        fault = fault_of(data)
        # C: faults come as HTTP 500; any other status is classified by the status alone
        # (a 404 "method_not_found" from a wrong base_url is no missing customer).
        error_cls = classify_fault(fault[0]) if fault and status == 500 else classify_status(status)
        if error_cls is not None:
            said = f": {fault[0]}: {fault[1]}" if fault else ""
            message = self.redact(f"{self.name} {what} answered {status}{said}")
            if issubclass(error_cls, errors.RetryableError):  # a 503 may say when to come back
                wait = parse_retry_after(response.headers.get("retry-after"))
                error = error_cls(message, retry_after=wait, status=status, excerpt=excerpt)
                error.unclassified_fault = bool(fault) and status == 500  # type: ignore[attr-defined]
                raise error
            raise error_cls(message, status=status, excerpt=excerpt)
        if not isinstance(data, dict):
            raise errors.Rejected(
                f"{self.name} {what} answered {status} without a JSON object (check base_url)",
                status=status,
                excerpt=excerpt,
            )
        return data

    def secret_values(self) -> list[str]:
        """The credentials and the current session ids (blanked however short they are)."""
        auth = self.instance.auth
        values = [auth.get("login"), auth.get("token"), auth.get("password"), self._session_id]
        values.append(getattr(self._local, "session_id", None))
        return [str(v) for v in values if v]
