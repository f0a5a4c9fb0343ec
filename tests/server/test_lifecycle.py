"""Start-up, readiness and shutdown: health transitions, SIGTERM draining, exit statuses."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence

import grpc
import pytest
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc
from styleserve_export.loader import tiny_backbone
from styleserve_export.vgg import VGGFeatures
from styleserve_server.app import SERVICE_NAME

from tests.fixtures_server import NOT_SERVING, SERVING, health, wait_draining
from tests.server.service_helpers import (
    connect,
    kinds,
    request,
    rpc_error,
    sample,
    server_command,
    server_process,
    wait_for_health,
)

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


def test_a_refused_call_sends_no_headers_so_a_retry_policy_moves_it_on(start_server):
    # gRPC retries a call only while it has no response headers (a trailers-only answer).
    gate = threading.Event()
    starting = dataclasses.replace(tiny_backbone(), net=gated_net(gate))
    retry = {
        "maxAttempts": 3,
        "initialBackoff": "0.05s",
        "maxBackoff": "0.1s",
        "backoffMultiplier": 1,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": [{"service": SERVICE_NAME}], "retryPolicy": retry}],
    }
    options = [("grpc.service_config", json.dumps(config))]
    with start_server(starting, wait_ready=False, warmup=True) as cold, start_server() as ready:
        try:
            target = f"ipv4:127.0.0.1:{cold.port},127.0.0.1:{ready.port}"
            with grpc.insecure_channel(target, options) as channel:
                stub = pb_grpc.StyleTransferServiceStub(channel)
                for _ in range(4):
                    assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30).version
                    assert kinds(stub.StyleTransfer(request(), timeout=120))[-1] == "result"
        finally:
            gate.set()
        refused = cold.server.metrics.registry.get_sample_value(
            "styleserve_requests_total", {"method": "GetServerInfo", "code": "UNAVAILABLE"}
        )
        assert refused, "no call reached the starting server: the test proved nothing"


async def test_an_aged_connection_takes_no_new_calls_but_keeps_its_running_job(start_server):
    # How round_robin clients come to see new replicas: the server closes old connections.
    with start_server(max_connection_age_seconds=1) as srv:
        async with grpc.aio.insecure_channel(srv.target) as channel:
            stub = pb_grpc.StyleTransferServiceStub(channel)
            running = stub.StyleTransfer(request(iterations=5000), timeout=120)
            assert (await running.read()).HasField("queued")
            assert channel.get_state() is grpc.ChannelConnectivity.READY
            # The server's GOAWAY takes the channel from READY to IDLE.
            await asyncio.wait_for(
                channel.wait_for_state_change(grpc.ChannelConnectivity.READY), timeout=30
            )
            assert channel.get_state() is grpc.ChannelConnectivity.IDLE
            iterations = [(await running.read()).progress.iteration for _ in range(50)]
            assert max(iterations) > 0, "the running job's stream was cut with its connection"
            # A new call dials a new connection.
            assert (await stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)).version
            running.cancel()


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
        cut = rpc_error(running)
        assert cut.code() is grpc.StatusCode.UNAVAILABLE
        assert "grace period ran out" in cut.details()
        stopper.join()
    # The server logged and counted what the clients saw.
    assert sample(srv, "styleserve_requests_total", method="StyleTransfer", code="UNAVAILABLE") == 2
    assert sample(srv, "styleserve_requests_total", method="StyleTransfer", code="CANCELLED") == 0


@pytest.mark.slow
def test_sigterm_drains_a_running_job_then_exits_0():
    args = (
        "--backbone",
        "tiny-vgg16",
        "--feed-forward",
        "tiny-arbitrary",
        "--grace-seconds",
        "120",
    )
    with server_process(*args) as server:
        wait_for_health(server.target, SERVING)
        with connect(server.target) as stub:
            call = stub.StyleTransfer(request(iterations=60), timeout=300)
            assert next(call).HasField("queued")
            started = next(call).started
            server.process.send_signal(signal.SIGTERM)
            wait_draining(server.target)
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


def test_a_cuda_device_without_a_gpu_stops_start_up_saying_so():
    done = run_server("--backbone", "tiny-vgg16", "--feed-forward", "none", "--device", "cuda")
    assert done.returncode == 1
    assert "sees no CUDA device" in done.stderr and "--device cpu" in done.stderr


def test_a_port_in_use_stops_start_up_naming_the_flag():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [server_command(), "--host", "127.0.0.1", "--port", str(port), "--backbone",
             "tiny-vgg16", "--feed-forward", "none"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1
    assert "choose another --port or --host" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_tile_budget_too_small_for_the_networks_deepest_layers_stops_start_up():
    # VGG19's block5_conv4 needs a larger window than the least --tile-pixels allows: a job
    # naming it failed INTERNAL at its first tiled stage. Refused before any weights load.
    done = run_server("--backbone", "torchvision-vgg19", "--tile-pixels", "65536")
    assert done.returncode == 1
    assert "--tile-pixels 65536 is too small for torchvision-vgg19" in done.stderr
    assert "give at least" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--device", "gpu"), "--device (STYLESERVE_DEVICE): "),
        (("--job-slots", "0"), "--job-slots (STYLESERVE_JOB_SLOTS): "),
        (("--metrics-port", "50099", "--port", "50099"), "metrics_port (50099) must differ"),
    ],
)
def test_bad_settings_exit_2_naming_the_setting(args: Sequence[str], named: str):
    done = run_server(*args)
    assert done.returncode == 2
    assert named in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr


def test_a_metrics_port_in_use_stops_start_up_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_server("--port", "0", "--metrics-port", str(taken.getsockname()[1]))
    assert done.returncode == 1
    assert "cannot serve metrics on 127.0.0.1:" in done.stderr and "set metrics_port" in done.stderr
    assert "Traceback" not in done.stderr and "grace period" not in done.stderr
