"""The GPU check: what one accelerator does for styleserve, in one command of a few minutes.

A CPU session cannot tell how the engine behaves on a GPU (the precision probe's choice, how
much bf16 gains, how many jobs one device serves at once), and device time is scarce, so the
whole check is one prepared command that fits in 8 minutes on one H200:

1. the precision probe's choice (``measure_precision``) and its reason;
2. seconds per loss+gradient of the default objective at 512 px, float32 and bfloat16, in
   the network's default memory layout and in the other (NCHW or channels-last: float32 on a
   GPU keeps NCHW by default, unmeasured until this runs);
3. a default job at 512 px / 500 iterations in each precision: seconds, final loss, and the
   device's peak memory for it (``torch.cuda.max_memory_allocated``);
4. jobs per second through a real server (a ``styleserve-server`` process, called with
   ``styleserve.Client``) at 1, 4 and 16 concurrent jobs, with as many ``--job-slots``;
5. the instant tier's latency (``preset="instant"``), when the server has one;
6. a bfloat16 job of 3. with two regions (each half of the picture its own style, as
   ``regions``): seconds and peak memory beside the plain job's;
7. a default-preset job at 12 MP (4000x3000: it settles small and climbs, its last stages
   evaluated in tiles of the server's default ``tile_pixels``): seconds and peak memory;
8. a short consistent video (``run_video``, a pan over the content) in each tier: the
   optimisation's seconds per frame (bfloat16) and peak memory (beside 3.'s, the same size:
   what its temporal state adds, which admission counts as ``TEMPORAL_BYTES`` a pixel) and the
   instant tier's frames per second.

The last line is a one-line summary. ``--reduced`` runs the same code on the CPU with the tiny
test network at tiny sizes in seconds: the test suite runs it so that this script cannot rot.

    python benchmarks/gpu_check.py --cache-dir DIR   # DIR holds the exported keras-vgg16
    python benchmarks/gpu_check.py --reduced
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from harness import CONTENT, STYLE, serve
from PIL import Image
from styleserve import Client
from styleserve.options import resolve
from styleserve.plan import fit_longest_side
from styleserve_export.artifact import ArtifactError, Backbone
from styleserve_export.loader import load_backbone, load_feed_forward
from styleserve_server.engine import (
    FeedForward,
    Finished,
    FrameDone,
    measure_precision,
    run_job,
    run_video,
)
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.imaging import to_tensor
from styleserve_server.engine.objective import Objective, Weights
from styleserve_server.settings import TILE_PIXELS

T = TypeVar("T")

PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class Plan:
    """What the check runs: the H200 check or its reduced, CPU-sized twin."""

    device: str
    backbone: str
    # The direct jobs (3.) and the loss+gradient timing (2.).
    size: int
    iterations: int
    repeats: int
    # The server's jobs (4.): concurrency levels, each job's size and iterations, and how many
    # jobs each slot runs (enough for a steady rate).
    concurrency: tuple[int, ...]
    server_size: int
    server_iterations: int
    jobs_per_slot: int
    instant_calls: int
    feed_forward: str
    # The big job (7.): its output size, iterations (where it settles) and tile budget.
    big_size: tuple[int, int]
    big_iterations: int
    big_tile_pixels: int


FULL = Plan(
    "cuda", "keras-vgg16", 512, 500, 10, (1, 4, 16), 256, 100, 3, 20, "magenta-arbitrary",
    (4000, 3000), 200, TILE_PIXELS,
)  # fmt: skip
REDUCED = Plan(
    "cpu", "tiny-vgg16", 32, 2, 2, (1, 4, 16), 32, 1, 1, 2, "tiny-arbitrary",
    (400, 300), 2, 2**16,
)  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measured(device: torch.device, work: Callable[[], T]) -> tuple[T, float, int | None]:
    """``work()``'s answer, its seconds and the device's peak memory during it (None on a
    CPU)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    answer = work()
    _sync(device)
    seconds = time.perf_counter() - start
    return answer, seconds, torch.cuda.max_memory_allocated(device) if cuda else None


def _pictures(size: int) -> tuple[Image.Image, Image.Image]:
    content = Image.open(CONTENT).convert("RGB")
    content = content.resize(fit_longest_side(content.size, size), Image.Resampling.BICUBIC)
    style = Image.open(STYLE).convert("RGB").resize(content.size, Image.Resampling.BICUBIC)
    return content, style


def seconds_per_evaluation(
    backbone: Backbone, precision: str, size: int, repeats: int, channels_last: bool | None = None
) -> float:
    """Best-of ``repeats`` loss+gradient of the default objective at ``size`` px, the network
    in the ``channels_last`` layout (None: its default)."""
    content, style = (to_tensor(p, backbone.device) for p in _pictures(size))
    objective = Objective(
        FeatureNet(backbone, precision, channels_last=channels_last),
        Weights.from_options(resolve("default")),
        content,
        [style],
        (),
    )
    x = (0.5 * (content + style)).requires_grad_(True)
    best = float("inf")
    for i in range(repeats + 1):
        _sync(backbone.device)
        start = time.perf_counter()
        loss, _ = objective(x)
        torch.autograd.grad(loss, x)
        _sync(backbone.device)
        if i:  # the first call selects kernels
            best = min(best, time.perf_counter() - start)
    return best


@dataclass(frozen=True)
class JobFigures:
    seconds: float
    loss: float
    peak_bytes: int | None


def _halves(size: tuple[int, int]) -> list[np.ndarray]:
    """Two boolean masks of ``size`` (width, height): the left half and the right half."""
    left = np.zeros(size[::-1], dtype=bool)
    left[:, : size[0] // 2] = True
    return [left, ~left]


def direct_job(
    backbone: Backbone, precision: str, plan: Plan, *, regions: bool = False
) -> JobFigures:
    """A default job at the plan's size and iterations, run by the engine itself; with
    ``regions``, the content's left half in the style and its right half in the style turned
    upside down (two styles, two regions)."""
    content, style = _pictures(plan.size)
    options = resolve("default", size=plan.size, iterations=plan.iterations, precision=precision)
    styles = [style, style.rotate(180)] if regions else [style]
    masks = _halves(content.size) if regions else None
    finished, seconds, peak = _measured(
        backbone.device,
        lambda: list(run_job(backbone, content, styles, options, regions=masks))[-1],
    )
    assert isinstance(finished, Finished)
    return JobFigures(seconds, finished.losses.total, peak)


def big_job(backbone: Backbone, plan: Plan) -> JobFigures:
    """A default-preset bfloat16 job at the plan's big size, in tiles of its budget."""
    width, height = plan.big_size
    content, style = _pictures(max(plan.big_size))
    content = content.resize(plan.big_size)
    options = resolve(
        "default", width=width, height=height, iterations=plan.big_iterations, precision="bfloat16"
    )
    records = run_job(backbone, content, [style], options, tile_pixels=plan.big_tile_pixels)
    finished, seconds, peak = _measured(backbone.device, lambda: list(records)[-1])
    assert isinstance(finished, Finished) and finished.image.size == plan.big_size
    return JobFigures(seconds, finished.losses.total, peak)


# Frames of the video step (8.), and how far the camera pans between two (pixels of the size).
_VIDEO_FRAMES = 5
_PAN = 4


def _pan(size: int) -> list[Image.Image]:
    """``_VIDEO_FRAMES`` frames of a camera panning over the content, ``size`` px wide."""
    content, _ = _pictures(size + _PAN * _VIDEO_FRAMES)
    height = content.height - _PAN * _VIDEO_FRAMES
    return [
        content.crop((i * _PAN, i * _PAN // 2, i * _PAN + size, i * _PAN // 2 + height))
        for i in range(_VIDEO_FRAMES)
    ]


def video_step(
    backbone: Backbone, feed_forward: str, cache_dir: Path | None, plan: Plan
) -> tuple[JobFigures, float | None]:
    """A consistent optimisation video at the plan's size and iterations (bfloat16): seconds
    per frame, the last frame's loss and the device's peak memory (what admission counts as
    its job's peak plus ``TEMPORAL_BYTES`` a pixel, ``engine.memory``); and frames per second
    of the instant tier's (None without one)."""
    frames = _pan(plan.size)
    _, style = _pictures(plan.size)
    options = resolve("default", size=plan.size, iterations=plan.iterations, precision="bfloat16")
    done, seconds, peak = _measured(
        backbone.device,
        lambda: [
            r
            for r in run_video(frames, [style], options, backbone=backbone)
            if isinstance(r, FrameDone)
        ],
    )
    video = JobFigures(seconds / len(done), done[-1].losses.total, peak)
    if feed_forward == "none":
        return video, None
    network = FeedForward(load_feed_forward(feed_forward, cache_dir=cache_dir), backbone.device, 4)
    instant = resolve("instant", size=plan.size)
    list(run_video(frames[:1], [style], instant, feed_forward=network))  # loads the kernels
    start = time.perf_counter()
    made = [
        r
        for r in run_video(frames, [style], instant, feed_forward=network)
        if isinstance(r, FrameDone)
    ]
    return video, len(made) / (time.perf_counter() - start)


def _settings(plan: Plan, cache_dir: Path | None, slots: int, feed_forward: str) -> dict[str, Any]:
    """The server's settings for ``slots`` concurrent jobs (``harness.serve``'s keywords)."""
    return {
        "backbone": plan.backbone,
        "cache_dir": cache_dir,
        "device": plan.device,
        "job_slots": slots,
        "queue_size": slots * plan.jobs_per_slot,
        "grace_seconds": 0.0,
        "log_level": "ERROR",
        "feed_forward": feed_forward,
    }


def jobs_per_second(target: str, slots: int, plan: Plan) -> float:
    """``slots`` clients at once, each running ``plan.jobs_per_slot`` jobs in turn."""

    def client_jobs() -> None:
        with Client(target, timeout=600) as client:
            for _ in range(plan.jobs_per_slot):
                client.stylize(
                    CONTENT, STYLE, size=plan.server_size, iterations=plan.server_iterations
                )

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(slots) as pool:
        for future in [pool.submit(client_jobs) for _ in range(slots)]:
            future.result()
    return slots * plan.jobs_per_slot / (time.perf_counter() - start)


def instant_latency(target: str, plan: Plan) -> list[float] | None:
    """Seconds per ``preset="instant"`` call, or None when the server has no instant tier."""
    with Client(target, timeout=600) as client:
        info = client.info()
        if info.feed_forward is None or "instant" not in info.presets:
            return None
        latencies = []
        for _ in range(plan.instant_calls + 1):
            start = time.perf_counter()
            client.stylize(CONTENT, STYLE, preset="instant", size=plan.server_size)
            latencies.append(time.perf_counter() - start)
    return latencies[1:]  # the first call loads the session's kernels


def instant_tier(name: str, cache_dir: Path | None) -> tuple[str, str]:
    """The feed-forward setting to serve with and what became of the instant tier: device
    time is too scarce to lose a run to an artifact the cache does not hold."""
    if name == "none":
        return name, "not asked for"
    try:
        load_feed_forward(name, cache_dir=cache_dir)
    except ArtifactError as error:
        return "none", f"absent ({error})"
    return name, name


def _header(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return (
            f"device {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN"
            f" {torch.backends.cudnn.version()}, TF32 convolutions"
            f" {'on' if torch.backends.cudnn.allow_tf32 else 'off'}"
        )
    return f"device cpu, torch {torch.__version__}, {torch.get_num_threads()} threads"


_LAYOUTS = {False: "NCHW", True: "channels-last"}


def _mib(peak: int | None) -> str:
    return "n/a" if peak is None else f"{peak / 2**20:.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reduced", action="store_true", help="CPU, tiny network, seconds")
    parser.add_argument("--cache-dir", type=Path, help="export cache holding the weights")
    parser.add_argument(
        "--feed-forward", help="the server's instant tier (default: the plan's; none: skip)"
    )
    args = parser.parse_args(argv)
    plan = REDUCED if args.reduced else FULL
    backbone = load_backbone(plan.backbone, cache_dir=args.cache_dir, device=plan.device)
    print(_header(backbone.device), flush=True)
    feed_forward, tier = instant_tier(args.feed_forward or plan.feed_forward, args.cache_dir)
    print(f"instant tier: {tier}", flush=True)

    choice = measure_precision(backbone)
    print(f"precision probe: {choice.reason}", flush=True)
    evaluation = {
        p: seconds_per_evaluation(backbone, p, plan.size, plan.repeats) for p in PRECISIONS
    }
    for p, seconds in evaluation.items():
        default = FeatureNet(backbone, p).channels_last
        other = seconds_per_evaluation(backbone, p, plan.size, plan.repeats, not default)
        print(
            f"loss+gradient at {plan.size} px, {p}: {seconds * 1e3:.1f} ms"
            f" ({_LAYOUTS[default]}; {_LAYOUTS[not default]} {other * 1e3:.1f} ms)",
            flush=True,
        )
    jobs = {}
    for p in PRECISIONS:
        jobs[p] = figures = direct_job(backbone, p, plan)
        print(
            f"job {plan.size} px / {plan.iterations} iterations, {p}: {figures.seconds:.1f} s,"
            f" loss {figures.loss:.4g}, peak memory {_mib(figures.peak_bytes)}",
            flush=True,
        )

    regions = direct_job(backbone, "bfloat16", plan, regions=True)
    print(
        f"job {plan.size} px / {plan.iterations} iterations, bfloat16, two regions:"
        f" {regions.seconds:.1f} s ({regions.seconds / jobs['bfloat16'].seconds:.2f}x the plain"
        f" job), peak memory {_mib(regions.peak_bytes)}",
        flush=True,
    )

    big = big_job(backbone, plan)
    width, height = plan.big_size
    print(
        f"job {width}x{height} ({width * height / 1e6:.0f} MP), default preset, tiles of"
        f" {plan.big_tile_pixels} px: {big.seconds:.1f} s, peak memory {_mib(big.peak_bytes)}",
        flush=True,
    )

    video, video_fps = video_step(backbone, feed_forward, args.cache_dir, plan)
    per_frame = video.seconds
    instant_video = "no instant tier" if video_fps is None else f"instant {video_fps:.1f} frames/s"
    print(
        f"video {_VIDEO_FRAMES} frames at {plan.size} px, consistent: optimisation"
        f" {per_frame:.2f} s/frame (bfloat16), peak memory {_mib(video.peak_bytes)}"
        f" ({_mib(jobs['bfloat16'].peak_bytes)} for a picture's job), {instant_video}",
        flush=True,
    )

    rates: dict[int, float] = {}
    latencies: list[float] | None = None
    for slots in plan.concurrency:
        with serve(**_settings(plan, args.cache_dir, slots, feed_forward)) as server:
            rates[slots] = jobs_per_second(server.target, slots, plan)
            print(
                f"server with --job-slots {slots}, {slots} concurrent jobs of"
                f" {plan.server_size} px / {plan.server_iterations} iterations:"
                f" {rates[slots]:.2f} jobs/s",
                flush=True,
            )
            if latencies is None and feed_forward != "none":
                latencies = instant_latency(server.target, plan)
    if latencies is None:
        instant = "instant tier: not measured"
    else:
        instant = (
            f"instant p50 {statistics.median(latencies) * 1e3:.0f} ms,"
            f" max {max(latencies) * 1e3:.0f} ms"
        )
    print(instant, flush=True)

    f32, bf16 = jobs["float32"], jobs["bfloat16"]
    print(
        f"summary: {backbone.device.type} auto={choice.precision};"
        f" {plan.size}px/{plan.iterations}it float32 {f32.seconds:.1f} s,"
        f" bfloat16 {bf16.seconds:.1f} s ({f32.seconds / bf16.seconds:.1f}x);"
        f" loss+grad {evaluation['float32'] * 1e3:.1f}/{evaluation['bfloat16'] * 1e3:.1f} ms;"
        f" peak {_mib(f32.peak_bytes)}/{_mib(bf16.peak_bytes)};"
        f" two regions {regions.seconds / bf16.seconds:.2f}x;"
        f" {width}x{height} {big.seconds:.0f} s, peak {_mib(big.peak_bytes)};"
        f" video {per_frame:.2f} s/frame, {instant_video};"
        f" jobs/s {' '.join(f'{n}:{r:.2f}' for n, r in rates.items())}; {instant}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
