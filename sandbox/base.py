"""What every vendor simulator shares: records in memory, a request log, and fault knobs.

A simulator is a Flask app for one vendor's API surface (``sandbox/<vendor>.py``) built on
:class:`Simulator`. Its admin surface, under ``/_sim`` on the same app:

- ``GET  /_sim/records`` / ``GET /_sim/records/<id>`` -- current record state
- ``PUT  /_sim/records/<id>``                        -- create or replace a record (seeding)
- ``GET  /_sim/log``                                 -- requests received (method, path, body),
  the latest ``LOG_LIMIT`` of them (a sandbox left running under traffic stays bounded);
  served without auth, so credentials in a body (keys named like secret/token/password,
  also inside a form field holding JSON) are blanked first
- ``POST /_sim/knobs``                               -- set knobs (JSON, see :class:`Knobs`)
- ``POST /_sim/expire``                              -- expire every session / token now
- ``POST /_sim/reset``                               -- seed records, clear log and knobs
- ``GET  /_sim/stats``                               -- calls answered now and most at once

Knobs apply to vendor calls only (not ``/_sim``), in this order: latency, hang (sleeps
past any client timeout), 429 with Retry-After, an echo (``fail_status`` in the vendor's
error shape, whose message is a dump of the request: its method, path, form, query, body
and headers, credentials included, as a vendor's debug error page shows them), failure
with ``fail_status`` (with ``Retry-After: <retry_after>`` when ``fail_retry_after`` is set,
as a 503 may say when to come back), a garbled answer (a 200 whose body claims gzip and
is not, as a broken proxy sends).
``fail_next``/``ratelimit_next``/``hang_next``/``echo_next``/``garble_next`` fail exactly
the next N calls (tests);
the ``*_rate`` knobs fail a random share (chaos, benchmarks), seeded for repeatability.
"""

from __future__ import annotations

import collections
import copy
import json
import random
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as mfields

LOG_LIMIT = 50_000  # requests kept for /_sim/log (~1 KB each); the oldest go first


#: a body key whose value is a credential, blanked before the request is logged
SECRET_KEY = re.compile(r"secret|token|password", re.IGNORECASE)

_RATE = validate.Range(0, 1)
_COUNT = validate.Range(min=0)


class KnobsSchema(Schema):
    """What ``POST /_sim/knobs`` accepts: every knob optional, each checked (400 if not)."""

    class Meta:
        unknown = RAISE

    latency_ms = mfields.Float(validate=_COUNT)
    fail_rate = mfields.Float(validate=_RATE)
    fail_status = mfields.Integer(strict=True, validate=validate.Range(100, 599))
    fail_next = mfields.Integer(strict=True, validate=_COUNT)
    ratelimit_rate = mfields.Float(validate=_RATE)
    ratelimit_next = mfields.Integer(strict=True, validate=_COUNT)
    retry_after = mfields.String()
    fail_retry_after = mfields.Boolean(truthy={True}, falsy={False})
    hang_rate = mfields.Float(validate=_RATE)
    hang_next = mfields.Integer(strict=True, validate=_COUNT)
    hang_seconds = mfields.Float(validate=_COUNT)
    garble_rate = mfields.Float(validate=_RATE)
    garble_next = mfields.Integer(strict=True, validate=_COUNT)
    echo_next = mfields.Integer(strict=True, validate=_COUNT)
    seed = mfields.Integer(strict=True)


@dataclass
class Knobs:
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 503
    fail_next: int = 0
    ratelimit_rate: float = 0.0
    ratelimit_next: int = 0
    retry_after: str = "1"  # the Retry-After of 429s (and of failures, see below)
    fail_retry_after: bool = False  # fail_status answers carry Retry-After too
    hang_rate: float = 0.0
    hang_next: int = 0
    hang_seconds: float = 30.0
    garble_rate: float = 0.0
    garble_next: int = 0
    echo_next: int = 0  # the next N calls answer fail_status echoing the request
    seed: int = 0


def blank_secrets(value: Any) -> Any:
    """``value`` (a request body) with the values of credential-named keys blanked, also in
    a string holding a JSON document (PortaBilling's ``auth_info`` and ``params`` fields)."""
    if isinstance(value, dict):
        return {k: "" if SECRET_KEY.search(str(k)) else blank_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [blank_secrets(v) for v in value]
    if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
        try:
            document = json.loads(value)
        except ValueError:
            return value
        blanked = blank_secrets(document)
        return value if blanked == document else json.dumps(blanked)
    return value


def echo_of_request() -> str:
    """The request as a vendor's debug error page dumps it (form, query and body first, so a
    cut excerpt still shows them; then every header, credentials included)."""
    dump = {
        "method": request.method,
        "path": request.path,
        "form": request.form.to_dict(),
        "query": request.args.to_dict(),
        "body": request.get_data(as_text=True)[:2000] if not request.form else "",
        "headers": dict(request.headers),
    }
    return json.dumps(dump, separators=(",", ":"))


class Simulator:
    """State of one simulated vendor; subclasses add routes and the vendor's error shape."""

    kind = "base"
    log_limit = LOG_LIMIT

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.records: dict[str, dict[str, Any]] = {}
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.log_limit)
        self.knobs = Knobs()
        self.rng = random.Random(0)
        self.in_flight = self.peak_in_flight = 0  # calls being answered now / most at once
        self.reset()

    # -- to override ------------------------------------------------------------------
    def seed_records(self) -> dict[str, dict[str, Any]]:
        return {}

    def error_response(self, status: int, message: str) -> Response:
        """The vendor's own error body for an injected failure."""
        return Response(message, status=status)

    def expire_credentials(self) -> None:
        """Invalidate every session/token issued so far."""

    def register_routes(self, app: Flask) -> None:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self.records = copy.deepcopy(self.seed_records())
            self.log.clear()
            self.peak_in_flight = self.in_flight
            self.knobs = Knobs()
            self.rng = random.Random(0)
            self.expire_credentials()

    def set_knobs(self, values: Any) -> Knobs:
        """Set the given knobs, all or none; ValidationError names each bad one."""
        values = KnobsSchema().load(values)
        with self.lock:
            for key, value in values.items():
                setattr(self.knobs, key, value)
            if "seed" in values:
                self.rng = random.Random(values["seed"])
        return self.knobs

    def record_request(self) -> None:
        body: Any
        if request.is_json:
            body = request.get_json(silent=True)
        elif request.form:
            body = request.form.to_dict()
        else:
            body = request.get_data(as_text=True)[:2000]
        entry = {
            "at": time.time(),
            "method": request.method,
            "path": request.path,
            "body": blank_secrets(body),
        }
        with self.lock:
            self.log.append(entry)

    def _calls(self, step: int) -> None:
        """Count the calls being answered now, and the most at once (``/_sim/stats``)."""
        with self.lock:
            self.in_flight += step
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _take(self, counter: str, rate: float) -> bool:
        """True when this call should get the fault named by ``counter``/``rate``."""
        with self.lock:
            left = getattr(self.knobs, counter)
            if left > 0:
                setattr(self.knobs, counter, left - 1)
                return True
            return rate > 0 and self.rng.random() < rate

    def inject_faults(self) -> Response | None:
        knobs = self.knobs
        if knobs.latency_ms:
            time.sleep(knobs.latency_ms / 1000)
        if self._take("hang_next", knobs.hang_rate):
            time.sleep(knobs.hang_seconds)
        if self._take("ratelimit_next", knobs.ratelimit_rate):
            response = self.error_response(429, "Too Many Requests")
            response.headers["Retry-After"] = knobs.retry_after
            return response
        if self._take("echo_next", 0.0):
            return self.error_response(knobs.fail_status, f"Debug: {echo_of_request()}")
        if self._take("fail_next", knobs.fail_rate):
            response = self.error_response(knobs.fail_status, "Injected failure")
            if knobs.fail_retry_after:
                response.headers["Retry-After"] = knobs.retry_after
            return response
        if self._take("garble_next", knobs.garble_rate):
            return Response(b"{not gzip", 200, {"Content-Encoding": "gzip"}, "application/json")
        return None

    def create_app(self) -> Flask:
        app = Flask(f"sandbox.{self.kind}")
        app.config["SIMULATOR"] = self

        @app.before_request
        def _before() -> Response | None:
            if request.path.startswith("/_sim"):
                return None
            self.record_request()
            self._calls(+1)
            return self.inject_faults()

        @app.teardown_request
        def _after(_exc: BaseException | None) -> None:
            if not request.path.startswith("/_sim"):
                self._calls(-1)

        app.register_blueprint(self._admin_blueprint())
        self.register_routes(app)
        return app

    def _admin_blueprint(self) -> Blueprint:
        bp = Blueprint("sim_admin", __name__, url_prefix="/_sim")

        @bp.get("/records")
        def all_records() -> Response:
            with self.lock:
                return jsonify(copy.deepcopy(self.records))

        @bp.get("/records/<rid>")
        def one_record(rid: str) -> Response | tuple[Response, int]:
            with self.lock:
                if rid not in self.records:
                    return jsonify({"error": "no such record"}), 404
                return jsonify(copy.deepcopy(self.records[rid]))

        @bp.put("/records/<rid>")
        def put_record(rid: str) -> Response:
            with self.lock:
                self.records[rid] = request.get_json(force=True)
                return jsonify(self.records[rid])

        @bp.get("/stats")
        def get_stats() -> Response:
            with self.lock:
                return jsonify({"in_flight": self.in_flight, "peak_in_flight": self.peak_in_flight})

        @bp.get("/log")
        def get_log() -> Response:
            with self.lock:
                return jsonify(list(self.log))

        @bp.post("/knobs")
        def post_knobs() -> Response | tuple[Response, int]:
            try:
                knobs = self.set_knobs(request.get_json(force=True, silent=True))
            except ValidationError as exc:
                return jsonify({"error": "bad knobs", "fields": exc.messages}), 400
            return jsonify(asdict(knobs))

        @bp.get("/knobs")
        def get_knobs() -> Response:
            return jsonify(asdict(self.knobs))

        @bp.post("/expire")
        def post_expire() -> Response:
            with self.lock:
                self.expire_credentials()
            return jsonify({"expired": True})

        @bp.post("/reset")
        def post_reset() -> Response:
            self.reset()
            return jsonify({"reset": True})

        return bp
