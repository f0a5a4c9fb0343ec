"""Video: what temporal consistency adds to a job's peak memory, per pixel of the frames.

A consistent clip holds more than its frames' jobs do: the previous frame's input and output,
the optical flows DIS starts the next pair from, the previous output carried onto the frame and
where it holds, and (the optimisation) the temporal term's target; carrying a frame also needs
DIS's pyramids and the reliability check's whole-frame arrays for a moment. The service admits
a consistent video with ``engine.memory.TEMPORAL_BYTES`` per pixel on top of its job's
predicted peak; this script measures what that constant stands for.

Each run is a fresh process: ``engine.run_video`` on the tiny networks (``tiny-vgg16``,
``tiny-arbitrary``: their own memory is small, so nothing of the temporal state hides under a
pass's peak), a clip of four frames panning over tubingen.jpg, each tier at each size twice:
frames on their own (``temporal_weight=0``) and consistent (the preset's weight). It prints the
peak resident memory over the process's before the clip, and the consistent run's excess over
the independent one's per pixel, then exit 1 where that excess is above the constant.

    python benchmarks/video_memory.py [--megapixels 1,4]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys

from harness import CONTENT, machine
from PIL import Image
from styleserve.options import resolve
from styleserve_export.feed_forward import tiny_pair
from styleserve_export.loader import tiny_backbone
from styleserve_server.engine import TEMPORAL_BYTES, FeedForward, return_freed_memory, run_video
from styleserve_server.settings import Settings
from video_motion import Camera, frames

FRAMES = 4
TIERS = ("instant", "default")


def _camera(pixels: int) -> Camera:
    width = round(math.sqrt(pixels * 16 / 9))
    height = round(width * 9 / 16)
    return Camera(
        size=(width, height), start=(width * 0.7, height * 0.7), pan=(4.0, 1.0), zoom=1.005
    )


def _resident_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(preset: str, pixels: int, temporal: bool) -> None:
    """One run: prints {"peak": bytes over the process's before the clip} as JSON."""
    return_freed_memory()
    camera = _camera(pixels)
    width, height = camera.size
    source = Image.open(CONTENT).convert("RGB").resize((width * 2, height * 2))
    clip = [Image.fromarray(frame) for frame in frames(source, camera, FRAMES)]
    style = Image.open(CONTENT).convert("RGB").resize((256, 256))
    changes: dict[str, object] = {"size": width, "iterations": 2}
    if not temporal:
        changes["temporal_weight"] = 0.0
    options = resolve(preset, limits=None, **changes)
    tile_pixels = Settings().tile_pixels
    network = FeedForward(tiny_pair(), tiny_backbone("cpu").device, 2, tile_pixels=tile_pixels)
    backbone = tiny_backbone("cpu")
    before = _resident_kib()
    for _ in run_video(
        clip,
        [style],
        options,
        backbone=backbone,
        feed_forward=network,
        tile_pixels=tile_pixels,
    ):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak": (peak - before) * 1024, "pixels": width * height}))


def _run(preset: str, pixels: int, temporal: bool) -> dict[str, int]:
    command = [sys.executable, __file__, "--child", preset, str(pixels), str(int(temporal))]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", default="1,4", help="frame sizes, comma-separated")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        preset, pixels, temporal = args.child
        child(preset, int(pixels), bool(int(temporal)))
        return 0
    print(f"machine: {machine()}")
    print(f"admitted per pixel: {TEMPORAL_BYTES} bytes (engine.memory.TEMPORAL_BYTES)")
    worst = 0.0
    for preset in TIERS:
        for megapixels in (float(m) for m in args.megapixels.split(",")):
            pixels = int(megapixels * 1e6)
            alone = _run(preset, pixels, temporal=False)
            consistent = _run(preset, pixels, temporal=True)
            excess = (consistent["peak"] - alone["peak"]) / consistent["pixels"]
            worst = max(worst, excess)
            print(
                f"{preset:8} {consistent['pixels'] / 1e6:4.1f} MP: peak over the process "
                f"{alone['peak'] / 2**20:7.0f} MiB alone, {consistent['peak'] / 2**20:7.0f} MiB "
                f"consistent: {excess:5.0f} bytes per pixel more"
            )
    verdict = "within" if worst <= TEMPORAL_BYTES else "OVER"
    print(f"most per pixel: {worst:.0f} bytes, {verdict} the {TEMPORAL_BYTES} admitted")
    return 0 if worst <= TEMPORAL_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
