"""Coarse-to-fine stage planning, shared by the engine and the CLI."""

from __future__ import annotations

from styleserve.plan import SETTLE_PIXELS, Stage, plan_climb, plan_stages


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


def test_big_outputs_settle_small_then_climb_doubling_the_side() -> None:
    stages = plan_climb((4000, 2105), (0.25, 1.0), 200)
    # The output's own size, where an iteration costs the most, gets the fewest.
    assert [(s.width, s.height, s.iterations) for s in stages] == [
        (250, 131, 10),
        (998, 525, 200),
        (1996, 1050, 10),
        (4000, 2105, 7),
    ]
    assert stages[1].width * stages[1].height <= SETTLE_PIXELS
    assert [s.index for s in stages] == [0, 1, 2, 3]


def test_a_last_step_of_little_more_side_is_merged_into_the_output() -> None:
    sides = [(s.width, s.height) for s in plan_climb((4000, 3000), (0.25, 1.0), 200)]
    assert sides[-2:] == [(1672, 1254), (4000, 3000)]


def test_outputs_up_to_the_settle_size_keep_the_presets_stages() -> None:
    assert plan_climb((1024, 512), (0.25, 1.0), 200) == plan_stages((1024, 512), (0.25, 1.0), 200)
