"""Soliditech simulator, to shared/vendors/soliditech.md (whose wire format is all inferred).

By default: ``PUT /api/customers/<account_id>`` (and ``GET`` to read back) with header
``X-API-Key: soli-demo-key`` and a camelCase JSON body; nested groups are merged into the
stored account. Answers: 200 with the account; 401 ``{"message": "Invalid API key"}``;
404 ``{"message": "Account <id> not found"}``; 400 for a body that is not a JSON object;
422 ``{"message": "Validation failed", "errors": {field: [problem]}}`` for an unknown
field name (so a wrong wire mapping is caught, not silently dropped), a wrong type, a bad
email, or a ``priceListId`` that names no price list. Error shapes are inferred (I).

Because the wire format is unconfirmed, the simulator can mimic another one:
``POST /_sim/wire`` ``{"method", "path" (with {account_id}), "auth_header",
"auth_prefix"}``; ``/_sim/reset`` restores the defaults. Seeded with accounts 5005 (Acme
Ltd, London) and 5006.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Response, jsonify, request

from sandbox.base import Simulator

API_KEY = "soli-demo-key"
DEFAULT_WIRE = {
    "method": "PUT",
    "path": "/api/customers/{account_id}",
    "auth_header": "X-API-Key",
    "auth_prefix": "",
}
PRICE_LISTS = {1: "Standard", 2: "Wholesale", 3: "Staff"}

TOP_STRINGS = {
    "accountUse",
    "accountClass",
    "taxType",
    "preferredLanguage",
    "invoiceCycleType",
    "dealer",
    "ticketCenter",
    "salesManager",
}
GROUPS = {
    "businessDetails": {"businessName", "idNumberType", "idNumber", "vatNumber", "phoneNumber"},
    "primaryContact": {
        "title",
        "firstName",
        "lastName",
        "jobTitle",
        "phone",
        "mobile",
        "fax",
        "email",
    },
    "physicalAddress": {
        "addressLine1",
        "addressLine2",
        "suburb",
        "city",
        "province",
        "country",
        "streetCode",
    },
    "postalAddress": {
        "addressLine1",
        "addressLine2",
        "suburb",
        "city",
        "province",
        "country",
        "postalCode",
    },
}


def _account(aid: int, name: str, city: str, line1: str, code: str) -> dict[str, Any]:
    address = {
        "addressLine1": line1,
        "addressLine2": "",
        "suburb": "",
        "city": city,
        "province": "",
        "country": "United Kingdom",
    }
    return {
        "accountId": aid,
        "accountUse": "Business",
        "accountClass": "Standard",
        "taxType": "Standard",
        "priceListId": 1,
        "preferredLanguage": "en",
        "invoiceCycleType": "Monthly",
        "dealer": "",
        "ticketCenter": "",
        "salesManager": "",
        "businessDetails": {
            "businessName": name,
            "idNumberType": "Company Registration",
            "idNumber": "",
            "vatNumber": "",
            "phoneNumber": "",
        },
        "primaryContact": {
            "title": "",
            "firstName": "",
            "lastName": "",
            "jobTitle": "",
            "phone": "",
            "mobile": "",
            "fax": "",
            "email": "",
        },
        "physicalAddress": {**address, "streetCode": code},
        "postalAddress": {**address, "postalCode": code},
    }


def _check_group(group: str, value: Any, problems: dict[str, list[str]]) -> None:
    if not isinstance(value, dict):
        problems[group] = ["must be an object"]
        return
    for key, item in value.items():
        name = f"{group}.{key}"
        if key not in GROUPS[group]:
            problems[name] = ["unknown field"]
        elif not isinstance(item, str):
            problems[name] = ["must be a string"]
        elif key == "email" and item and "@" not in item:
            problems[name] = ["must be a valid email address"]


def validation_problems(body: dict[str, Any]) -> dict[str, list[str]]:
    """Field -> problems in an update body (empty when valid)."""
    problems: dict[str, list[str]] = {}
    for key, value in body.items():
        if key in GROUPS:
            _check_group(key, value, problems)
        elif key == "priceListId":
            if not isinstance(value, int) or isinstance(value, bool):
                problems[key] = ["must be an integer"]
            elif value not in PRICE_LISTS:
                problems[key] = [f"no price list {value}"]
        elif key in TOP_STRINGS:
            if not isinstance(value, str):
                problems[key] = ["must be a string"]
        else:
            problems[key] = ["unknown field"]
    return problems


class SoliditechSimulator(Simulator):
    kind = "soliditech"

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.wire = dict(DEFAULT_WIRE)
        super().__init__()

    # -- Simulator hooks ----------------------------------------------------------------
    def seed_records(self) -> dict[str, dict[str, Any]]:
        return {
            "5005": _account(5005, "Acme Ltd", "London", "1 Old Street", "EC1V 9HL"),
            "5006": _account(5006, "Globex plc", "Leeds", "2 Park Row", "LS1 5HD"),
        }

    def reset(self) -> None:
        with self.lock:
            self.wire = dict(DEFAULT_WIRE)
            super().reset()

    def error_response(self, status: int, message: str) -> Response:
        response = jsonify({"message": message})
        response.status_code = status
        if 300 <= status < 400:
            response.headers["Location"] = "https://login.example.com/"
        return response

    # -- request handling ---------------------------------------------------------------
    def _path_pattern(self) -> re.Pattern[str]:
        before, _, after = self.wire["path"].partition("{account_id}")
        return re.compile(f"^{re.escape(before)}(?P<aid>[^/]+){re.escape(after)}$")

    def _unauthorised(self) -> Response | None:
        expected = f"{self.wire['auth_prefix']}{self.api_key}"
        if request.headers.get(self.wire["auth_header"]) != expected:
            return self.error_response(401, "Invalid API key")
        return None

    def handle(self, path: str) -> Response | tuple[Response, int]:
        match = self._path_pattern().match(path)
        if not match:
            return self.error_response(404, f"No route for {request.method} {path}")
        if request.method not in ("GET", self.wire["method"]):
            return self.error_response(405, "Method not allowed")
        denied = self._unauthorised()
        if denied:
            return denied
        aid = match["aid"]
        with self.lock:
            if aid not in self.records:
                return self.error_response(404, f"Account {aid} not found")
            if request.method == "GET":
                return jsonify(self.records[aid])
            return self.update(aid)

    def update(self, aid: str) -> Response | tuple[Response, int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self.error_response(400, "Request body must be a JSON object")
        problems = validation_problems(body)
        if problems:
            return jsonify({"message": "Validation failed", "errors": problems}), 422
        record = self.records[aid]
        for key, value in body.items():
            if key in GROUPS:
                record[key].update(value)
            else:
                record[key] = value
        return jsonify(record)

    # -- routes -------------------------------------------------------------------------
    def register_routes(self, app: Flask) -> None:
        @app.post("/_sim/wire")
        def sim_wire() -> Response | tuple[Response, int]:
            values = request.get_json(force=True) or {}
            unknown = set(values) - set(DEFAULT_WIRE)
            if unknown or "{account_id}" not in values.get("path", "{account_id}"):
                return jsonify({"error": f"bad wire settings {sorted(unknown)}"}), 400
            with self.lock:
                self.wire.update(values)
                return jsonify(self.wire)

        methods = ["GET", "PUT", "PATCH", "POST", "DELETE"]

        # the path is configurable, so one catch-all route matches it against the template
        @app.route("/<path:subpath>", methods=methods)
        def vendor(subpath: str) -> Response | tuple[Response, int]:
            return self.handle(f"/{subpath}")
