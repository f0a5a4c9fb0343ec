"""Tests of the service, server/styleserve_server (test_X.py tests X.py), through real servers."""
