"""The WSGI entry point for gunicorn: ``gunicorn webhooks.wsgi:app`` (settings from env).

Logging is configured here (JSON lines on stderr, secrets redacted), not in the factory:
tests and embedders build apps without touching the process's logging. A bad setting or
config stops gunicorn with one line naming it (``AppImportError``), and so does a signing
secret that is the config's own ``${VAR:-default}`` (``SWITCHBOARD_DEMO=1`` allows it, as
``up`` does). The thread that resumes bulk-replay jobs whose process died
(:mod:`webhooks.ops.jobs`) starts here too: one per gunicorn worker (the module is
imported after the fork; no ``--preload``), and so does the one that reloads the config
when its file changes (:mod:`webhooks.reload`).
"""

from collections.abc import Iterable

from gunicorn.errors import AppImportError

from config.errors import ConfigError
from config.logs import configure_logging
from config.model import demo_secrets
from config.settings import EnvError
from webhooks import create_app
from webhooks.ops.jobs import JobResumer
from webhooks.reload import ConfigWatcher

try:
    app = create_app()
except (EnvError, ConfigError) as exc:  # gunicorn prints this line and stops, no traceback
    raise AppImportError(f"switchboard: {exc}") from None
_state = app.extensions["switchboard"]
if not _state.settings.demo and (_why := demo_secrets(_state.config)):
    raise AppImportError(f"switchboard: {_why}")
_ops_tokens = app.extensions.get("switchboard_ops_tokens", {}).values()


def _log_redacting(secrets: Iterable[str]) -> None:
    # the ops tokens are secrets too (a reload passes every config's secrets it has seen)
    configure_logging({*secrets, *_ops_tokens})


_log_redacting(_state.config.secrets)
ConfigWatcher(app, on_secrets=_log_redacting).start()  # rules and sources, when changed


def _resume_stalled_jobs() -> list[str]:
    from webhooks.ops.api import ops

    with app.app_context():
        return ops().resume_stalled()  # type: ignore[no-any-return]


JobResumer(_resume_stalled_jobs).start()
