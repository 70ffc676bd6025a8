"""PerfexCRM REST API module simulator, to shared/vendors/perfexcrm.md.

``PUT/GET /api/customers/{id}`` with the ``authtoken`` header; answers and error bodies
as the module's ``Customers.php`` gives them. Unknown fields are ignored, as the v3
module's sanitiser does. Seeded with customer 7 ("Acme Ltd", London) and 8.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request

from sandbox.base import Simulator

TOKEN = "perfex-demo-token"

FIELDS = {
    "company",
    "vat",
    "phonenumber",
    "website",
    "groups_in",
    "default_language",
    "default_currency",
    "address",
    "city",
    "state",
    "zip",
    "country",
    "billing_street",
    "billing_city",
    "billing_state",
    "billing_zip",
    "billing_country",
    "shipping_street",
    "shipping_city",
    "shipping_state",
    "shipping_zip",
    "shipping_country",
    "custom_fields",
    "active",
}


def _customer(userid: int, company: str, city: str, address: str, zip_: str) -> dict[str, Any]:
    return {
        "userid": str(userid),
        "company": company,
        "vat": "",
        "phonenumber": "",
        "website": "",
        "address": address,
        "city": city,
        "state": "",
        "zip": zip_,
        "country": "234",
        "active": "1",
        "datecreated": "2025-01-15 09:30:00",
        "billing_street": address,
        "billing_city": city,
        "billing_state": "",
        "billing_zip": zip_,
        "billing_country": "234",
    }


class PerfexSimulator(Simulator):
    kind = "perfexcrm"

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        super().__init__()

    def seed_records(self) -> dict[str, dict[str, Any]]:
        return {
            "7": _customer(7, "Acme Ltd", "London", "1 Old Street", "EC1V 9HL"),
            "8": _customer(8, "Globex plc", "Leeds", "2 Park Row", "LS1 5HD"),
        }

    def error_response(self, status: int, message: str) -> Response:
        response = jsonify({"status": False, "message": message})
        response.status_code = status
        return response

    def _unauthorised(self) -> Response | None:
        if request.headers.get("authtoken") != self.token:
            return self.error_response(401, "Token is not defined or invalid")
        return None

    def register_routes(self, app: Flask) -> None:
        @app.get("/api/customers/<cid>")
        def get_customer(cid: str) -> Response:
            denied = self._unauthorised()
            if denied:
                return denied
            with self.lock:
                if cid not in self.records:
                    return self.error_response(404, "No data were found")
                return jsonify(self.records[cid])

        @app.put("/api/customers/<cid>")
        def put_customer(cid: str) -> Response:
            denied = self._unauthorised()
            if denied:
                return denied
            if not cid.isdigit():
                return self.error_response(404, "Invalid Customers ID")
            body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
            if not body or not isinstance(body, dict):
                return self.error_response(406, "Data Not Acceptable OR Not Provided")
            with self.lock:
                if cid not in self.records:
                    return self.error_response(404, "Customer not found")
                for key, value in body.items():
                    if key in FIELDS:  # the module sanitises unknown keys away
                        self.records[cid][key] = value if key != "active" else _flag(value)
            return jsonify({"status": True, "message": "Customers Update Successful."})


def _flag(value: Any) -> str:
    """``active`` as the CRM stores it ("1"/"0"), from JSON true/1 or form "true"/"1"."""
    return "1" if str(value).strip().lower() in ("1", "true", "on", "yes") else "0"
