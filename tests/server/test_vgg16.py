"""The service on the real VGG16 artifact, at tiny sizes: in process and as the real command."""

from __future__ import annotations

from pathlib import Path

import pytest
from styleserve.v1 import style_transfer_pb2 as pb

from tests.fixtures_server import SERVING
from tests.server.service_helpers import connect, request, server_process, wait_for_health

pytestmark = [pytest.mark.vgg, pytest.mark.timeout(600)]


def test_a_job_on_the_real_network_reports_its_weights(start_server, keras_vgg16):
    with start_server(keras_vgg16) as srv, connect(srv.target) as stub:
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=60)
        responses = list(stub.StyleTransfer(request(size=48, iterations=2), timeout=300))
    assert info.backbones == ["keras-vgg16"]
    result = responses[-1].result
    assert result.receipt.backbone == "keras-vgg16"
    assert result.receipt.weights_sha256 == keras_vgg16.sha256 != ""
    assert result.effective_options.backbone == "keras-vgg16"
    assert result.losses.total > 0


def test_the_command_loads_the_exported_artifacts_and_warms_up(server_cache: Path):
    args = ("--cache-dir", str(server_cache), "--device", "cpu", "--warmup")
    with server_process(*args) as server:
        wait_for_health(server.target, SERVING, timeout=300)
        with connect(server.target) as stub:
            responses = list(stub.StyleTransfer(request(size=32, iterations=1), timeout=300))
        server.process.terminate()
        assert server.process.wait(timeout=120) == 0
    assert responses[-1].result.receipt.weights_sha256
    messages = [record["message"] for record in server.logs]
    assert messages.index("weights loaded") < messages.index("serving")
    assert messages.index("feed-forward networks loaded") < messages.index("serving")
