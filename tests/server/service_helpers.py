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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc

from tests.fixtures_server import health

# A job the tiny network finishes in well under a second on a CPU.
FAST: dict[str, Any] = {"size": 32, "iterations": 3, "precision": pb.PRECISION_FLOAT32}


# Far more iterations than any test waits for: such a job runs until it is stopped.
ENDLESS: dict[str, Any] = {"iterations": 5000}


def next_event(call: Any, kind: str) -> pb.StyleTransferResponse:
    """Reads ``call`` up to the next event of ``kind``."""
    for response in call:
        if response.WhichOneof("event") == kind:
            return response
    raise AssertionError(f"the stream ended without a {kind} event")


def start_endless(stub: Any, **options: Any) -> Any:
    """A job (with ``options``) that holds its slot until cancelled, once it is running."""
    call = stub.StyleTransfer(request(**{**ENDLESS, **options}), timeout=120)
    next_event(call, "progress")
    return call


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
    """``styleserve-server ARGS`` on a free port with JSON logs, once it says where it listens
    (a line that is not JSON is kept as ``{"raw": line}``)."""
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
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"message": None, "raw": line}
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


def sample(srv: Any, name: str, **labels: str) -> float:
    """The value of metric ``name`` with ``labels`` in ``srv``'s registry (0 when unseen)."""
    return srv.server.metrics.registry.get_sample_value(name, labels) or 0.0


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Polls ``condition`` (the server frees slots and counts jobs asynchronously)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached within the timeout")
        time.sleep(0.02)


def wait_for_health(target: str, wanted: int, timeout: float = 120) -> None:
    wait_until(lambda: health(target) == wanted, timeout)
