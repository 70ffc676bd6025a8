"""Vendor simulators: one Flask app per vendor, mounted together under ``/<kind>``."""
