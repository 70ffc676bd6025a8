"""``GET /metrics`` and the ingest counters and log lines, added by :func:`init_app`.

Everything is read from Redis at scrape time by :class:`RedisCollector`, so any web
process answers for all web and worker processes on any host (why Redis and not
prometheus-client's multiprocess mode: see :mod:`worker.metrics`). Ingest is counted by
an ``after_request`` hook, not by the view, into the per-process buffer of
:mod:`worker.metrics` (flushed to Redis once a second).

Families (all prefixed ``switchboard_``)::

  webhooks_received_total{source}                 requests to /webhooks/<source>
  webhooks_accepted_total{source}                 events stored with >= 1 task
  webhooks_ignored_total{source}                  events stored, no rule matched
  webhooks_duplicate_total{source}                events already accepted before
  webhooks_rejected_total{source,reason}          requests refused (reason = error code)
  tasks_total{vendor,op,outcome}                  task runs: applied, retrying, stale,
                                                  dead, deferred, duplicate, missing, error
  dead_letters_total{vendor,code}                 tasks dead-lettered, by code
  vendor_call_seconds{vendor,op,status}           histogram of vendor HTTP calls
  task_run_seconds{vendor,outcome}                histogram of whole task runs
  queue_tasks_waiting                             tasks accepted and not yet finished
  queue_celery_depth                              messages in the Celery queue
  queue_oldest_task_age_seconds                   age of the oldest unfinished task
  dead_letters_stored                             dead letters in the store now
  worker_last_heartbeat_seconds{worker}           unix time of each worker's last beat
  worker_seconds_since_heartbeat                  since the newest beat of any worker
  circuit_state{vendor,state}                     1 for the vendor's current state
  up                                              1 when Redis answered the scrape
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import redis as redis_lib
from flask import Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from config.logs import event as log_event
from webhooks.health import queue_detail
from webhooks.state import AppState
from worker import keys
from worker import metrics as wm

log = logging.getLogger("switchboard.web")

CIRCUIT_STATES = ("closed", "open", "half_open")
UNKNOWN_SOURCE = "(unknown)"


# -- ingest: counters and one log line per event -------------------------------------------
def init_app(app: Flask) -> None:
    """Register ``/metrics`` and the ingest hooks on ``app``."""
    state: AppState = app.extensions["switchboard"]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(state))

    @app.get("/metrics")
    def metrics() -> Response:
        wm.BUFFER.flush()  # this process's own latest counts (others lag <= 1 s)
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.before_request
    def _start_clock() -> None:  # every request's: webhooks.access_log reads it too
        g.sb_started = time.perf_counter()

    @app.after_request
    def _count_ingest(response: Response) -> Response:
        if (source := _webhook_source()) is not None:
            try:
                observe_ingest(state, response, source)
            except redis_lib.RedisError as exc:  # the answer matters more than the count
                log.warning("ingest metrics not recorded (%s)", type(exc).__name__)
        return response


def _webhook_source() -> str | None:
    """The source named by a request to a webhook URL, None for any other request; also
    for one refused before it reached the view (a GET is a 405: a sender misconfigured)."""
    if request.blueprint == "ingest" and request.view_args is not None:
        return str(request.view_args.get("source", ""))
    if isinstance(request.routing_exception, MethodNotAllowed):
        try:
            urls = current_app.url_map.bind_to_environ(request.environ)
            endpoint, args = urls.match(method="POST")
        except HTTPException:
            return None
        return str(args.get("source", "")) if endpoint.startswith("ingest.") else None
    return None


def observe_ingest(state: AppState, response: Response, source: str) -> None:
    known = source in g.get("sb_loaded", state.loaded).sources  # the config it was served
    label = source if known else UNKNOWN_SOURCE  # never a label from an unknown URL
    took_ms = round((time.perf_counter() - g.get("sb_started", time.perf_counter())) * 1000, 2)
    client = state.redis
    wm.BUFFER.incr(client, wm.WEBHOOKS, wm.field("received", label, ""))
    if response.status_code >= 400:
        body = response.get_json(silent=True) if response.is_json else None
        body = body if isinstance(body, dict) else {}
        reason = str((body.get("error") or {}).get("code") or f"http_{response.status_code}")
        wm.BUFFER.incr(client, wm.WEBHOOKS, wm.field("rejected", label, reason))
        log_event(
            log,
            "webhook rejected",
            at=_rejection_level(response.status_code),
            source=label if known else _clip(source),
            status=response.status_code,
            reason=reason,
            duration_ms=took_ms,
            **_sender(),
        )
        for event, tasks in g.get("sb_unconfirmed") or []:  # a 503 not_replicated
            log_event(
                log,
                "webhook stored, not confirmed by replicas",
                at=logging.WARNING,
                event_id=event.id,
                source=label,
                type=event.type,
                task_ids=[t.id for t in tasks],
                note="the master stored it: should it fail over, it may be lost; the "
                "sender's retry is answered duplicate if it was kept",
            )
        return
    seen = g.get("sb_events") or []  # (event, tasks, outcome), as ingest decided them
    for _event, _tasks, outcome in seen:
        wm.BUFFER.incr(client, wm.WEBHOOKS, wm.field(outcome, label, ""))
    for event, tasks, outcome in seen:
        log_event(
            log,
            f"webhook {outcome}",
            event_id=event.id,
            source=label,
            type=event.type,
            outcome=outcome,
            status=response.status_code,
            rules=sorted({t.rule for t in tasks}),
            tasks=[
                {
                    "task_id": t.id,
                    "rule": t.rule,
                    "vendor": t.vendor,
                    "op": t.op,
                    "target": t.target,
                    **({"mapping_error": True} if t.mapping_error else {}),
                }
                for t in tasks
            ]
            if outcome != "duplicate"
            else [],
            duration_ms=took_ms,
        )


def _rejection_level(status: int) -> int:
    """5xx: ours to fix (ERROR); a refused signature may be a rotated secret dropping every
    webhook of a source (WARNING); other 4xx are the sender's (INFO)."""
    if status >= 500:
        return logging.ERROR
    return logging.WARNING if status in (401, 403) else logging.INFO


def _sender() -> dict[str, Any]:
    """Who sent a rejected webhook, and the event id it claims (unverified, clipped), so
    "the sender says evt_X got a 401" can be found with grep."""
    out: dict[str, Any] = {
        "remote": request.remote_addr,
        "user_agent": _clip(request.headers.get("User-Agent", "")),
        "content_length": request.content_length,
    }
    claimed = request.headers.get("webhook-id") or _body_id()
    if claimed:
        out["claimed_event_id"] = _clip(claimed)
    return out


def _body_id() -> str | None:
    """The body's top-level ``id`` (Stripe, HubSpot and most senders put one there), from
    the body ingest read (none when it was refused before that); None when it is not a
    JSON object with a plain id."""
    body = g.get("sb_body") or b""
    if not body.startswith(b"{"):
        return None
    try:
        value = json.loads(body).get("id")
    except (ValueError, AttributeError, RecursionError):  # nested deep: no id worth it
        return None
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- the scrape ----------------------------------------------------------------------------
def _split(raw: dict[bytes, bytes]) -> Iterator[tuple[list[str], float]]:
    for key, value in raw.items():
        yield key.decode().split(wm.SEP), float(value)


def histogram(
    name: str,
    doc: str,
    labels: list[str],
    raw: dict[bytes, bytes],
    buckets: tuple[float, ...],
) -> HistogramMetricFamily:
    """Rebuild a cumulative histogram from per-bucket counts stored by worker.metrics."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    per: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    for parts, value in _split(raw):
        per[tuple(parts[:-1])][parts[-1]] = value
    for label_values, cells in sorted(per.items()):
        running = 0.0
        cumulative = []
        for i, bound in enumerate(buckets):
            running += cells.get(str(i), 0.0)
            cumulative.append((repr(bound), running))
        running += cells.get(str(len(buckets)), 0.0)
        cumulative.append(("+Inf", running))
        family.add_metric(list(label_values), cumulative, cells.get("sum", 0.0))
    return family


class RedisCollector(Collector):
    """Reads every Switchboard metric from Redis when Prometheus scrapes."""

    def __init__(self, state: AppState):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("switchboard_up", "1 when Redis answered this scrape")
        try:
            families = self._collect()
        except redis_lib.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _collect(self) -> list[Metric]:
        """Everything in one pipelined read, then one family per metric."""
        client = self.state.redis
        vendors = sorted(self.state.config.vendors)
        pipe = client.pipeline(transaction=False)
        for key in wm.ALL:
            pipe.hgetall(key)
        pipe.hgetall(keys.HEARTBEATS)
        pipe.hgetall(keys.RECOVERED)
        for vendor in vendors:
            pipe.hget(keys.circuit(vendor), "state")
        results = pipe.execute()
        webhooks, tasks, dead, vendor_call, task_run, beats, recovered = results[:7]
        detail = queue_detail(client, time.time(), ())  # the circuits are read above
        return [
            *self._webhooks(webhooks),
            *_task_families(tasks, dead, vendor_call, task_run),
            *_queue_gauges(detail),
            *_worker_families(beats, recovered, detail["seconds_since_heartbeat"]),
            _circuit_family(vendors, results[7:]),
        ]

    def _webhooks(self, raw: dict[bytes, bytes]) -> list[Metric]:
        kinds = {
            "received": "Webhook requests received",
            "accepted": "Events accepted with at least one task",
            "ignored": "Events stored with no matching rule",
            "duplicate": "Events already accepted before (nothing queued again)",
        }
        families: dict[str, Any] = {
            kind: CounterMetricFamily(f"switchboard_webhooks_{kind}", doc, labels=["source"])
            for kind, doc in kinds.items()
        }
        rejected = CounterMetricFamily(
            "switchboard_webhooks_rejected",
            "Webhook requests refused, by reason (error code)",
            labels=["source", "reason"],
        )
        for (kind, source, reason), value in sorted(
            (tuple(parts), value) for parts, value in _split(raw) if len(parts) == 3
        ):
            if kind == "rejected":
                rejected.add_metric([source, reason], value)
            elif kind in families:
                families[kind].add_metric([source], value)
        return [*families.values(), rejected]


def _per_worker(family: Any, raw: dict[bytes, bytes]) -> Any:
    """``family`` with one sample per worker from a Redis hash (worker name -> number)."""
    for name, value in sorted(raw.items()):
        family.add_metric([name.decode()], float(value))
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _task_families(
    tasks: dict[bytes, bytes],
    dead: dict[bytes, bytes],
    vendor_call: dict[bytes, bytes],
    task_run: dict[bytes, bytes],
) -> list[Metric]:
    runs = CounterMetricFamily(
        "switchboard_tasks", "Task runs by outcome", labels=["vendor", "op", "outcome"]
    )
    for parts, value in sorted(_split(tasks)):
        runs.add_metric(parts, value)
    died = CounterMetricFamily(
        "switchboard_dead_letters", "Tasks dead-lettered, by code", labels=["vendor", "code"]
    )
    for parts, value in sorted(_split(dead)):
        died.add_metric(parts, value)
    return [
        runs,
        died,
        histogram(
            "switchboard_vendor_call_seconds",
            "Vendor HTTP call latency",
            ["vendor", "op", "status"],
            vendor_call,
            wm.VENDOR_CALL_BUCKETS,
        ),
        histogram(
            "switchboard_task_run_seconds",
            "Whole task run time (locks, rate limit, vendor call, bookkeeping)",
            ["vendor", "outcome"],
            task_run,
            wm.TASK_RUN_BUCKETS,
        ),
    ]


#: (gauge, help, field of :func:`webhooks.health.queue_detail`)
_QUEUE_GAUGES = (
    (
        "switchboard_queue_tasks_waiting",
        "Tasks accepted and not yet finished (applied, stale or dead)",
        "tasks_waiting",
    ),
    (
        "switchboard_queue_celery_depth",
        "Messages waiting in the Celery queue",
        "celery_queue_depth",
    ),
    (
        "switchboard_queue_oldest_task_age_seconds",
        "Age of the oldest unfinished task (0 when none)",
        "oldest_waiting_task_age",
    ),
    ("switchboard_dead_letters_stored", "Dead letters in the store now", "dead_letters"),
)


def _queue_gauges(detail: dict[str, Any]) -> list[Metric]:
    return [_gauge(name, doc, detail[field]) for name, doc, field in _QUEUE_GAUGES]


def _worker_families(
    beats: dict[bytes, bytes], recovered: dict[bytes, bytes], since: float | None
) -> list[Metric]:
    return [
        _per_worker(
            GaugeMetricFamily(
                "switchboard_worker_last_heartbeat_seconds",
                "Unix time of each worker's last heartbeat",
                labels=["worker"],
            ),
            beats,
        ),
        _per_worker(
            CounterMetricFamily(
                "switchboard_deliveries_recovered",
                "Deliveries a worker had reserved, made due again after it went silent",
                labels=["worker"],
            ),
            recovered,
        ),
        _gauge(
            "switchboard_worker_seconds_since_heartbeat",
            "Seconds since the newest heartbeat of any worker (-1: none ever)",
            -1 if since is None else since,
        ),
    ]


def _circuit_family(vendors: list[str], states: list[bytes | None]) -> Metric:
    """One-hot per vendor and state (``sb:circuit:<vendor>``'s ``state``; no hash: closed,
    worker/circuit.py)."""
    family = GaugeMetricFamily(
        "switchboard_circuit_state",
        "1 for the current circuit breaker state of each vendor",
        labels=["vendor", "state"],
    )
    for vendor, raw in zip(vendors, states, strict=True):
        current = raw.decode() if raw else "closed"
        for name in sorted({*CIRCUIT_STATES, current}):
            family.add_metric([vendor, name], 1.0 if name == current else 0.0)
    return family
