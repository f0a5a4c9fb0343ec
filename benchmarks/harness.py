"""What the benchmarks share: a real server process, free ports, the machine's description, a
process's memory figures and a TCP proxy that breaks connections on command.

One module, so that every benchmark (and the tests that run benchmarks at CI size) starts,
waits for, reads and stops ``styleserve-server`` the same way. ``python benchmarks/X.py`` puts
this folder on ``sys.path``, and pytest's ``pythonpath`` setting does for the tests, so
``import harness`` needs no path edits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import psutil
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from styleserve_server.settings import Settings

__all__ = [
    "CONTENT",
    "ROOT",
    "STYLE",
    "Server",
    "TcpProxy",
    "free_port",
    "machine",
    "proc_status",
    "serve",
    "time_health_checks",
]

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ROOT / "examples" / "tubingen.jpg"
STYLE = ROOT / "examples" / "starry_night.jpg"
# The one health wait of the repository (scripts/demo.sh runs it too), run as the command it is:
# scripts/ is no package.
WAIT_HEALTHY = ROOT / "scripts" / "wait_healthy.py"
# CPU flags that decide how fast bf16 can be; printed for the record, never acted on.
CPU_FLAGS = ("avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
# What a benchmark's server differs in from the shipped defaults: only what goes wrong is
# logged, readably (its output is shown when it fails to start or says something).
SERVER_DEFAULTS: dict[str, Any] = {"log_level": "WARNING", "log_format": "text"}
# How long a stopping server may drain before it is killed, and how much of its output a
# failed start shows.
_STOP_SECONDS = 60
_TAIL_LINES = 20


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> str:
    """CPU model, its precision-relevant flags, torch, oneDNN and thread count."""
    model, flags = platform.processor() or "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text()
        if found := re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE):
            model = found.group(1).strip()
        if found := re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE):
            flags = set(found.group(1).split())
    marks = " ".join(f"{flag}{'+' if flag in flags else '-'}" for flag in CPU_FLAGS)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", torch.__config__.show())
    return (
        f"cpu {model} ({marks}), {torch.get_num_threads()} threads, torch {torch.__version__},"
        f" oneDNN {onednn.group(1) if onednn else 'absent'}"
    )


def proc_status(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of /proc/<pid>/status (``VmRSS``, ``VmHWM``: resident memory now, at its
    peak), in bytes; this process's own by default. psutil has no peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def time_health_checks(target: str, stop: threading.Event, out: list[float]) -> None:
    """Appends the seconds of each grpc.health.v1 check of ``target`` to ``out``, one every
    20 ms on a channel of its own, until ``stop`` is set (a thread's target)."""
    with grpc.insecure_channel(target) as channel:
        # Any: the type stubs of grpcio-health-checking declare HealthStub without methods.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            start = time.perf_counter()
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            out.append(time.perf_counter() - start)
            time.sleep(0.02)


@dataclasses.dataclass
class Server:
    """A ``styleserve-server`` process on loopback: where to call it and how to read it."""

    process: subprocess.Popen[bytes]
    port: int
    # 0: its metrics port is off.
    metrics_port: int
    job_slots: int
    _output: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @functools.cached_property
    def _stats(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def rss(self) -> int:
        return int(self._stats.memory_info().rss)

    def peak_rss(self) -> int:
        return proc_status("VmHWM", self.pid)

    def threads(self) -> int:
        return int(self._stats.num_threads())

    def fds(self) -> int:
        """Its open file descriptors once settled: the fewest over a few reads 0.1 s apart,
        so that the socket of the metrics scrape just answered (closed by the server's thread
        a moment after the reply) is not counted, while a leaked one, which stays, is."""
        counts = []
        for _ in range(5):
            counts.append(int(self._stats.num_fds()))
            time.sleep(0.1)
        return min(counts)

    def samples(self) -> list[Sample]:
        """Every sample its metrics port serves now (one read of it)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as reply:
            text = reply.read().decode()
        return [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def output(self) -> str:
        """What it wrote to stdout and stderr so far."""
        return self._output.read_text(errors="replace")


def _flags(settings: dict[str, Any]) -> list[str]:
    """``settings`` (Settings fields) as styleserve-server's flags; None leaves one unset."""
    flags = []
    for name, value in settings.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        elif value is not None:
            flags += [f"--{flag}", str(value)]
    return flags


def _wait_healthy(server: Server, timeout: float) -> str | None:
    """None once ``server`` says SERVING; else why it never did (its output's tail with it)."""
    command = [sys.executable, str(WAIT_HEALTHY), server.target, "--pid", str(server.pid)]
    done = subprocess.run(
        [*command, "--timeout", str(timeout)], capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        return None
    tail = "\n".join(server.output().splitlines()[-_TAIL_LINES:]) or "(no output)"
    return f"{done.stderr.strip().removeprefix('error: ')}; its output ends:\n{tail}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server drains), then SIGKILL if it is still there after _STOP_SECONDS."""
    process.terminate()
    try:
        process.wait(timeout=_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _show(server: Server, out: IO[str]) -> None:
    """Passes on whatever the stopped server said (at SERVER_DEFAULTS' level: warnings)."""
    said = server.output().strip()
    if said or server.process.returncode:
        status = f"exit status {server.process.returncode}"
        out.write(f"styleserve-server on {server.target} ({status}) said:\n{said}\n")


@contextlib.contextmanager
def serve(*, metrics: bool = False, timeout: float = 600, **settings: Any) -> Iterator[Server]:
    """A ``styleserve-server`` process with ``settings`` (Settings fields over SERVER_DEFAULTS,
    e.g. ``job_slots=4``, ``cache_dir=None`` for the default) on a free loopback port, its
    metrics on another with ``metrics``, once it says SERVING (RuntimeError, with its output,
    when it does not within ``timeout`` seconds); stopped on exit as SIGTERM stops it."""
    port = free_port()
    values = {**SERVER_DEFAULTS, **settings, "port": port}
    if metrics:
        values["metrics_port"] = free_port()
    command = [sys.executable, "-m", "styleserve_server.main", *_flags(values)]
    job_slots = values.get("job_slots") or Settings.model_fields["job_slots"].default
    with tempfile.TemporaryDirectory(prefix="styleserve-server-") as folder:
        output = Path(folder) / "output.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        server = Server(process, port, values.get("metrics_port", 0), job_slots, output)
        started = False
        try:
            problem = _wait_healthy(server, timeout)
            if problem is not None:
                raise RuntimeError(f"styleserve-server did not start: {problem}")
            started = True
            yield server
        finally:
            _stop(process)
            if started:  # a failed start's output is in its error already
                _show(server, sys.stderr)


_BUFFER_BYTES = 65536


class TcpProxy:
    """A loopback TCP proxy a caller controls, to break a client's connection mid-call on
    command: ``127.0.0.1:<port>`` (``target``) forwarded to ``upstream`` ("host:port").

    Reattach tests and the load benchmark need the connection itself to die (as a mobile
    network, a proxy's idle timeout or a balancer restart kill it), with the server and the job
    left running: stopping the server or cancelling the call would test something else.
    ``drop()`` resets every connection open at that moment; the proxy keeps listening, so the
    client's next connection goes through again.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.connections = 0
        self.drops = 0
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    def drop(self) -> int:
        """Resets every connection open now (RST, as a dead network would look to gRPC);
        returns how many."""
        self.drops += 1
        return self._reset_all()

    def close(self) -> None:
        self._closed = True
        # shutdown wakes the acceptor blocked in accept(), which close alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._reset_all()
        self._acceptor.join(timeout=5)

    def _reset_all(self) -> int:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _reset(sock)
        return len(sockets) // 2

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
                self.connections += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copies ``source`` to ``sink`` until either end closes; then closes both."""
    try:
        while data := source.recv(_BUFFER_BYTES):
            sink.sendall(data)
    except OSError:
        pass
    _reset(source)
    _reset(sink)


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close sends RST, so the far end sees the connection die at once; shutdown
    # first, since closing alone does not wake the pump blocked reading it.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
