"""The WSGI entry point for gunicorn: ``gunicorn webhooks.wsgi:app`` (settings from env).

Logging is configured here (JSON lines on stderr, secrets redacted), not in the factory:
tests and embedders build apps without touching the process's logging.
"""

from config.logs import configure_logging
from webhooks import create_app

app = create_app()
configure_logging(app.extensions["switchboard"].config.secrets)
