"""One JSON line per request that is not a webhook (a webhook has its own, richer line):
the ops API and page, health and metrics. Health checks and scrapes log at DEBUG, since
they come every few seconds; the rest at INFO. Query strings are left out."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from config.logs import event as log_event

log = logging.getLogger("switchboard.web.access")

#: polled by orchestrators and Prometheus: a line each would drown the rest
QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


def init_app(app: Flask) -> None:
    """Log each finished request that is not a webhook (after :mod:`webhooks.metrics`)."""

    @app.after_request
    def _line(response: Response) -> Response:
        if request.blueprint != "ingest":
            started = g.get("sb_started", time.perf_counter())  # webhooks.metrics' clock
            log_event(
                log,
                "request",
                at=logging.DEBUG if request.path in QUIET else logging.INFO,
                method=request.method,
                path=request.path,
                status=response.status_code,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                remote=request.remote_addr,
            )
        return response
