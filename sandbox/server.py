"""All vendor simulators in one threaded HTTP server, each mounted at ``/<kind>``.

``http://127.0.0.1:8100/perfexcrm`` is a PerfexCRM base URL, ``/portabilling`` a
PortaBilling one, and so on. State lives in this process's memory.
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


def serve_in_thread(host: str = "127.0.0.1", port: int = 0) -> tuple[BaseWSGIServer, str]:
    server = serve(host, port)
    thread = threading.Thread(target=server.serve_forever, name="sandbox", daemon=True)
    thread.start()
    return server, f"http://{host}:{server.server_port}"
