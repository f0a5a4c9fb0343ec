"""What decoding a request's pictures costs the server's memory, against what admission counts.

A request's pictures may be up to ``max_input_pixels`` (40 MP) whatever the output's size, and
a decoded picture outlives its bytes: the server counts it in the job's predicted peak
(``styleserve_server.inputs.with_pictures``: 4 bytes a pixel held, up to 17 while decoding),
and decodes regions, which it reads in the request's check before the job holds any budget,
one request's at a time. Through a real ``styleserve-server`` process on loopback:

1. a 64 px job whose content and four style pictures are 40 MP (small files: smooth
   gradients), as JPEG, as PNG with alpha and as WebP with alpha (the costliest to decode):
   the server's peak RSS above what it held before the job, beside the prediction;
2. four such jobs at once, each with two 40 MP PNG masks (with alpha) as regions: the server's
   peak RSS above what it held before them, beside one picture's decoding.

Exit 1 when a peak is over its prediction by more than the budget's margin (a fifth).

    python benchmarks/decoding.py [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import io
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from harness import Server, machine, serve
from PIL import Image
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc
from styleserve_server.inputs import with_pictures

GIB = 2**30
# 40 MP at most (max_input_pixels), at the aspect ratio of 3:2.
SIZE = (7743, 5162)
MARGIN = 1.2
CONCURRENT = 4


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def gradient(mode: str) -> Image.Image:
    return Image.linear_gradient("L").resize(SIZE).convert(mode)


def half(left: bool) -> bytes:
    """A mask (PNG with alpha) white on its left or right half."""
    image = Image.new("RGBA", SIZE, (0, 0, 0, 255))
    box = (0, 0, SIZE[0] // 2, SIZE[1]) if left else (SIZE[0] // 2, 0, *SIZE)
    image.paste((255, 255, 255, 255), box)
    return encoded(image, "PNG")


def job(content: bytes, styles: list[bytes]) -> pb.StyleTransferRequest:
    return pb.StyleTransferRequest(
        content=pb.Image(data=content),
        styles=[pb.StylePicture(image=pb.Image(data=s)) for s in styles],
        options=pb.StyleOptions(size=64, iterations=1),
    )


def run(stub: pb_grpc.StyleTransferServiceStub, request: pb.StyleTransferRequest) -> None:
    events = list(stub.StyleTransfer(request, timeout=600))
    if not events[-1].HasField("result"):
        raise RuntimeError(f"the job ended without a result: {events[-1]}")


def peak_above(
    server: Server, stub: pb_grpc.StyleTransferServiceStub, work: list[pb.StyleTransferRequest]
) -> int:
    """The server's peak RSS while it runs ``work`` at once, above its RSS before."""
    # Writing 5 to clear_refs resets the process's peak (VmHWM) to its RSS now.
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")
    before = server.rss()
    with ThreadPoolExecutor(len(work)) as pool:
        list(pool.map(lambda request: run(stub, request), work))
    return server.peak_rss() - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, help="export cache (default: the exporter's)")
    args = parser.parse_args()
    print(machine(), flush=True)
    pixels = SIZE[0] * SIZE[1]
    small = encoded(Image.linear_gradient("L").resize((96, 64)).convert("RGB"), "JPEG")
    masks = [half(True), half(False)]
    failed = False
    with serve(cache_dir=args.cache_dir, job_slots=1) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.StyleTransferServiceStub(channel)
            run(stub, job(small, [small]))  # warm
            predicted = with_pictures([pixels] * 5)
            for fmt, mode in (("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGBA")):
                picture = encoded(gradient(mode), fmt)
                peak = peak_above(server, stub, [job(picture, [picture] * 4)])
                failed |= peak > MARGIN * predicted
                print(
                    f"64 px job, content and 4 styles of {pixels / 1e6:.1f} MP as {fmt}: peak "
                    f"{peak / GIB:.2f} GiB above the server's RSS, predicted {predicted / GIB:.2f}"
                )
            regions = job(small, [small, small])
            regions.regions.CopyFrom(pb.Regions(style_masks=[pb.Image(data=m) for m in masks]))
            peak = peak_above(server, stub, [regions] * CONCURRENT)
            one = with_pictures([pixels])
            failed |= peak > MARGIN * one
            print(
                f"{CONCURRENT} jobs at once, each with two {pixels / 1e6:.1f} MP masks (PNG with "
                f"alpha): peak {peak / GIB:.2f} GiB above the server's RSS, one picture's "
                f"decoding {one / GIB:.2f}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
