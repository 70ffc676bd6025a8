"""HaloPSA simulator, to shared/vendors/halopsa.md.

- ``POST /auth/token`` (form, OAuth2 client credentials; ``?tenant=`` accepted and
  ignored, as on a self-hosted instance): demo client ``halo-demo-client`` /
  ``halo-demo-secret``; bad credentials -> 400 ``{"error": "invalid_client"}`` (I), wrong
  grant -> 400 ``unsupported_grant_type``. Tokens live ``token_lifetime`` seconds (short
  by default so expiry is exercised); ``/_sim/expire`` revokes all of them.
- ``POST /api/Client``: a JSON array of client objects, each with an existing ``id``;
  validated as a whole before any change. Unknown id -> 404 "Client <id> not found" (I);
  wrong type/colour or unknown ``toplevel_id`` -> 400 with a message (I shape).
- ``GET /api/Client/<id>`` reads a client back (404 when missing).

Halo-specific admin: ``POST /_sim/auth`` ``{"token_lifetime": s, "refuse_tokens": bool,
"create_unknown": bool}`` (refuse: tokens are issued but the API answers 401, like an API
user without access; create_unknown: an unknown id makes a new client with a new id and
answers it, the other reading of the vendor file's inferred "unknown id" case),
``GET /_sim/tokens`` (the tokens issued, so tests can check none leak). The request log
also carries each request's query string (the tenant travels there).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from flask import Flask, Response, jsonify, request

from sandbox.base import Simulator, blank_secrets

CLIENT_ID = "halo-demo-client"
CLIENT_SECRET = "halo-demo-secret"
TOKEN_LIFETIME = 120.0
HEX_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")
TOP_LEVELS = {1: "Default", 2: "Managed Services"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: update field -> check of its value (None when fine, else the vendor's message)
CHECKS = {
    "name": lambda v: None if isinstance(v, str) and v else "name must be a non-empty string",
    "colour": lambda v: (
        None
        if isinstance(v, str) and HEX_COLOUR.match(v)
        else "colour must be a hex colour like #E83C4A"
    ),
    "inactive": lambda v: None if isinstance(v, bool) else "inactive must be true or false",
    "notes": lambda v: None if isinstance(v, str) else "notes must be a string",
    "toplevel_id": lambda v: (
        None if _is_int(v) and v in TOP_LEVELS else f"toplevel_id {v!r} is not a valid top level"
    ),
}


def _client(cid: int, name: str, inactive: bool, toplevel_id: int) -> dict[str, Any]:
    return {
        "id": cid,
        "name": name,
        "colour": "#3A6EA5",
        "inactive": inactive,
        "notes": "",
        "toplevel_id": toplevel_id,
        "toplevel_name": TOP_LEVELS[toplevel_id],
    }


class HaloSimulator(Simulator):
    kind = "halopsa"

    def __init__(
        self,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        token_lifetime: float = TOKEN_LIFETIME,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.default_lifetime = self.token_lifetime = token_lifetime
        self.refuse_tokens = False
        self.create_unknown = False
        self.tokens: dict[str, float] = {}  # token -> expiry (time.time())
        super().__init__()

    # -- Simulator hooks ----------------------------------------------------------------
    def seed_records(self) -> dict[str, dict[str, Any]]:
        return {"42": _client(42, "Acme Ltd", True, 1), "43": _client(43, "Globex plc", False, 2)}

    def reset(self) -> None:
        with self.lock:
            self.token_lifetime = self.default_lifetime
            self.refuse_tokens = False
            self.create_unknown = False
            super().reset()

    def expire_credentials(self) -> None:
        with self.lock:
            self.tokens.clear()

    def error_response(self, status: int, message: str) -> Response:
        response = jsonify({"message": message})
        response.status_code = status
        if 300 <= status < 400:  # what a misconfigured base URL meets: the login page
            response.headers["Location"] = "/auth/Account/Login"
        return response

    def record_request(self) -> None:
        with self.lock:  # re-entrant: the entry and its query land together
            super().record_request()
            self.log[-1]["query"] = blank_secrets(request.args.to_dict())

    # -- auth ---------------------------------------------------------------------------
    def issue_token(self) -> Response:
        form = request.form
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error("unsupported_grant_type")
        if (form.get("client_id"), form.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return self._oauth_error("invalid_client")
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.time() + self.token_lifetime
            lifetime = self.token_lifetime
        return jsonify(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": lifetime,
                "scope": form.get("scope", "all"),
            }
        )

    def _oauth_error(self, code: str) -> Response:
        response = jsonify({"error": code})
        response.status_code = 400
        return response

    def _unauthorised(self) -> Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer":  # the vendor takes only "Bearer <token>"
            return self.error_response(401, "Unauthorized")
        token = token.strip()
        with self.lock:
            expiry = self.tokens.get(token)
            valid = expiry is not None and time.time() < expiry and not self.refuse_tokens
        if not valid:
            return self.error_response(401, "Unauthorized")
        return None

    # -- clients ------------------------------------------------------------------------
    def validate_clients(self, body: Any) -> tuple[int, str] | None:
        """(status, message) of the first problem in an update body, else None."""
        if not isinstance(body, list) or not body:
            return 400, "Request body must be a non-empty array of clients"
        for item in body:
            if not isinstance(item, dict) or not _is_int(item.get("id")):
                return 400, "Each client needs an integer id"
            if str(item["id"]) not in self.records and not self.create_unknown:
                return 404, f"Client {item['id']} not found"
            for key, value in item.items():
                problem = CHECKS[key](value) if key in CHECKS else None
                if problem:
                    return 400, problem
        return None

    def update_clients(self, body: list[dict[str, Any]]) -> list[dict[str, Any]]:
        saved = []
        for item in body:
            if str(item["id"]) not in self.records:  # create_unknown: a new client
                new_id = max(int(k) for k in self.records) + 1
                item = {**item, "id": new_id}
                self.records[str(new_id)] = {"id": new_id, "name": f"Client {new_id}"}
            record = self.records[str(item["id"])]
            record.update({k: v for k, v in item.items() if k in CHECKS})  # others ignored
            if "toplevel_id" in item:
                record["toplevel_name"] = TOP_LEVELS[item["toplevel_id"]]
            saved.append(dict(record))
        return saved

    # -- routes -------------------------------------------------------------------------
    def register_routes(self, app: Flask) -> None:
        @app.post("/auth/token")
        def token() -> Response:
            return self.issue_token()

        @app.post("/api/Client")
        def post_clients() -> Response | tuple[Response, int]:
            denied = self._unauthorised()
            if denied:
                return denied
            body: Any = request.get_json(silent=True)
            with self.lock:
                problem = self.validate_clients(body)
                if problem:
                    return self.error_response(problem[0], problem[1])
                saved = self.update_clients(body)
            return jsonify(saved[0] if len(saved) == 1 else saved), 201

        @app.get("/api/Client/<cid>")
        def get_client(cid: str) -> Response:
            denied = self._unauthorised()
            if denied:
                return denied
            with self.lock:
                if cid not in self.records:
                    return self.error_response(404, f"Client {cid} not found")
                return jsonify(self.records[cid])

        @app.post("/_sim/auth")
        def sim_auth() -> Response:
            values = request.get_json(force=True) or {}
            with self.lock:
                self.token_lifetime = float(values.get("token_lifetime", self.token_lifetime))
                self.refuse_tokens = bool(values.get("refuse_tokens", self.refuse_tokens))
                self.create_unknown = bool(values.get("create_unknown", self.create_unknown))
                return jsonify(
                    {
                        "token_lifetime": self.token_lifetime,
                        "refuse_tokens": self.refuse_tokens,
                        "create_unknown": self.create_unknown,
                    }
                )

        @app.get("/_sim/tokens")
        def sim_tokens() -> Response:
            with self.lock:
                return jsonify(sorted(self.tokens))
