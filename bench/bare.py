"""The bare endpoint the ingest benchmark compares with: Flask answering 202, nothing else.

``gunicorn bench.bare:app`` (served exactly as ``switchboard web`` serves the real app).
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.post("/webhooks/<source>")
def receive(source: str) -> tuple[Response, int]:
    return jsonify({"status": "accepted", "event_ids": [], "tasks": 1}), 202


@app.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})
