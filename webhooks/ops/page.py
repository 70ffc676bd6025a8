"""The ops web page under ``/ops/``: server-rendered (Jinja2), plain CSS, no JavaScript.

Login with an ops token sets a signed session cookie (path ``/ops``, HttpOnly, SameSite
Lax); every form carries a per-session CSRF token checked on every POST, login included.
Pages: the dead-letter table with counts, filters and paging; an entry with its history
and Replay / Discard; an event with its tasks; the audit log; bulk-replay job progress.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from marshmallow import ValidationError
from redis import RedisError, ResponseError
from werkzeug.wrappers import Response as BaseResponse

from webhooks.ops import schemas, throttle
from webhooks.ops.api import ops, tokens
from webhooks.ops.auth import identify
from webhooks.ops.service import ConflictError, NotFoundError
from webhooks.state import get_state
from worker import keys
from worker.audit import AUDIT_ACTIONS
from worker.deadletter import Page, parse_cursor
from worker.replication import NotReplicated

log = logging.getLogger("switchboard.ops")

bp = Blueprint(
    "ops_page",
    __name__,
    url_prefix="/ops",
    template_folder="../templates",
    static_folder="../static",
    static_url_path="/static",
)

OPEN_ENDPOINTS = frozenset({"ops_page.login", "ops_page.static"})
FILTER_NAMES = ("vendor", "rule", "source", "code", "since", "until")


class Sessions(SecureCookieSessionInterface):
    """The page's signed cookie, ``Secure`` whenever the page was reached over HTTPS,
    directly or through a proxy that says so (``X-Forwarded-Proto``); the demo's plain
    http://127.0.0.1 still signs in. Set as the app's session interface with /ops."""

    def get_cookie_secure(self, app: Any) -> bool:
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
        return request.is_secure or forwarded.lower() == "https"


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


@bp.app_template_filter("ts")
def format_ts(value: Any) -> str:
    if value in (None, ""):
        return "—"
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):  # not a time datetime can show
        return str(value)


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "ops_who": session.get("who")}


@bp.errorhandler(NotReplicated)
@bp.errorhandler(RedisError)
def _store_trouble(exc: Exception) -> tuple[str, int]:
    """A page, not the API's JSON 503, when Redis is down or (with
    ``SWITCHBOARD_MIN_REPLICAS``) did not confirm a replay or discard in time."""
    log.warning("ops page: %s: %s", type(exc).__name__, exc)
    if isinstance(exc, NotReplicated):
        message = (
            f"{exc}. It may have been done: look at the entry or the audit log, and press "
            "again if it was not (a second press does not queue it twice)."
        )
    elif isinstance(exc, ResponseError):  # e.g. "unknown command": an old Redis
        message = f"Redis refused a command ({exc}). Switchboard needs Redis 6.2 or newer."
    elif request.method == "POST":  # it may have gone away after part of the action
        message = (
            "The dead-letter store (Redis) went away during the action: it may or may not "
            "have been done. Look at the entry or the audit log before pressing again."
        )
    else:
        message = "The dead-letter store (Redis) is unavailable; try again shortly."
    return render_template("ops_unavailable.html", message=message, back=_back()), 503


def _back() -> str:
    """The ops page the person came from (the referrer's path, if one inside /ops)."""
    return _safe_next(urlsplit(request.referrer or "").path or None)


@bp.before_request
def _guard() -> BaseResponse | None:
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        expected = session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent.encode(), str(expected).encode()):
            # a page for a person (it was raw JSON): most often a tab from before a restart
            return Response(render_template("ops_expired.html", back=_back()), 400)
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if identify_session() is None:
        session.pop("who", None)
        return redirect(url_for("ops_page.login", next=request.full_path))
    return None


def identify_session() -> str | None:
    """The operator this cookie signed in, while that sign-in stands: its token is still
    configured and it has not signed out (the record in Redis is gone then, so a copy of
    the cookie taken earlier is worth nothing)."""
    who, sid = session.get("who"), session.get("sid")
    if not who or not sid or who not in tokens():
        return None
    # each page renews it, as each answer renews the cookie: 12 h after the last use
    stored = get_state().redis.getex(keys.ops_session(str(sid)), ex=_session_seconds())
    return str(who) if stored is not None and stored.decode() == who else None


def _session_seconds() -> int:
    """How long a sign-in's record lives: the cookie's own lifetime."""
    return int(current_app.permanent_session_lifetime.total_seconds())


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return response


_NEXT = re.compile(r"/ops/[\x21-\x7e]*")  # visible ASCII: no CR/LF for a Location header


def _safe_next(target: str | None) -> str:
    # only a path inside /ops: never an open redirect to another host
    if target and _NEXT.fullmatch(target):
        return target
    return url_for("ops_page.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | str:
    if request.method == "POST":
        client, address = get_state().redis, request.remote_addr or "unknown"
        wait = throttle.refused_for(client, address)
        if wait:
            error = f"Too many failed attempts from this address. Try again in {wait} s."
            return render_template("ops_login.html", error=error), 429
        who = identify(tokens(), request.form.get("token", "").strip())
        if who is None:
            throttle.failed(client, address)
            return render_template("ops_login.html", error="That token is not valid."), 401
        throttle.succeeded(client, address)
        session.clear()
        session.permanent = True
        session["who"] = who
        session["sid"] = sid = secrets.token_urlsafe(18)
        session["csrf"] = secrets.token_urlsafe(32)
        client.set(keys.ops_session(sid), who, ex=_session_seconds())
        return redirect(_safe_next(request.args.get("next")))
    return render_template("ops_login.html", error=None)


@bp.post("/logout")
def logout() -> BaseResponse:
    if sid := session.get("sid"):
        get_state().redis.delete(keys.ops_session(str(sid)))  # this cookie's copies too
    session.clear()
    return redirect(url_for("ops_page.login"))


def _filters() -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(filters for the store, the raw form values, problems)."""
    raw = {k: request.args.get(k, "").strip() for k in FILTER_NAMES}
    given = {k: v for k, v in raw.items() if v}
    try:
        loaded = schemas.DeadLetterFilter().load(given)
    except ValidationError as exc:
        problems = [f"{k}: {' '.join(map(str, v))}" for k, v in exc.messages.items()]  # type: ignore[union-attr]
        return {}, raw, problems
    return loaded, raw, []


@bp.get("/")
def index() -> str:
    service = ops()
    filters, raw, problems = _filters()
    for problem in problems:  # nothing listed: other entries under this filter's values
        flash(f"Filter not applied — {problem}", "error")  # would invite the wrong replay
    cursor = request.args.get("cursor") or None
    if cursor is not None:
        try:
            parse_cursor(cursor)
        except ValueError:
            flash("Page link ignored — not one this page gave; showing the first page", "error")
            cursor = None
    page = Page([], None) if problems else service.list(limit=50, cursor=cursor, **filters)
    next_args: dict[str, Any] = {k: v for k, v in raw.items() if v}
    return render_template(
        "ops_index.html",
        page=page,
        counts=service.counts(),
        raw=raw,
        filtered=bool(filters),
        bad_filter=bool(problems),
        next_url=url_for("ops_page.index", cursor=page.next_cursor, **next_args)
        if page.next_cursor
        else None,
        first_url=url_for("ops_page.index", **next_args) if cursor else None,
    )


@bp.get("/entry/<entry_id>")
def entry(entry_id: str) -> str | tuple[str, int]:
    try:
        data = ops().entry(entry_id)
    except NotFoundError:
        return render_template("ops_gone.html", entry_id=entry_id), 404
    audit = ops().audit(limit=20, entry_id=entry_id)
    return render_template("ops_entry.html", entry=data, audit=audit)


@bp.post("/entry/<entry_id>/replay")
def replay(entry_id: str) -> BaseResponse:
    try:
        result = ops().replay(entry_id, who=session["who"])
    except NotFoundError:
        flash(f"Dead letter {entry_id} is no longer in the store.", "info")
        return redirect(url_for("ops_page.index"))
    except ConflictError as exc:
        flash(f"Not replayed: {exc}", "error")
        return redirect(url_for("ops_page.entry", entry_id=entry_id))
    if result["status"] == "queued":
        flash("Replay queued. The entry leaves the list once the vendor accepts it.", "ok")
    else:
        flash("Already being replayed: nothing queued again.", "info")
    return redirect(url_for("ops_page.entry", entry_id=entry_id))


@bp.post("/entry/<entry_id>/discard")
def discard(entry_id: str) -> BaseResponse:
    try:
        ops().discard(entry_id, who=session["who"])
    except NotFoundError:
        flash(f"Dead letter {entry_id} is no longer in the store.", "info")
    else:
        flash(f"Discarded {entry_id} (recorded in the audit log).", "ok")
    return redirect(url_for("ops_page.index"))


@bp.post("/replay")
def bulk_replay() -> BaseResponse:
    filters, _, problems = _filters_from(request.form)
    if problems or not filters:
        flash("Bulk replay needs at least one valid filter.", "error")
        return redirect(url_for("ops_page.index"))
    service = ops()
    job = service.start_bulk_replay(filters, who=session["who"])
    service.run_bulk_replay_in_thread(job["id"])
    return redirect(url_for("ops_page.job", job_id=job["id"]))


def _filters_from(form: Any) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    raw = {k: (form.get(k) or "").strip() for k in FILTER_NAMES}
    try:
        return schemas.DeadLetterFilter().load({k: v for k, v in raw.items() if v}), raw, []
    except ValidationError as exc:
        return {}, raw, [str(exc.messages)]


@bp.get("/job/<job_id>")
def job(job_id: str) -> str | tuple[str, int]:
    try:
        data = ops().job(job_id)
    except NotFoundError:
        abort(404)
    return render_template("ops_job.html", job=data)


@bp.post("/job/<job_id>/cancel")
def cancel_job(job_id: str) -> BaseResponse:
    try:
        ops().cancel_bulk_replay(job_id, who=session["who"])
    except NotFoundError:
        abort(404)
    except ConflictError as exc:
        flash(f"Not cancelled: {exc}", "info")
    else:
        flash("Cancelled: entries not yet replayed are left as they are.", "ok")
    return redirect(url_for("ops_page.job", job_id=job_id))


@bp.get("/event")
def event() -> str | tuple[str, int] | BaseResponse:
    source = request.args.get("source", "").strip()
    event_id = request.args.get("id", "").strip()
    if not source or not event_id:
        flash("Give both the source and the event id.", "error")
        return redirect(url_for("ops_page.index"))
    try:
        data = ops().event(source, event_id)
    except NotFoundError:
        return render_template("ops_event.html", data=None, source=source, event_id=event_id), 404
    return render_template("ops_event.html", data=data, source=source, event_id=event_id)


@bp.post("/event/replay")
def event_replay() -> BaseResponse:
    source = request.form.get("source", "")
    event_id = request.form.get("id", "")
    try:
        result = ops().replay_event(source, event_id, who=session["who"])
    except NotFoundError:
        flash(f"No stored event {source}/{event_id}.", "error")
    except ConflictError as exc:
        flash(f"Not replayed: {exc}", "error")
    else:
        flash(f"Event mapped again with the current rules: {result['tasks']} task(s) queued.", "ok")
    return redirect(url_for("ops_page.event", source=source, id=event_id))


@bp.get("/audit-log")
def audit() -> str:
    """Operators' own actions by default (a bulk replay is one row, its start); ``each``
    adds the record a bulk replay writes per entry, which would crowd them out."""
    given = {k: v for k, v in request.args.items() if v and k != "each"}
    try:
        args = schemas.AuditArgs().load({"limit": 200, **given})
    except ValidationError as exc:
        flash(f"Filter not applied — {exc.messages}", "error")
        args = {"limit": 200}
    each = request.args.get("each") == "1"
    items = ops().audit(args["limit"], args.get("action"), args.get("id"), each)
    return render_template(
        "ops_audit.html", items=items, actions=AUDIT_ACTIONS, args=args, each=each
    )
