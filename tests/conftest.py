"""Shared fixtures, one plugin module per area so that each area owns its own."""

pytest_plugins = ["fixtures_export", "fixtures_server"]
