"""``run_video``: a clip's frames stylised in order, each kept consistent with the one before.

A video is a sequence of jobs on one style, one per frame, so it is ``run_job`` (or the instant
tier's one pass) per frame, with what ties the frames together added here: the previous
stylised frame carried onto the current one by the optical flow (``engine.temporal``) as the
optimisation's start and temporal term, or blended into the instant tier's picture. The
style's targets (and the instant tier's style vector) are computed for the first frame and kept
for the others. Frames arrive from an iterator, one at a time, so that the caller decides how
far ahead of the stylisation it reads; the records go out in the order a caller relays them.
With ``temporal_weight`` 0 every frame is exactly the picture a job on that frame alone makes
(with the video's one seed).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image
from styleserve.options import StyleOptions
from styleserve.plan import output_size, plan_frame
from styleserve_export.artifact import Backbone

from styleserve_server.engine.feed_forward import FeedForward
from styleserve_server.engine.imaging import resize
from styleserve_server.engine.job import run_job
from styleserve_server.engine.precision import PrecisionChoice
from styleserve_server.engine.prepared import Grams, PreparedStyle, StyleKey
from styleserve_server.engine.records import (
    Finished,
    FrameDone,
    Iterate,
    Losses,
    VideoDone,
    stop_if_cancelled,
)
from styleserve_server.engine.temporal import Carried, FlowTracker, blend, temporal_target

__all__ = ["run_video"]

_NO_LOSSES = Losses(total=0.0, content=0.0, style=0.0, tv=0.0)


class _KeptStyle:
    """A video's style, its targets and vector kept for all its frames: of its pictures, or
    of a registered style (which keeps them too where its cache has room)."""

    def __init__(self, pictures: Sequence[Image.Image], prepared: PreparedStyle | None) -> None:
        self._pictures = list(pictures)
        self._prepared = prepared
        self._kept: dict[Hashable, Any] = {}

    @property
    def count(self) -> int:
        return len(self._pictures) if self._prepared is None else self._prepared.count

    def pictures(self) -> list[Image.Image]:
        if not self._pictures and self._prepared is not None:
            self._pictures = self._prepared.pictures()
        return self._pictures

    def grams(self, key: StyleKey, compute: Callable[[Sequence[Image.Image]], Grams]) -> Grams:
        if key not in self._kept:
            prepared = self._prepared
            held = prepared.grams(key, compute) if prepared else compute(self.pictures())
            self._kept[key] = held
        grams: Grams = self._kept[key]
        return grams

    def vector(self, compute: Callable[[Sequence[Image.Image]], np.ndarray]) -> np.ndarray:
        if "vector" not in self._kept:
            prepared = self._prepared
            held = prepared.vector(compute) if prepared else compute(self.pictures())
            self._kept["vector"] = held
        vector: np.ndarray = self._kept["vector"]
        return vector


def _reference(losses: Losses) -> float:
    """What a frame's temporal weight scales: the previous frame's loss without its own."""
    return losses.total - losses.temporal


def run_video(
    frames: Iterable[Image.Image],
    styles: Sequence[Image.Image],
    options: StyleOptions,
    *,
    backbone: Backbone | None = None,
    feed_forward: FeedForward | None = None,
    style: PreparedStyle | None = None,
    cancel: threading.Event | None = None,
    precision: PrecisionChoice | None = None,
    tile_pixels: int | None = None,
) -> Iterator[Iterate | FrameDone | VideoDone]:
    """Stylise ``frames`` (RGB pictures of one size) with ``styles`` (or the registered
    ``style`` standing for them): yields each frame's Iterate records (numbered within the
    frame, as ``run_job`` numbers them) and then its FrameDone, in order, and a VideoDone last.

    ``options.method`` picks the tier: the optimisation on ``backbone`` (``precision`` and
    ``tile_pixels`` as for ``run_job``) or the instant tier's ``feed_forward``, which the
    optimisation also uses for ``init`` "feed_forward". Frames after the first follow
    ``plan_frame`` and, with ``temporal_weight`` above 0, keep the previous stylised frame
    where the flow holds (the optimisation starts from it and holds it by its temporal term;
    the instant tier blends ``temporal_weight`` of it in).

    Raises JobCancelled within one iteration, one tile's feed-forward pass or one frame's
    flow of ``cancel``.
    """
    started = time.perf_counter()
    seed = options.seed if options.seed is not None else secrets.randbelow(2**63)
    options = options.replace(seed=seed)
    kept = _KeptStyle(styles, style)
    instant = options.method == "feed_forward"
    if instant and feed_forward is None:
        raise ValueError("the instant tier needs a feed-forward network")
    if not instant and backbone is None:
        raise ValueError("the optimisation needs a backbone")
    consistent = options.temporal_weight > 0
    # Without the temporal term no frame looks at the one before: no flow, no working copies.
    tracker = FlowTracker() if consistent else None
    previous: tuple[np.ndarray, np.ndarray, Losses] | None = None  # input, output, losses
    setup = 0.0
    choice: PrecisionChoice | None = None
    size = (0, 0)
    count = 0
    for index, frame in enumerate(frames):
        stop_if_cancelled(cancel, "video")
        size = output_size(frame.size, options)
        carried: Carried | None = None
        working: np.ndarray | None = None
        if tracker is not None:
            working = np.asarray(resize(frame, size, options.resize))
            if previous is not None:
                carried = tracker.carry(previous[0], working, previous[1])
                # The flow takes seconds at big frames and cannot stop midway.
                stop_if_cancelled(cancel, "video")
        if instant:
            assert feed_forward is not None
            picture = feed_forward.picture(frame, [], options, style=kept, cancel=cancel)
            if carried is not None:
                picture = Image.fromarray(
                    blend(np.asarray(picture), carried, options.temporal_weight), "RGB"
                )
            done = FrameDone(index, picture, _NO_LOSSES, 0, _fraction(carried))
        else:
            assert backbone is not None
            job_options, init_image = options, None
            if carried is not None:
                start = np.clip(np.rint(carried.picture), 0, 255).astype(np.uint8)
                job_options, init_image = options.replace(init="image"), Image.fromarray(start)
            elif options.init == "feed_forward" and feed_forward is not None:
                # To the engine, the feed-forward start is a given starting picture.
                init_image = feed_forward.picture(frame, [], options, style=kept, cancel=cancel)
                job_options = options.replace(init="image")
            held = None
            if carried is not None and previous is not None:
                reference = _reference(previous[2])
                held = temporal_target(carried, options.temporal_weight, reference, backbone.device)
            finished: Finished | None = None
            for record in run_job(
                backbone,
                frame,
                [],
                job_options,
                init_image=init_image,
                cancel=cancel,
                precision=precision,
                style=kept,
                stages=plan_frame(frame.size, options, index),
                tile_pixels=tile_pixels,
                temporal=held,
            ):
                if isinstance(record, Iterate):
                    yield record
                else:
                    finished = record
            assert finished is not None
            setup += finished.setup_seconds
            choice = finished.precision_choice
            done = FrameDone(
                index, finished.image, finished.losses, finished.iterations, _fraction(carried)
            )
        yield done
        if working is not None:
            previous = (working, np.asarray(done.image), done.losses)
        count += 1
    yield VideoDone(
        frames=count,
        width=size[0],
        height=size[1],
        seed=seed,
        precision_choice=choice,
        setup_seconds=setup,
        work_seconds=time.perf_counter() - started - setup,
    )


def _fraction(carried: Carried | None) -> float:
    return 0.0 if carried is None else carried.fraction
