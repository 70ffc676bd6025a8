"""All vendor simulators in one threaded HTTP server, each mounted at ``/<kind>``.

``http://127.0.0.1:8100/perfexcrm`` is a PerfexCRM base URL, ``/portabilling`` a
PortaBilling one, and so on. State lives in one process's memory.

Two ways to serve it: :func:`serve_forever` (``switchboard sandbox``) runs gunicorn with
ONE worker process (so the state is shared) and many threads, with HTTP keep-alive as real
vendors offer it; :func:`serve_in_thread` runs werkzeug's server inside the calling
process (tests read the simulators' state directly). Werkzeug's server closes every
connection, so each vendor call there pays a TCP connect and a new server thread.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, jsonify
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.base import Simulator
from sandbox.halopsa import HaloSimulator
from sandbox.perfexcrm import PerfexSimulator
from sandbox.portabilling import PortaSimulator
from sandbox.soliditech import SoliditechSimulator

SIMULATORS: dict[str, type[Simulator]] = {
    s.kind: s for s in (PortaSimulator, PerfexSimulator, SoliditechSimulator, HaloSimulator)
}


def build(kinds: list[str] | None = None) -> tuple[Any, dict[str, Simulator]]:
    """The WSGI app mounting one simulator per kind, and the simulators by kind."""
    sims = {kind: SIMULATORS[kind]() for kind in (kinds or list(SIMULATORS))}
    index = Flask("sandbox")

    @index.get("/")
    def listing() -> Any:
        return jsonify({"simulators": sorted(sims)})

    mounts: dict[str, Any] = {f"/{kind}": sim.create_app() for kind, sim in sims.items()}
    return DispatcherMiddleware(index, mounts), sims


def serve(host: str = "127.0.0.1", port: int = 8100) -> BaseWSGIServer:
    """Create the threaded server (``.serve_forever()`` runs it; port 0 picks a free one)."""
    app, _ = build()
    return make_server(host, port, app, threaded=True)


def serve_forever(host: str = "127.0.0.1", port: int = 8100, threads: int = 64) -> None:
    """Serve every simulator with gunicorn (one process, ``threads`` threads, keep-alive)."""
    from gunicorn.app.base import BaseApplication

    class _Sandbox(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": f"{host}:{port}",
                "workers": 1,  # the simulators' state lives in this one process
                "worker_class": "gthread",
                "threads": threads,  # latency/hang knobs sleep in a thread each
                "keepalive": 75,
                "timeout": 120,  # the worker's own heartbeat; hangs sleep in threads
                "graceful_timeout": 2,
                "loglevel": "warning",
                "control_socket_disable": True,  # a fixed path per user: two sandboxes clash
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return build()[0]

    _Sandbox().run()


def serve_in_thread(host: str = "127.0.0.1", port: int = 0) -> tuple[BaseWSGIServer, str]:
    server = serve(host, port)
    thread = threading.Thread(target=server.serve_forever, name="sandbox", daemon=True)
    thread.start()
    return server, f"http://{host}:{server.server_port}"
