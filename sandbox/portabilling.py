"""PortaOne PortaBilling JSON API simulator, to shared/vendors/portabilling.md.

Routes (all ``POST /rest/<Service>/<method>``, C): ``Session/login``,
``Customer/update_customer``, ``Customer/get_customer_info``, ``Account/update_account``,
``Account/get_account_info``. Bodies are accepted form-encoded or multipart (fields
``auth_info`` and ``params``, each a JSON string) and as one JSON document (C).

Auth (C): ``Session/login`` with ``params={"login", "token"|"password"}`` answers a random
``session_id``; other calls need ``auth_info`` with a live ``session_id`` or the login and
token/password themselves. Seeded login ``porta-api``, token ``porta-demo-token``,
password ``porta-demo-password``. ``/_sim/expire`` ends every session. ``POST
/_sim/session-fault`` ``{"faultcode": ...}`` sets the fault a dead session answers (the
vendor file does not know the real code: a connector must cope with any).

Faults are HTTP 500 ``{"faultcode", "faultstring"}`` (C); the codes are I, modelled on
the vendor file: ``Server.Session.check_auth.auth_failed`` (no/expired session),
``Server.Session.auth_failed`` (bad login), ``Server.Customer.customer_not_found``,
``Server.Account.account_not_found``, ``Client.<Service>.validation_error`` (a wrong type or
value; the faultstring names the field). Unknown fields are ignored (I). An unknown
method answers 404. Injected failures (knobs) carry ``Server.Sandbox.injected_failure``;
an injected 3xx carries a ``Location`` to the same URL over https.

Records: ``self.records`` keys are ``customer:<i_customer>`` and ``account:<i_account>``,
so ``GET /portabilling/_sim/records/customer:1001`` shows customer 1001 as
``get_customer_info`` would. Seeded: customers 1001 (Acme Ltd, London, suspended,
credit_limit 0), 1002 (Globex plc, Leeds), 1003 (Initech GmbH, Berlin); accounts 2001 and
2002 of customer 1001, 2003 of customer 1002.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request

from sandbox.base import Simulator

LOGIN = "porta-api"
TOKEN = "porta-demo-token"
PASSWORD = "porta-demo-password"

Check = Callable[[Any], bool]


class Fault(Exception):
    """A PortaBilling fault answer, raised anywhere in a handler."""

    def __init__(self, code: str, text: str, status: int = 500):
        super().__init__(text)
        self.code, self.text, self.status = code, text, status


# -- value checks, one per wire type (C, vendor file) --------------------------------------
def text(max_len: int | None = None) -> Check:
    return lambda v: isinstance(v, str) and (max_len is None or len(v) <= max_len)


def one_of(*allowed: str) -> Check:
    return lambda v: v in allowed


def matches(pattern: str) -> Check:
    return lambda v: isinstance(v, str) and re.fullmatch(pattern, v) is not None


def number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return True
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def integer(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and v.isdigit())


def flag(v: Any) -> bool:
    return v in (0, 1, "0", "1") and not isinstance(v, bool)


DATETIME = matches(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
YES_NO = one_of("Y", "N")
BILL_STATUS = one_of("O", "S", "C", "E")
COUNTRY = matches(r"[A-Z]{2}")

CUSTOMER_FIELDS: dict[str, Check] = {
    "name": text(),
    "companyname": text(100),
    "baddr1": text(41),
    "address_line_2": text(167),
    "city": text(31),
    "country": COUNTRY,
    "cont1": text(120),
    "cont2": text(120),
    "bcc": text(99),
    "note": text(),
    "api_token": matches(r"[0-9A-Fa-f-]{36}"),
    "balance": number,
    "credit_limit": number,
    "credit_limit_until": DATETIME,
    "credit_exceed": flag,
    "discount_rate": number,
    "bill_status": BILL_STATUS,
    "blocked": YES_NO,
    "bill_suspension_delayed": flag,
    "balance_transfer_allowed": YES_NO,
    "callshop_enabled": YES_NO,
    "bp_charge_cc": one_of("Y", "N", ""),
    "billing_lock": one_of("N", "C", "F"),
    "send_invoices": text(),
    "send_statistics": text(),
    "deactivate_on": DATETIME,
    "iso_4217": matches(r"[A-Z]{3}"),
    "i_customer_class": integer,
    "i_billing_period": integer,
    "i_time_zone": integer,
    "i_parent": integer,
    "i_rep": integer,
    "i_lang": text(),
    # I: common CustomerInfo fields
    **{
        name: text()
        for name in (
            "email",
            "firstname",
            "lastname",
            "midinit",
            "phone1",
            "phone2",
            "faxnum",
            "state",
            "zip",
            "baddr2",
            "baddr3",
            "baddr4",
            "baddr5",
            "refnum",
        )
    },
}

ACCOUNT_FIELDS: dict[str, Check] = {
    "blocked": YES_NO,
    "bill_status": BILL_STATUS,
    "credit_limit": number,
    "email": text(),
    "baddr1": text(41),
    "city": text(31),
    "zip": text(),
    "country": COUNTRY,
    "note": text(),
}


def _customer(i: int, name: str, city: str, country: str, **extra: Any) -> dict[str, Any]:
    record = {
        "i_customer": i,
        "name": name,
        "companyname": name,
        "baddr1": "",
        "city": city,
        "zip": "",
        "country": country,
        "email": "",
        "bill_status": "O",
        "blocked": "N",
        "credit_limit": 0.0,
        "balance": 0.0,
        "credit_exceed": 0,
        "iso_4217": "GBP",
        "note": "",
    }
    record.update(extra)
    return record


def _account(i: int, i_customer: int, id_: str, **extra: Any) -> dict[str, Any]:
    record = {
        "i_account": i,
        "i_customer": i_customer,
        "id": id_,
        "bill_status": "O",
        "blocked": "N",
        "credit_limit": 0.0,
        "email": "",
        "baddr1": "",
        "city": "",
        "zip": "",
        "country": "GB",
        "note": "",
    }
    record.update(extra)
    return record


SESSION_FAULT = "Server.Session.check_auth.auth_failed"  # I: the code a dead session gets


class PortaSimulator(Simulator):
    kind = "portabilling"

    def __init__(self, login: str = LOGIN, token: str = TOKEN, password: str = PASSWORD) -> None:
        self.login, self.token, self.password = login, token, password
        self.sessions: set[str] = set()  # before super(): reset() expires sessions
        self.session_fault = SESSION_FAULT
        super().__init__()

    def seed_records(self) -> dict[str, dict[str, Any]]:
        customers = [
            _customer(
                1001,
                "Acme Ltd",
                "London",
                "GB",
                baddr1="1 Old Street",
                zip="EC1V 9HL",
                bill_status="S",
                email="billing@acme.example",
            ),
            _customer(
                1002,
                "Globex plc",
                "Leeds",
                "GB",
                baddr1="2 Park Row",
                zip="LS1 5HD",
                credit_limit=100.0,
            ),
            _customer(1003, "Initech GmbH", "Berlin", "DE", iso_4217="EUR"),
        ]
        accounts = [
            _account(2001, 1001, "442071230001", city="London"),
            _account(2002, 1001, "442071230002", city="London", blocked="Y"),
            _account(2003, 1002, "441132450001", city="Leeds"),
        ]
        records = {f"customer:{c['i_customer']}": c for c in customers}
        records.update({f"account:{a['i_account']}": a for a in accounts})
        return records

    def expire_credentials(self) -> None:
        self.sessions.clear()

    def reset(self) -> None:
        super().reset()
        self.session_fault = SESSION_FAULT

    def error_response(
        self, status: int, message: str, faultcode: str = "Server.Sandbox.injected_failure"
    ) -> Response:
        response = jsonify({"faultcode": faultcode, "faultstring": message})
        response.status_code = status
        if 300 <= status < 400:
            # as the web server in front would redirect plain HTTP to HTTPS
            response.headers["Location"] = request.url.replace("http://", "https://", 1)
        return response

    # -- request parsing and auth ------------------------------------------------------
    def documents(self) -> tuple[Any, Any]:
        """``(auth_info, params)`` from a JSON body or from form fields holding JSON."""
        if request.is_json:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                raise Fault("Client.Request.invalid_json", "Body is not a JSON object")
            return body.get("auth_info"), body.get("params")
        out = []
        for name in ("auth_info", "params"):
            raw = request.form.get(name)
            try:
                out.append(json.loads(raw) if raw else None)
            except ValueError:
                raise Fault("Client.Request.invalid_json", f"{name} is not valid JSON") from None
        return out[0], out[1]

    def credentials_ok(self, given: dict[str, Any]) -> bool:
        if given.get("login") != self.login:
            return False
        return given.get("token") == self.token or given.get("password") == self.password

    def check_auth(self, auth_info: Any) -> None:
        if isinstance(auth_info, dict):
            with self.lock:
                if auth_info.get("session_id") in self.sessions:
                    return
            if "login" in auth_info and self.credentials_ok(auth_info):
                return
        raise Fault(self.session_fault, "Authentication failed")

    # -- methods -----------------------------------------------------------------------
    def session_login(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.credentials_ok(params):
            raise Fault("Server.Session.auth_failed", "Login failed: wrong login or token")
        session = secrets.token_hex(16)
        with self.lock:
            self.sessions.add(session)
        return {"session_id": session}

    def update_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        i = self.update("Customer", "customer", params.get("customer_info"), CUSTOMER_FIELDS)
        return {"i_customer": i}

    def update_account(self, params: dict[str, Any]) -> dict[str, Any]:
        i = self.update("Account", "account", params.get("account_info"), ACCOUNT_FIELDS)
        return {"i_account": i}

    def get_customer_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"customer_info": self.find("Customer", "customer", params.get("i_customer"))}

    def get_account_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"account_info": self.find("Account", "account", params.get("i_account"))}

    def record_id(self, service: str, record: str, i: Any) -> int:
        if not integer(i):
            raise Fault(f"Client.{service}.validation_error", f"i_{record} must be an integer")
        return int(i)

    def find(self, service: str, record: str, i: Any) -> dict[str, Any]:
        key = f"{record}:{self.record_id(service, record, i)}"
        with self.lock:
            found = self.records.get(key)
            if found is None:
                raise Fault(f"Server.{service}.{record}_not_found", f"{service} not found")
            return copy.deepcopy(found)

    def update(self, service: str, record: str, info: Any, checks: dict[str, Check]) -> int:
        """Change the fields present in ``info`` (only those: C); all checked first."""
        if not isinstance(info, dict):
            raise Fault(f"Client.{service}.validation_error", f"{record}_info is required")
        i = self.record_id(service, record, info.get(f"i_{record}"))
        self.find(service, record, i)  # answers not_found
        changes = {k: v for k, v in info.items() if k in checks}
        for key, value in changes.items():
            if not checks[key](value):
                raise Fault(
                    f"Client.{service}.validation_error", f"Invalid value for {key}: {value!r}"
                )
        with self.lock:
            self.records[f"{record}:{i}"].update(changes)
        return i

    def register_routes(self, app: Flask) -> None:
        handlers: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
            ("Session", "login"): self.session_login,
            ("Customer", "update_customer"): self.update_customer,
            ("Customer", "get_customer_info"): self.get_customer_info,
            ("Account", "update_account"): self.update_account,
            ("Account", "get_account_info"): self.get_account_info,
        }

        @app.post("/_sim/session-fault")
        def set_session_fault() -> Response:
            self.session_fault = str((request.get_json(force=True) or {})["faultcode"])
            return jsonify({"faultcode": self.session_fault})

        @app.post("/rest/<service>/<method>")
        def dispatch(service: str, method: str) -> Response:
            handler = handlers.get((service, method))
            try:
                if handler is None:
                    raise Fault("Client.Generic.unknown_method", f"No {service}/{method}", 404)
                auth_info, params = self.documents()
                if service != "Session":
                    self.check_auth(auth_info)
                return jsonify(handler(params if isinstance(params, dict) else {}))
            except Fault as fault:
                return self.error_response(fault.status, fault.text, fault.code)
