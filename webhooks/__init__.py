"""The web service: ``create_app(settings)`` builds the Flask app; nothing happens at import."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from config.model import Config
    from config.settings import Settings


def create_app(
    settings: Settings | None = None, config: Config | None = None, redis_url: str | None = None
) -> Flask:
    """Build the app from ``settings`` (default: the environment) and its config file."""
    from flask import Flask

    from config.loader import load_config
    from config.settings import Settings
    from webhooks import access_log, health, http_errors, ingest, metrics, openapi
    from webhooks.state import AppState

    settings = settings or Settings.from_env()
    config = config or load_config(settings.config_path)
    app = Flask(__name__)
    # one byte over: a chunked body (no Content-Length) is cut at the limit, not refused,
    # so ingest reads max_body + 1 and refuses a body that long itself (webhooks.ingest)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body + 1
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["switchboard"] = AppState.build(settings, config, redis_url)
    http_errors.register(app)
    app.register_blueprint(ingest.bp)
    app.register_blueprint(health.bp)
    metrics.init_app(app)
    access_log.init_app(app)
    app.register_blueprint(openapi.bp)
    if settings.ops_token:
        _register_ops(app, settings.ops_token)
    return app


def _register_ops(app: Flask, token_setting: str) -> None:
    """/ops exists only when a token is configured (otherwise it answers 404)."""
    from datetime import timedelta

    from webhooks.ops import api, page
    from webhooks.ops.auth import parse_tokens, secret_key

    tokens = parse_tokens(token_setting)
    app.extensions["switchboard_ops_tokens"] = tokens
    app.secret_key = secret_key(tokens)
    app.config.update(
        SESSION_COOKIE_NAME="switchboard_ops",
        SESSION_COOKIE_PATH="/ops",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    app.session_interface = page.Sessions()
    app.register_blueprint(api.bp)
    app.register_blueprint(page.bp)
