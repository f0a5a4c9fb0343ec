"""The network's memory layout: NCHW against channels-last (NHWC), on this machine's CPU.

oneDNN's convolutions work in a blocked or NHWC layout, so an NCHW network pays a reorder of
its input and output around every convolution; ``engine.features`` runs channels-last on CPUs
in every precision. This measures that choice on the real VGG16, in each precision the server
would time here (float32, and bfloat16 where the CPU computes in it), the two layouts
interleaved so that a burst of load from a neighbour hits both alike:

1. a loss and gradient of the seed preset's objective at 500 x 300 (the Keras example's, as
   ``seed_vs_default.py`` runs it);
2. the default preset's at 816 x 608 (a big output's settle stage: one tile);
3. the same at 1672 x 1254 in tiles of the server's default ``tile_pixels`` (a 12 MP job's
   climbing stage: three tiles);
4. a forward pass without autograd at 1152 x 864 (the content's and the style pictures'
   targets).

It prints the median seconds of each layout, their ratio, and how far the channels-last loss
is from the NCHW one (relative: float rounding only). ``--reduced`` runs the same cases on the
tiny test network at a quarter of the sides, tiles of the least ``tile_pixels``, in seconds:
the test suite runs it so that this script cannot rot.

    python benchmarks/layout.py [--repeats N] [--cache-dir DIR]
    python benchmarks/layout.py --reduced
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from harness import machine
from styleserve.options import KERAS_VGG16, PRESETS
from styleserve_export.artifact import TINY_BACKBONE
from styleserve_export.loader import load_backbone
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.objective import Objective, Weights
from styleserve_server.engine.precision import bf16_arithmetic, probe_pictures
from styleserve_server.settings import MIN_TILE_PIXELS, TILE_PIXELS

LAYERS = (*PRESETS["default"].content_layers, *PRESETS["default"].style_layers)


def _evaluation(
    net: FeatureNet, size: tuple[int, int], tile_pixels: int | None, preset: str = "default"
) -> Callable[[], float]:
    """One loss and gradient of ``preset``'s objective at ``size``: its loss."""
    content, style, picture = probe_pictures(size, net.device)
    objective = Objective(
        net,
        Weights.from_options(PRESETS[preset]),
        content,
        [style],
        tile_pixels=tile_pixels,
    )
    x = picture.requires_grad_(True)

    def run() -> float:
        loss, _ = objective(x)
        torch.autograd.grad(loss, x)
        return float(loss.detach())

    return run


def _forward(net: FeatureNet, size: tuple[int, int]) -> Callable[[], float]:
    """One forward pass without autograd at ``size``: its deepest layer's mean."""
    picture, _, _ = probe_pictures(size, net.device)

    def run() -> float:
        with torch.no_grad():
            return float(net(picture, LAYERS)["block5_conv1"].float().mean())

    return run


def _median_seconds(runs: dict[bool, Callable[[], float]], repeats: int) -> dict[bool, float]:
    """Each run's median seconds over ``repeats``, after an untimed one, interleaved."""
    for run in runs.values():
        run()
    seconds: dict[bool, list[float]] = {layout: [] for layout in runs}
    for _ in range(repeats):
        for layout, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[layout].append(time.perf_counter() - start)
    return {layout: statistics.median(s) for layout, s in seconds.items()}


@dataclass(frozen=True)
class Scale:
    """The network the cases run on, what their sides are divided by, and their tile budget."""

    backbone: str = KERAS_VGG16
    divisor: int = 1
    tile_pixels: int = TILE_PIXELS


FULL = Scale()
REDUCED = Scale(TINY_BACKBONE, 4, MIN_TILE_PIXELS)

Case = tuple[str, Callable[[FeatureNet], Callable[[], float]]]


def _cases(scale: Scale) -> list[Case]:
    def size(width: int, height: int) -> tuple[int, int]:
        return width // scale.divisor, height // scale.divisor

    seed, one, tiled, forward = size(500, 300), size(816, 608), size(1672, 1254), size(1152, 864)
    return [
        (f"seed loss+gradient {seed[0]}x{seed[1]}", lambda n: _evaluation(n, seed, None, "seed")),
        (
            f"default loss+gradient {one[0]}x{one[1]}, one tile",
            lambda n: _evaluation(n, one, None),
        ),
        (
            f"default loss+gradient {tiled[0]}x{tiled[1]}, tiles of {scale.tile_pixels}",
            lambda n: _evaluation(n, tiled, scale.tile_pixels),
        ),
        (f"forward {forward[0]}x{forward[1]}", lambda n: _forward(n, forward)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--reduced", action="store_true", help="tiny network, seconds")
    args = parser.parse_args(argv)
    scale = REDUCED if args.reduced else FULL
    backbone = load_backbone(scale.backbone, cache_dir=args.cache_dir, device="cpu")
    print(machine(), flush=True)
    precisions = ["float32"]
    if bf16_arithmetic(torch.cpu.get_capabilities()):
        precisions.append("bfloat16")
    cases = _cases(scale)
    for precision in precisions:
        nets = {
            layout: FeatureNet(backbone, precision, channels_last=layout)
            for layout in (False, True)
        }
        for name, make in cases:
            runs = {layout: make(net) for layout, net in nets.items()}
            seconds = _median_seconds(runs, args.repeats)
            nchw, nhwc = runs[False](), runs[True]()
            print(
                f"{precision} {name}: NCHW {seconds[False]:.2f} s, channels-last "
                f"{seconds[True]:.2f} s ({seconds[True] / seconds[False]:.2f}x), "
                f"value {abs(nhwc - nchw) / abs(nchw):.1e} apart",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
