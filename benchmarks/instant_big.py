"""The instant tier at print sizes: time, peak memory and seams, whole and in tiles.

Why a benchmark of its own: the feed-forward networks cost memory in proportion to the pixels
and, on the CPU, cannot run whole past 2**24 pixels, so big outputs are made in tiles that share
the whole picture's normalisation (``engine.feed_forward_tiles``). This measures what that
costs and shows that it changes nothing. For each size (tubingen.jpg enlarged, starry_night.jpg
as the style, the exported magenta-arbitrary networks) it runs ``FeedForward.picture`` in a
fresh process per way of painting, so that each peak RSS (VmHWM) is that one picture's, and
prints:

- whole: seconds and peak RSS of the one-pass picture (where onnxruntime can make it);
- tiled: the same with a tile budget of ``--tile-mp`` megapixels (halos included), the number
  of tiles, the seam measure (``seams.seam_ratio`` on the tile borders: 1.0 means the borders
  look like anywhere else; the whole picture's value on the same borders is printed beside it)
  and the max / mean absolute difference to the whole picture in 0..255 levels.

Peak RSS is also given above the process's RSS once the networks are loaded and the content
is decoded (what ``instant_peak_bytes`` predicts). The CPU is named first.

    python benchmarks/instant_big.py [--sizes 1,4,12,33] [--tile-mp 0.25] [--regions N]
        [--cache-dir DIR]

Sizes are megapixels (4:3) or WIDTHxHEIGHT; 33 is 8K (7680x4320).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import CONTENT, STYLE, machine, proc_status
from PIL import Image
from seams import borders, seam_ratio
from styleserve_server.engine.feed_forward_tiles import PLANE_LIMIT

GIB = 2**30
NAMED = {"33": (7680, 4320), "8k": (7680, 4320), "4k": (3840, 2160)}
Image.MAX_IMAGE_PIXELS = None  # the pictures here are made, not received


def size_of(text: str) -> tuple[int, int]:
    if text.lower() in NAMED:
        return NAMED[text.lower()]
    if "x" in text:
        width, height = text.lower().split("x")
        return int(width), int(height)
    scale = math.sqrt(float(text) * 1e6 / 12)
    return round(4 * scale), round(3 * scale)


def child(args: argparse.Namespace) -> None:
    """One picture in this process; its figures as one JSON line, its pixels in ``--save``."""
    import torch
    from styleserve.options import StyleOptions
    from styleserve_export.loader import load_feed_forward
    from styleserve_server.engine.feed_forward import FeedForward

    budget = None if args.tile_mp is None else int(args.tile_mp * 2**20)
    artifact = load_feed_forward("magenta-arbitrary", cache_dir=args.cache_dir)
    network = FeedForward(artifact, torch.device("cpu"), args.threads, tile_pixels=budget)
    network.warm_up()
    width, height = size_of(args.size)
    content = Image.open(CONTENT).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    style = Image.open(STYLE).convert("RGB")
    options = StyleOptions(width=width, height=height)
    styles, regions = [style], None
    if args.regions > 1:
        # Vertical bands, each painted by the style picture turned a little further.
        styles = [style.rotate(30 * i) for i in range(args.regions)]
        band = np.arange(width) * args.regions // width
        regions = [np.broadcast_to(band == i, (height, width)) for i in range(args.regions)]
    tiles = network.tiles(width, height)
    if tiles:
        network.picture(content.resize((256, 192)), [style], StyleOptions(size=256))  # builds
    base = proc_status("VmRSS")
    start = time.perf_counter()
    result = network.picture(content, styles, options, regions=regions)
    seconds = time.perf_counter() - start
    np.save(args.save, np.asarray(result))
    figures = {"seconds": seconds, "peak": proc_status("VmHWM"), "base": base, "tiles": tiles}
    print(json.dumps(figures))


def run(size: str, tile_mp: float | None, save: Path, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, __file__, "--child", "--size", size, "--save", str(save),
               "--threads", str(args.threads), "--regions", str(args.regions)]  # fmt: skip
    if tile_mp is not None:
        command += ["--tile-mp", str(tile_mp)]
    if args.cache_dir is not None:
        command += ["--cache-dir", str(args.cache_dir)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"  failed (exit {done.returncode}): {last}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _padded(side: int) -> int:
    return -(-side // 4) * 4


def seams(pictures: dict[str, np.ndarray], width: int, height: int, tiles: list) -> str:
    """The seam measure on the tile borders, beside its value on the same borders of the whole
    picture and on every 4th line of the tiled one: the borders fall on multiples of 4, where
    the network's two nearest 2x upsamplings leave lines a few per cent calmer than the rest
    (the measure reads about 0.96 there on a picture that has no borders at all)."""
    columns, rows = borders(tiles, width, height)
    tiled = Image.fromarray(pictures["tiled"])
    text = f"seam ratio {seam_ratio(tiled, columns, rows):.3f}"
    if "whole" in pictures:
        whole = seam_ratio(Image.fromarray(pictures["whole"]), columns, rows)
        text += f" (whole picture on the same borders: {whole:.3f})"
    aligned = seam_ratio(tiled, range(4, width, 4), range(4, height, 4))
    return text + f"; on every 4th line: {aligned:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,12,33", help="megapixels or WxH, comma-separated")
    parser.add_argument("--tile-mp", type=float, help="tile budget, Mi pixels (default 0.25)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    parser.add_argument("--regions", type=int, default=1, help="styles, each painting a band")
    parser.add_argument("--cache-dir", type=Path, help="export cache (default: the exporter's)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    import onnxruntime

    args.tile_mp = 0.25 if args.tile_mp is None else args.tile_mp
    print(f"{machine()}, onnxruntime {onnxruntime.__version__}, {args.threads} onnxruntime threads")
    print(f"tile budget {args.tile_mp:g} Mpixels (2**20), halos included")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes.split(","):
            width, height = size_of(size)
            print(f"{width}x{height} ({width * height / 1e6:.1f} MP):")
            pictures = {}
            ways: list[tuple[str, float | None]] = [("whole", None), ("tiled", args.tile_mp)]
            if _padded(width) * _padded(height) >= PLANE_LIMIT:
                print(
                    "  whole: cannot run on the CPU (onnxruntime's fused QLinearGlobalAveragePool "
                    f"refuses planes of {PLANE_LIMIT} pixels or more)"
                )
                ways = ways[1:]
            for way, tile_mp in ways:
                save = Path(folder) / f"{way}.npy"
                figures = run(size, tile_mp, save, args)
                if figures is None:
                    continue
                pictures[way] = np.load(save)
                above = (figures["peak"] - figures["base"]) / GIB
                line = (
                    f"  {way}: {figures['seconds']:.2f} s, peak RSS {figures['peak'] / GIB:.2f} "
                    f"GiB ({above:.2f} GiB above the loaded process)"
                )
                if way == "tiled" and figures["tiles"]:
                    line += f", {len(figures['tiles'])} tiles, "
                    line += seams(pictures, width, height, figures["tiles"])
                elif way == "tiled":
                    line += ", whole (fits the budget)"
                print(line, flush=True)
            if len(pictures) == 2:
                difference = np.abs(pictures["whole"].astype(np.int16) - pictures["tiled"])
                print(
                    f"  tiled vs whole: max {int(difference.max())}, mean {difference.mean():.4f} "
                    "levels of 255"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
