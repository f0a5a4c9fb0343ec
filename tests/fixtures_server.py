"""Fixtures for real servers on loopback ports (owned by the service tests)."""
