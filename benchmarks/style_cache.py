"""What a registered style saves, through a real server process and the real client.

Starts ``styleserve-server`` (the exported keras-vgg16 and magenta-arbitrary artifacts, warm-up
on, Prometheus metrics on a free port) as a child process on a free loopback port, registers
starry_night.jpg at 384 px, then sends ``--requests`` jobs of tubingen.jpg in that style at
384 px with the default preset cut to ``--iterations`` full-size iterations (few, so that the
run takes minutes and the style's share of a job shows), one at a time, three ways taking turns:

1. the style's JPEG with one byte appended sent with each request: the same pixels in other
   bytes, so another picture to the cache, and every job computes the style's targets (a miss);
2. the registered style named by its style_id;
3. the registered picture sent with each request (cache hits).

For each way it prints the median and mean seconds from the call to the ``Result``, and the
median of the server's set-up seconds (decoding, resizing, the targets); then the registration's
time and bytes, and the cache's hits, misses and hit ratio as its metrics count them.
The two cores of a shared machine make single runs noisy: compare the medians.

    python benchmarks/style_cache.py [--cache-dir DIR] [--requests 20] [--iterations 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import CONTENT, STYLE, Server, machine, serve
from styleserve import Client, Result

SIZE = 384


def cache_counts(server: Server) -> dict[str, float]:
    """The style cache's hits and misses (all lookups) from the server's /metrics."""
    counts = {"hits": 0.0, "misses": 0.0}
    for sample in server.samples():
        for kind in counts:
            if sample.name == f"styleserve_style_cache_{kind}_total":
                counts[kind] += sample.value
    return counts


@dataclasses.dataclass
class Way:
    """One way of sending the style: its calls' seconds and the server's set-up seconds."""

    label: str
    stylize: Callable[[], Result]
    seconds: list[float] = dataclasses.field(default_factory=list)
    setups: list[float] = dataclasses.field(default_factory=list)

    def call(self) -> None:
        start = time.perf_counter()
        result = self.stylize()
        self.seconds.append(time.perf_counter() - start)
        self.setups.append(result.timings.setup_seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def line(self) -> str:
        return (
            f"{self.label}: median {self.median:.3f} s, mean {statistics.mean(self.seconds):.3f} s "
            f"from call to Result over {len(self.seconds)} requests (min {min(self.seconds):.3f}, "
            f"max {max(self.seconds):.3f}); server set-up median "
            f"{statistics.median(self.setups):.3f} s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, help="export cache (default: the exporter's)")
    parser.add_argument("--requests", type=int, default=20, help="jobs per way")
    parser.add_argument("--iterations", type=int, default=5, help="full-size iterations a job")
    args = parser.parse_args(argv)
    print(f"{machine()}")
    print(
        f"{args.requests} requests per way, one at a time, the ways taking turns, {SIZE} px, "
        f"default preset with {args.iterations} full-size iterations (cut short so that the run "
        "takes minutes; a real job's 200 iterations make the style's share of it smaller)"
    )
    options = {"size": SIZE, "iterations": args.iterations, "seed": 0}
    # The same JPEG with a byte after its end: the same pixels and decoding work, but other
    # bytes, so another picture to the cache (which keeps only what is registered): every job
    # sending it computes the style's targets (a miss).
    unregistered = STYLE.read_bytes() + b"\0"
    with (
        serve(cache_dir=args.cache_dir, metrics=True) as server,
        Client(server.target, timeout=600) as client,
    ):
        client.stylize(CONTENT, unregistered, **options)  # warm for this size
        start = time.perf_counter()
        style_id = client.register_style(STYLE, size=SIZE)
        registered = time.perf_counter() - start
        held = client.info().style_cache
        assert held is not None
        print(
            f"register_style at {SIZE} px: {registered:.3f} s, {held.used_bytes} bytes "
            f"cached ({STYLE.stat().st_size} of them the encoded picture)"
        )
        sent = Way(
            "pictures sent each time, unregistered (the JPEG with a byte appended)",
            lambda: client.stylize(CONTENT, unregistered, **options),
        )
        named = Way("style_id", lambda: client.stylize(CONTENT, style_id=style_id, **options))
        again = Way(
            "pictures sent each time, registered",
            lambda: client.stylize(CONTENT, STYLE, **options),
        )
        ways = [sent, named, again]
        before = cache_counts(server)
        # Taking turns, each way first in a third of the rounds: the shared cores' load
        # drifts over minutes, and each way sees the same drift.
        for round_ in range(args.requests):
            for way in ways[round_ % 3 :] + ways[: round_ % 3]:
                way.call()
        counts = cache_counts(server)
    for way in ways:
        print(way.line())
    hits, misses = (counts[kind] - before[kind] for kind in ("hits", "misses"))
    print(
        f"style cache: {hits:.0f} hits, {misses:.0f} misses over the three ways (hit ratio "
        f"{hits / (hits + misses):.3f}; the unregistered way misses by design); per job, style_id "
        f"saves {sent.median - named.median:.3f} s ({sent.median / named.median:.3f}x), the "
        f"registered pictures sent again {sent.median - again.median:.3f} s"
    )
    print(f"style_id_speedup={sent.median / named.median:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
