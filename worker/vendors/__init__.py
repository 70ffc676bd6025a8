"""Vendor connectors, one module per vendor kind, found by kind through ``CONNECTORS``."""

from __future__ import annotations

from worker.vendors.base import Connector, VendorInstance
from worker.vendors.halopsa import HaloPSA
from worker.vendors.perfexcrm import PerfexCRM
from worker.vendors.portabilling import PortaBilling
from worker.vendors.soliditech import Soliditech

CONNECTORS: dict[str, type[Connector]] = {
    c.kind: c for c in (PortaBilling, PerfexCRM, Soliditech, HaloPSA)
}


def connector_for(instance: VendorInstance) -> Connector:
    return CONNECTORS[instance.kind](instance)
