"""What a registered style saves, through a real server process and the real client.

Starts ``styleserve-server`` (the exported keras-vgg16 and magenta-arbitrary artifacts, warm-up
on, Prometheus metrics on a free port) as a child process on a free loopback port, then sends
``--requests`` jobs of tubingen.jpg in the style of starry_night.jpg at 384 px with the default
preset cut to ``--iterations`` full-size iterations (few, so that the run takes minutes and the
style's share of a job shows), one at a time, three ways:

1. the style picture sent with each request, nothing registered (every job a cache miss);
2. the style registered once (``register_style``, at 384 px) and each job naming its style_id;
3. the picture sent with each request again, now that it is registered (cache hits).

For each way it prints the median and mean seconds from the call to the ``Result``, and the
median of the server's set-up seconds (decoding, resizing, the targets); then the registration's
time and bytes, and the cache's hits, misses and hit ratio as its metrics count them. The two
cores of a shared machine make single runs noisy: compare the medians.

    python benchmarks/style_cache.py [--cache-dir DIR] [--requests 20] [--iterations 5]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from styleserve import Client, Result

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ROOT / "examples" / "tubingen.jpg"
STYLE = ROOT / "examples" / "starry_night.jpg"
SIZE = 384
sys.path.insert(0, str(ROOT / "scripts"))
# The scripts folder is no package; this one's own folder is on the path when it runs.
from instant import free_port, start_server  # noqa: E402
from seed_vs_default import machine  # noqa: E402


def cache_counts(metrics_port: int) -> dict[str, float]:
    """The style cache's hits and misses (all lookups) from the server's /metrics."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    counts = {"hits": 0.0, "misses": 0.0}
    for kind in counts:
        pattern = rf"^styleserve_style_cache_{kind}_total\{{[^}}]*\}} (\S+)$"
        counts[kind] = sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))
    return counts


def timed(
    stylize: Callable[[], Result], requests: int, label: str, metrics_port: int
) -> tuple[float, dict[str, float]]:
    """Runs ``requests`` jobs one at a time; prints the figures and returns the median seconds
    a job and the cache's hits and misses meanwhile."""
    before = cache_counts(metrics_port)
    seconds, setups = [], []
    for _ in range(requests):
        start = time.perf_counter()
        result = stylize()
        seconds.append(time.perf_counter() - start)
        setups.append(result.timings.setup_seconds)
    after = cache_counts(metrics_port)
    counts = {kind: after[kind] - before[kind] for kind in after}
    median = statistics.median(seconds)
    print(
        f"{label}: median {median:.3f} s, mean {statistics.mean(seconds):.3f} s from call to "
        f"Result over {requests} requests (min {min(seconds):.3f}, max {max(seconds):.3f}); "
        f"server set-up median {statistics.median(setups):.3f} s; cache {counts['hits']:.0f} "
        f"hits, {counts['misses']:.0f} misses"
    )
    return median, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, help="export cache (default: the exporter's)")
    parser.add_argument("--requests", type=int, default=20, help="jobs per way")
    parser.add_argument("--iterations", type=int, default=5, help="full-size iterations a job")
    args = parser.parse_args(argv)
    print(f"{machine()}")
    print(
        f"{args.requests} requests per way, one at a time, {SIZE} px, default preset with "
        f"{args.iterations} full-size iterations (cut short so that the run takes minutes; a "
        "real job's 200 iterations make the style's share of it smaller)"
    )
    port, metrics_port = free_port(), free_port()
    server = start_server(args.cache_dir, port, "--metrics-port", str(metrics_port))
    options = {"size": SIZE, "iterations": args.iterations, "seed": 0}
    try:
        with Client(f"127.0.0.1:{port}", timeout=600) as client:
            client.stylize(CONTENT, STYLE, **options)  # warm for this size

            def with_pictures() -> Result:
                return client.stylize(CONTENT, STYLE, **options)

            sent, unregistered = timed(
                with_pictures, args.requests, "pictures sent each time, unregistered", metrics_port
            )
            start = time.perf_counter()
            style_id = client.register_style(STYLE, size=SIZE)
            registered = time.perf_counter() - start
            held = client.info().style_cache
            assert held is not None
            print(
                f"register_style at {SIZE} px: {registered:.3f} s, {held.used_bytes} bytes "
                f"cached ({STYLE.stat().st_size} of them the encoded picture)"
            )

            def with_style_id() -> Result:
                return client.stylize(CONTENT, style_id=style_id, **options)

            named, by_id = timed(with_style_id, args.requests, "style_id", metrics_port)
            again, resent = timed(
                with_pictures, args.requests, "pictures sent each time, registered", metrics_port
            )
    finally:
        server.terminate()
        server.wait(timeout=60)
    ways = (unregistered, by_id, resent)
    hits, misses = (sum(c[kind] for c in ways) for kind in ("hits", "misses"))
    registered_hits = by_id["hits"] + resent["hits"]
    print(
        f"style cache hit ratio: {hits / (hits + misses):.3f} over the three ways ({hits:.0f} "
        f"hits, {misses:.0f} misses), {registered_hits / (2 * args.requests):.3f} once "
        f"registered; per job, style_id saves {sent - named:.3f} s ({sent / named:.3f}x), "
        f"the registered pictures sent again {sent - again:.3f} s"
    )
    print(f"style_id_speedup={sent / named:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
