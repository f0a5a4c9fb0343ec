"""Tests of what holds under load, fuzzing and faults: the service as a whole."""
