"""The WSGI entry point for gunicorn: ``gunicorn webhooks.wsgi:app`` (settings from env)."""

from webhooks import create_app

app = create_app()
