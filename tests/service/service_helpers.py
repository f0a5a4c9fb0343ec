"""Pictures, requests, raw-stub and server-process helpers shared by the service tests.

The service tests talk to the server through the generated stubs only (not the client
library), so that they test the wire contract itself; ``server_process`` runs the real
``styleserve-server`` command for the tests that need a process to signal.
"""

from __future__ import annotations

import dataclasses
import io
import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc

# A job the tiny network finishes in well under a second on a CPU.
FAST: dict[str, Any] = {"size": 32, "iterations": 3, "precision": pb.PRECISION_FLOAT32}


def picture(size: tuple[int, int] = (48, 32), mode: str = "RGB") -> Image.Image:
    """A gradient crossed with (seeded) noise, so that every mode has something to convert."""
    gradient = Image.linear_gradient("L").resize(size)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, size[::-1], np.uint8))
    rgb = Image.merge("RGB", (gradient, noise, gradient.transpose(Image.Transpose.ROTATE_180)))
    return rgb.convert(mode)


def encoded(image: Image.Image | None = None, fmt: str = "PNG", **params: Any) -> bytes:
    """``image`` (default: ``picture()``) encoded as ``fmt``."""
    buffer = io.BytesIO()
    (picture() if image is None else image).save(buffer, fmt, **params)
    return buffer.getvalue()


def request(
    content: bytes | None = None,
    styles: Iterable[bytes] | None = None,
    *,
    delivery: pb.DeliveryOptions | None = None,
    **options: Any,
) -> pb.StyleTransferRequest:
    """A request with the FAST options (overridden by ``options``, proto field names)."""
    style_bytes = [encoded(picture((40, 40)), "JPEG")] if styles is None else list(styles)
    return pb.StyleTransferRequest(
        content=pb.Image(data=encoded() if content is None else content),
        styles=[pb.StylePicture(image=pb.Image(data=s)) for s in style_bytes],
        options=pb.StyleOptions(**{**FAST, **options}),
        delivery=delivery,
    )


@contextmanager
def connect(target: str) -> Iterator[pb_grpc.StyleTransferServiceStub]:
    """A blocking stub on a fresh channel to ``target``."""
    with grpc.insecure_channel(target) as channel:
        yield pb_grpc.StyleTransferServiceStub(channel)


def kinds(responses: Iterable[pb.StyleTransferResponse]) -> list[str]:
    return [r.WhichOneof("event") for r in responses]


def health(target: str, service: str = "") -> int:
    """The health status ``target`` reports for ``service`` ("" is the whole server)."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def rpc_error(stream: Iterable[Any]) -> grpc.RpcError:
    """The error that ends ``stream`` (fails the test when it ends without one)."""
    try:
        for _ in stream:
            pass
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded; expected it to fail")


def server_command() -> str:
    """The installed console script, next to this interpreter when PATH lacks the venv."""
    return shutil.which("styleserve-server") or str(
        Path(sys.executable).with_name("styleserve-server")
    )


@dataclasses.dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    logs: list[dict]
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def server_process(*args: str) -> Iterator[ServerProcess]:
    """``styleserve-server ARGS`` on a free port with JSON logs, once it says where it listens."""
    process = subprocess.Popen(
        [server_command(), "--port", "0", "--log-format", "json", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[dict] = queue.Queue()
    logs: list[dict] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            record = json.loads(line)
            logs.append(record)
            lines.put(record)

    threading.Thread(target=read, daemon=True).start()
    try:
        while (record := lines.get(timeout=120))["message"] != "listening":
            pass
        yield ServerProcess(process, logs, int(record["port"]))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def wait_for_health(target: str, wanted: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while health(target) != wanted:
        assert time.monotonic() < end, "the server never reached the wanted health"
        time.sleep(0.05)


def wait_draining(target: str, timeout: float = 120) -> None:
    """Returns once ``target`` drains: it says NOT_SERVING or, its listener closed, refuses
    connections (a draining server closes it at once, so NOT_SERVING may never be seen); a
    check that arrived just as it stopped is cancelled."""
    end = time.monotonic() + timeout
    while True:
        try:
            if health(target) == NOT_SERVING:
                return
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                return
            raise
        assert time.monotonic() < end, "the server never began to drain"
        time.sleep(0.05)
