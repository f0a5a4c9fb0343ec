"""Tests of the benchmarks that the suite runs in a reduced form."""
