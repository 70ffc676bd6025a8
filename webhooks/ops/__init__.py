"""Ops: dead letters, events, replay and the audit log, through the API, page and CLI.

:mod:`webhooks.ops.service` holds every operation (plain calls on Redis, shared by the
three interfaces); :mod:`~webhooks.ops.auth` the ops tokens; :mod:`~webhooks.ops.api`
the JSON API and :mod:`~webhooks.ops.page` the server-rendered page, both under
``/ops`` and registered only when an ops token is configured.
"""
