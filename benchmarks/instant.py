"""How fast the instant tier answers, through a real server process and the real client.

Starts ``styleserve-server`` (the exported keras-vgg16 and magenta-arbitrary artifacts, warm-up
on) as a child process on a free loopback port, then measures on tubingen.jpg + starry_night.jpg:

1. the time from the call to the ``Result`` of ``preset="instant"`` at 256, 512 and 1024 px
   (median of ``--calls`` warm calls, one at a time);
2. instant jobs per second with 1, 4 and 16 concurrent callers at 512 px, and the p99 of
   health checks sent meanwhile (the server must keep answering them);
3. for an optimisation job with previews (the default preset at 384 px), the time from the call
   to the first picture on the stream (the feed-forward preview, iteration 0) beside the time
   to the first optimisation preview;
4. the default preset at 384 px started from the content (its default) and from the
   feed-forward picture (``init="feed_forward"``): the loss each reaches after the same
   iterations, and when each first gets within 1 % of the better final loss;
5. an optimisation job's seconds per iteration alone and while instant callers keep the tier
   busy (what the instant tier's threads cost the optimisation on the same cores).

    python benchmarks/instant.py [--cache-dir DIR] [--calls 9] [--seconds 10]

Figures are printed one a line; the hardware is named first. The last line is
``instant_512_seconds=<median>``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import threading
import time
from pathlib import Path

from harness import CONTENT, STYLE, machine, serve, time_health_checks
from styleserve import Client, Preview, Progress


def instant_call(client: Client, size: int) -> float:
    start = time.perf_counter()
    client.stylize(CONTENT, STYLE, preset="instant", size=size)
    return time.perf_counter() - start


def latencies(target: str, sizes: tuple[int, ...], calls: int) -> dict[int, float]:
    medians = {}
    with Client(target, timeout=120) as client:
        for size in sizes:
            instant_call(client, size)  # warm for this size
            times = [instant_call(client, size) for _ in range(calls)]
            medians[size] = statistics.median(times)
            print(
                f"instant {size} px: median {medians[size]:.3f} s from call to Result "
                f"(min {min(times):.3f}, max {max(times):.3f}, {calls} calls)"
            )
    return medians


def throughput(target: str, callers: int, seconds: float, size: int) -> None:
    stop = threading.Event()
    health: list[float] = []
    checker = threading.Thread(target=time_health_checks, args=(target, stop, health))
    checker.start()
    end = time.perf_counter() + seconds
    done = [0] * callers

    def caller(index: int) -> None:
        with Client(target, timeout=120) as client:
            while time.perf_counter() < end:
                instant_call(client, size)
                done[index] += 1

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(callers) as pool:
        list(pool.map(caller, range(callers)))
    elapsed = time.perf_counter() - start
    stop.set()
    checker.join()
    p99 = statistics.quantiles(health, n=100)[98] if len(health) >= 2 else float("nan")
    print(
        f"instant {size} px, {callers} concurrent callers: {sum(done) / elapsed:.2f} jobs/s "
        f"({sum(done)} in {elapsed:.1f} s); health p99 {p99 * 1000:.1f} ms over {len(health)}"
    )


def first_pictures(target: str) -> None:
    with Client(target, timeout=600) as client:
        start = time.perf_counter()
        first = optimised = None
        events = client.stream(CONTENT, STYLE, size=384, iterations=20, preview_every=5)
        for event in events:
            if isinstance(event, Preview):
                if first is None:
                    first = time.perf_counter() - start
                if event.iteration > 0:
                    optimised = time.perf_counter() - start
                    events.close()
                    break
    assert first is not None and optimised is not None
    print(
        f"optimisation job at 384 px with previews: first picture (feed-forward, iteration 0) "
        f"after {first:.3f} s, first optimisation preview (iteration 5) after {optimised:.2f} s: "
        f"{optimised / first:.0f}x sooner"
    )


def losses_over_time(client: Client, **options: object) -> list[tuple[float, int, float]]:
    """(elapsed seconds, iteration, loss) of each full-size iteration of a default job."""
    points = []
    for event in client.stream(CONTENT, STYLE, size=384, **options):
        if isinstance(event, Progress) and max(event.width, event.height) == 384:
            points.append((event.elapsed_seconds, event.iteration, event.losses.total))
    return points


def init_comparison(target: str, iterations: int) -> None:
    with Client(target, timeout=1800) as client:
        runs = {
            init: losses_over_time(client, iterations=iterations, init=init, seed=0)
            for init in ("content", "feed_forward")
        }
    best = min(points[-1][2] for points in runs.values())
    for init, points in runs.items():
        near = next((p for p in points if p[2] <= best * 1.01), None)
        reached = f"{near[0]:.1f} s (iteration {near[1]})" if near else "never"
        print(
            f"default preset at 384 px from {init}: loss {points[0][2]:.4g} at the first "
            f"full-size iteration, {points[-1][2]:.4g} after {points[-1][1]} iterations "
            f"({points[-1][0]:.1f} s); within 1% of the better final loss after {reached}"
        )


def starvation(target: str, callers: int) -> None:
    def per_iteration() -> float:
        with Client(target, timeout=600) as client:
            points = losses_over_time(client, iterations=30, scales=[1.0])
        (t0, i0, _), (t1, i1, _) = points[2], points[-1]
        return (t1 - t0) / (i1 - i0)

    alone = per_iteration()
    stop = threading.Event()

    def caller() -> None:
        with Client(target, timeout=120) as client:
            while not stop.is_set():
                instant_call(client, 512)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    try:
        busy = per_iteration()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(
        f"optimisation at 384 px: {alone:.3f} s/iteration alone, {busy:.3f} s/iteration with "
        f"{callers} instant callers at 512 px ({busy / alone:.2f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, help="export cache (default: the exporter's)")
    parser.add_argument("--calls", type=int, default=9, help="calls per size (median)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    parser.add_argument("--slots", type=int, default=2, help="--feed-forward-slots")
    parser.add_argument(
        "--init-iterations", type=int, default=100, help="iterations of the init comparison"
    )
    args = parser.parse_args(argv)
    import onnxruntime

    print(f"{machine()}, onnxruntime {onnxruntime.__version__}, feed-forward slots {args.slots}")
    settings = {"queue_size": 64, "feed_forward_slots": args.slots, "feed_forward_queue_size": 64}
    with serve(cache_dir=args.cache_dir, **settings) as server:
        target = server.target
        with Client(target) as client:
            networks = client.info().feed_forward
        print(f"feed-forward networks: {networks}")
        medians = latencies(target, (256, 512, 1024), args.calls)
        for callers in (1, 4, 16):
            throughput(target, callers, args.seconds, 512)
        first_pictures(target)
        init_comparison(target, args.init_iterations)
        starvation(target, callers=2)
    print(f"instant_512_seconds={medians[512]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
