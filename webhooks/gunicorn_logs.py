"""gunicorn's own lines (start, workers booting, timeouts) as JSON, like every other line.

``switchboard web`` passes ``--logger-class webhooks.gunicorn_logs.JsonLogger``. gunicorn
keeps no access log: each webhook has its own line (:mod:`webhooks.metrics`) and every
other request one from :mod:`webhooks.access_log`, both JSON and redacted.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from config.logs import JsonFormatter


class JsonLogger(Logger):  # type: ignore[misc]
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())
