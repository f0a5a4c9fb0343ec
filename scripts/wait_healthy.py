"""Waits until a styleserve server reports SERVING on the standard gRPC health service.

scripts/demo.sh starts the server in the background and must not send the job before the
weights are loaded and the warm-up ran; the health service is the server's own word on that,
the same signal Kubernetes' gRPC probes read. Exits 0 when SERVING, 1 with the reason when the
server process died or the time ran out.

    python scripts/wait_healthy.py 127.0.0.1:50051 --pid 1234 --timeout 300
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["main", "wait_healthy"]

_POLL_SECONDS = 0.5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child that exited stays a zombie until reaped; /proc tells the difference.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def wait_healthy(target: str, *, timeout: float, pid: int | None = None) -> str | None:
    """None once ``target`` says SERVING; else why it never did."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if pid is not None and not _alive(pid):
                return f"the server (pid {pid}) exited before it was ready"
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            else:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return None
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            time.sleep(_POLL_SECONDS)
    return f"{target} was not SERVING after {timeout:g} s (last: {last})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="HOST:PORT of the server")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--pid", type=int, help="give up at once if this process exits")
    args = parser.parse_args(argv)
    problem = wait_healthy(args.target, timeout=args.timeout, pid=args.pid)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
