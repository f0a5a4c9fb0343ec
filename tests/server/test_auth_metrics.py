"""The bearer token guards the service but not its health; /metrics serves the named metrics."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from styleserve.v1 import style_transfer_pb2 as pb

from tests.fixtures_server import SERVING, free_port, health
from tests.server.service_helpers import connect, request, rpc_error

pytestmark = pytest.mark.timeout(180)


def test_a_token_is_required_except_for_health(start_server):
    with start_server(auth_token="s3cret") as srv, connect(srv.target) as stub:
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
            error = rpc_error(stub.StyleTransfer(request(), metadata=metadata, timeout=30))
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer" in error.details()
            with pytest.raises(grpc.RpcError) as info:
                stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=metadata, timeout=30)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert health(srv.target) == SERVING
        good = (("authorization", "Bearer s3cret"),)
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=good, timeout=30).version
        responses = list(stub.StyleTransfer(request(), metadata=good, timeout=120))
        assert responses[-1].HasField("result")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        return response.read().decode()


def test_metrics_endpoint_serves_the_named_metrics(start_server):
    port = free_port()
    with start_server(metrics_port=port) as srv, connect(srv.target) as stub:
        responses = list(stub.StyleTransfer(request(iterations=4), timeout=120))
        stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        text = scrape(port)
    iterations = responses[-1].result.iterations
    expected = [
        'styleserve_requests_total{code="OK",method="StyleTransfer"} 1.0',
        'styleserve_requests_total{code="OK",method="GetServerInfo"} 1.0',
        "styleserve_queue_depth 0.0",
        "styleserve_running_jobs 0.0",
        "styleserve_queue_wait_seconds_count 1.0",
        'styleserve_job_duration_seconds_count{outcome="finished"} 1.0',
        f"styleserve_iterations_total {float(iterations)}",
    ]
    for line in expected:
        assert line in text, line


def test_operators_see_the_process_and_what_it_runs(start_server):
    import torch
    from styleserve_server.server_info import version

    port = free_port()
    with start_server(metrics_port=port) as srv:
        text = scrape(port)
        rss = srv.server.metrics.registry.get_sample_value("process_resident_memory_bytes")
    assert rss is not None and rss > 10 * 2**20
    assert "process_open_fds" in text and "process_cpu_seconds_total" in text
    build = next(line for line in text.splitlines() if line.startswith("styleserve_build_info{"))
    for label in (
        f'version="{version()}"',
        f'torch="{torch.__version__}"',
        'device="cpu"',
        'backbone="tiny-vgg16"',
        'feed_forward="tiny-arbitrary"',
    ):
        assert label in build, label
    assert "styleserve_device_memory_bytes" not in text  # a CPU server has no device memory
