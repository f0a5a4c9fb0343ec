"""Tests of the SDK and CLI, client/styleserve (test_X.py tests X.py), and calls end to end."""
