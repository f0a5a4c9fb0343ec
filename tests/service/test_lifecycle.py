"""Start-up, readiness and shutdown: health transitions, SIGTERM draining, exit statuses."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import threading
from collections.abc import Sequence

import grpc
import pytest
from service_helpers import (
    NOT_SERVING,
    SERVING,
    connect,
    health,
    request,
    rpc_error,
    server_command,
    server_process,
    wait_for_health,
)
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_export.vgg import VGGFeatures
from styleserve_server.app import SERVICE_NAME
from styleserve_server.backbones import tiny_backbone

pytestmark = pytest.mark.timeout(300)


def gated_net(gate: threading.Event) -> VGGFeatures:
    """The tiny network, whose every pass waits for ``gate``: holds the warm-up at will.
    (The gate lives in a closure: the engine deep-copies networks it runs at lower precision.)"""

    class GatedNet(VGGFeatures):
        def forward(self, x, layers):
            assert gate.wait(120), "the test never opened the gate"
            return super().forward(x, layers)

    return GatedNet("vgg16", channel_divisor=16).eval().requires_grad_(False)


def test_not_serving_until_the_warm_up_ran(start_server):
    gate = threading.Event()
    backbone = dataclasses.replace(tiny_backbone(), net=gated_net(gate))
    with start_server(backbone, wait_ready=False, warmup=True) as srv:
        try:
            assert health(srv.target) == NOT_SERVING
            assert health(srv.target, SERVICE_NAME) == NOT_SERVING
            with connect(srv.target) as stub:
                error = rpc_error(stub.StyleTransfer(request(), timeout=30))
                assert error.code() is grpc.StatusCode.UNAVAILABLE
                assert "starting" in error.details()
                with pytest.raises(grpc.RpcError) as info:
                    stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
                assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        finally:
            gate.set()
        srv.run(srv.server.wait_ready())
        assert health(srv.target) == health(srv.target, SERVICE_NAME) == SERVING


def test_stopping_turns_queued_jobs_away_and_cancels_running_ones_after_the_grace(start_server):
    with start_server(job_slots=1, queue_size=2) as srv, connect(srv.target) as stub:
        running = stub.StyleTransfer(request(iterations=5000), timeout=120)
        assert next(running).HasField("queued")
        next(running)  # started
        waiting = stub.StyleTransfer(request(), timeout=120)
        assert next(waiting).queued.position == 0
        stopper = threading.Thread(target=srv.stop, kwargs={"grace": 1.0})
        stopper.start()
        error = rpc_error(waiting)
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in error.details()
        assert rpc_error(running).code() is grpc.StatusCode.UNAVAILABLE
        stopper.join()


@pytest.mark.slow
def test_sigterm_drains_a_running_job_then_exits_0():
    with server_process("--backbone", "tiny-vgg16", "--grace-seconds", "120") as server:
        wait_for_health(server.target, SERVING)
        with connect(server.target) as stub:
            call = stub.StyleTransfer(request(iterations=60), timeout=300)
            assert next(call).HasField("queued")
            started = next(call).started
            server.process.send_signal(signal.SIGTERM)
            wait_for_health(server.target, NOT_SERVING)
            refused = rpc_error(stub.StyleTransfer(request(), timeout=30))
            assert refused.code() is grpc.StatusCode.UNAVAILABLE
            rest = list(call)
        assert rest[-1].HasField("result")
        assert rest[-1].result.iterations == started.total_iterations
        assert server.process.wait(timeout=120) == 0
    messages = [record["message"] for record in server.logs]
    assert "stop signal: draining" in messages and messages[-1] == "stopped"
    assert all("request_id" in r for r in server.logs if r["message"].startswith("StyleTransfer"))


def run_server(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [server_command(), "--port", "0", *args], capture_output=True, text=True, timeout=timeout
    )


def test_a_missing_artifact_stops_start_up_naming_the_export_command(tmp_path):
    done = run_server("--backbone", "keras-vgg16", "--cache-dir", str(tmp_path))
    assert done.returncode == 1
    assert "styleserve-export --source keras-vgg16" in done.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [(("--device", "gpu"), "device"), (("--job-slots", "0"), "job_slots")],
)
def test_bad_settings_exit_2_naming_the_setting(args: Sequence[str], named: str):
    done = run_server(*args)
    assert done.returncode == 2
    assert named in done.stderr
