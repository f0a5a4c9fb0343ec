"""The engine's side of registered styles: a job given a prepared style takes the targets it
keeps, computes only the missing ones, and gets the same pixels as from the pictures."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from styleserve.options import resolve
from styleserve_server.engine import run_job
from styleserve_server.engine.prepared import Grams, StyleKey
from styleserve_server.engine.style import prepare


class Kept:
    """A PreparedStyle over plain dicts that counts what it had to compute and decode."""

    def __init__(self, pictures: list[Image.Image]) -> None:
        self._pictures = pictures
        self.grams_kept: dict[StyleKey, Grams] = {}
        self.computed: list[StyleKey] = []
        self.decoded = 0

    @property
    def count(self) -> int:
        return len(self._pictures)

    def pictures(self) -> list[Image.Image]:
        self.decoded += 1
        return self._pictures

    def grams(self, key: StyleKey, compute: Callable[[Sequence[Image.Image]], Grams]) -> Grams:
        if key not in self.grams_kept:
            self.computed.append(key)
            self.grams_kept[key] = compute(self.pictures())
        return self.grams_kept[key]

    def vector(self, compute: Callable[[Sequence[Image.Image]], np.ndarray]) -> np.ndarray:
        raise AssertionError("no feed-forward network here")


def test_a_prepared_style_gives_the_pictures_pixels_without_recomputing(
    tiny, content, warm_style, cold_style
) -> None:
    options = resolve("default", seed=7, size=48, iterations=3, style_blend=(2, 1))
    styles = [warm_style, cold_style]
    direct = list(run_job(tiny, content, styles, options))[-1]
    style = Kept(styles)
    prepare(style, tiny, options, None, None)
    prepared = len(style.computed)
    assert prepared == 2 and style.decoded == 2  # the quarter-size stage and the full size
    kept = list(run_job(tiny, content, [], options, style=style))[-1]
    assert np.array_equal(np.asarray(kept.image), np.asarray(direct.image))
    assert len(style.computed) == prepared and style.decoded == 2
    # A larger output asks for one new resolution (its quarter-size stage is still 16 px).
    list(run_job(tiny, content, [], options.replace(size=64), style=style))
    assert len(style.computed) == prepared + 1


def test_colour_preservation_takes_the_pictures_each_time(tiny, content, warm_style) -> None:
    options = resolve("default", seed=7, size=48, iterations=2, preserve_color=True)
    direct = list(run_job(tiny, content, [warm_style], options))[-1]
    style = Kept([warm_style])
    kept = list(run_job(tiny, content, [], options, style=style))[-1]
    # The style's luminance is matched to each stage's content: nothing to keep.
    assert style.computed == [] and style.decoded == 2
    assert np.array_equal(np.asarray(kept.image), np.asarray(direct.image))
