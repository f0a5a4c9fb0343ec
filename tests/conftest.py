"""Shared fixtures, one plugin module per area so that each area owns its own."""

pytest_plugins = ["tests.fixtures_export", "tests.fixtures_server"]
