"""Fixtures for the weight artifact (owned by the export tests)."""
