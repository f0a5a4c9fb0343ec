"""Coarse-to-fine stage planning, shared by the engine and the CLI."""

from __future__ import annotations

from styleserve.plan import Stage, plan_stages


def test_coarse_stages_get_a_twentieth_of_the_iterations() -> None:
    assert plan_stages((500, 300), (0.25, 0.5, 1.0), 300) == [
        Stage(0, 125, 75, 15),
        Stage(1, 250, 150, 15),
        Stage(2, 500, 300, 300),
    ]
    assert [s.iterations for s in plan_stages((500, 300), (0.5, 1.0), 4)] == [1, 4]


def test_tiny_stages_keep_sixteen_pixels_and_merge() -> None:
    stages = plan_stages((40, 20), (0.1, 0.25, 0.5, 1.0), 10)
    assert [(s.index, s.width, s.height) for s in stages] == [(0, 16, 16), (1, 20, 16), (2, 40, 20)]
