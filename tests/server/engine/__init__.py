"""Tests of the engine, server/styleserve_server/engine (test_X.py tests X.py): torch alone."""
