"""``POST /webhooks/<source>``: verify -> parse -> map through rules -> store once -> 2xx.

Each event is stored with its tasks in one atomic Redis write before we answer
(:meth:`worker.queue.Queue.store_event`, sent through :mod:`webhooks.commit` so concurrent
requests share a pipeline); a duplicate (same source and event id) queues
nothing. Answers (DESIGN §4): 202 accepted, 200 duplicate, 200 ignored (no rule matched,
event stored), 400/401/404/413 with a JSON error, 503 when Redis cannot take the write.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import quote

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import ClientDisconnected

from webhooks.commit import Unconfirmed
from webhooks.errors import NotFound, PayloadTooLarge, RequestTimeout
from webhooks.sources.base import InboundRequest
from webhooks.sources.common import check_occurred_at
from webhooks.state import get_state
from webhooks.templating import time_limit

bp = Blueprint("ingest", __name__)


@bp.post("/webhooks/<source>")
def receive(source: str) -> tuple[Response, int]:
    state = get_state()
    g.sb_loaded = loaded = state.loaded  # one config for the whole request (a reload swaps)
    verifier = loaded.sources.get(source)
    if verifier is None:
        raise NotFound(f"no source named {source!r}", code="unknown_source")
    inbound = InboundRequest(
        method=request.method,
        url=_raw_url() if verifier.needs_url else request.path,
        headers=cast(Mapping[str, str], request.headers),  # werkzeug Headers: case-insensitive
        body=_body(state.settings.max_body, state.settings.body_timeout),
        received_at=time.time(),
    )
    verifier.verify(inbound)
    events = verifier.parse(inbound)
    for event in events:
        check_occurred_at(event)  # before anything is stored: all or nothing
    accepted: list[str] = []
    duplicates: list[str] = []
    tasks = 0
    writer = state.commit  # concurrent requests share one pipeline (webhooks.commit)
    # (event, tasks, outcome) per event: counted and logged by webhooks.metrics
    g.sb_events = seen = []
    with time_limit():  # one budget for the request: a HubSpot batch is many events
        mapped = [(event, loaded.rules.tasks_for(event)) for event in events]
    try:
        results = writer.store_events(mapped)
    except Unconfirmed as exc:  # stored (some), not confirmed: a 503, and its log says so
        g.sb_unconfirmed = [m for m, stored in zip(mapped, exc.stored, strict=True) if stored]
        raise
    for (event, event_tasks), stored in zip(mapped, results, strict=True):
        if stored:
            accepted.append(event.id)
            tasks += len(event_tasks)
            seen.append((event, event_tasks, "accepted" if event_tasks else "ignored"))
        else:
            duplicates.append(event.id)
            seen.append((event, event_tasks, "duplicate"))
    return _answer(accepted, duplicates, tasks)


def _raw_url() -> str:
    """The URL as the sender wrote it, escapes and all (HubSpot signs it so): werkzeug's
    ``request.url`` decodes ``%C3%A9`` and ``%7E``, and such a query string never matched.
    The path is the server's raw one when it keeps it (gunicorn's ``RAW_URI``)."""
    environ = request.environ
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    path = raw.split("?", 1)[0]
    if not path.startswith("/"):  # none kept, or an absolute-form request line
        path = quote(request.path, safe="/:@!$&'()*+,;=%")
    query = environ.get("QUERY_STRING", "")
    return request.host_url.rstrip("/") + path + (f"?{query}" if query else "")


def _body(limit: int, stall: float) -> bytes:
    """The request body, or 413. A Content-Length over the limit is refused while reading
    (MAX_CONTENT_LENGTH); a chunked body is read to one byte past it and refused here.

    Under gunicorn, a sender silent for ``stall`` seconds mid-body is answered 408 and the
    connection closed: gthread gives each request a thread until its body is read, so a
    few stalled senders would hold them all. (Trickling a byte at a time still holds one:
    in production put a buffering proxy in front, docs/deploy.md.)"""
    sock = request.environ.get("gunicorn.socket")
    before = sock.gettimeout() if sock is not None else None
    if sock is not None:
        sock.settimeout(stall)
    try:
        body = request.get_data(cache=False)
    except ClientDisconnected as exc:  # werkzeug's word for any error while reading
        if isinstance(exc.__context__, TimeoutError):
            raise RequestTimeout(f"no part of the body came for {stall:g} s") from None
        raise
    finally:
        if sock is not None:
            sock.settimeout(before)  # the answer, and the next request, as the server had it
    if len(body) > limit:
        raise PayloadTooLarge(f"the body is over {limit} bytes")
    g.sb_body = body  # for the log line of a webhook refused after this (never read twice)
    return body


def _answer(accepted: list[str], duplicates: list[str], tasks: int) -> tuple[Response, int]:
    body: dict[str, Any]
    if not accepted:
        body = {"status": "duplicate", "event_ids": duplicates, "tasks": 0}
        return jsonify(body), 200
    body = {"status": "accepted" if tasks else "ignored", "event_ids": accepted, "tasks": tasks}
    if duplicates:
        body["duplicates"] = duplicates
    return jsonify(body), 202 if tasks else 200
