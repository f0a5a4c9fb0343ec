"""torchvision-style sources over real HTTP on a loopback port, dropped connections included."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from styleserve_export.artifact import TORCHVISION_NORMALIZATION
from styleserve_export.errors import ExportError
from styleserve_export.export import export
from styleserve_export.loader import load_backbone
from styleserve_export.sources import UrlSource


class WeightServer(ThreadingHTTPServer):
    payload: bytes = b""
    ranges = True  # honour Range requests
    cuts = 0  # how many of the next responses stop after half their body
    requests: list[str | None]


class Handler(BaseHTTPRequestHandler):
    server: WeightServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server, data, start = self.server, self.server.payload, 0
        asked = self.headers.get("Range")
        server.requests.append(asked)
        if self.path.endswith("/missing.pth"):
            self.send_error(404)
            return
        if asked and server.ranges:
            start = int(asked.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cuts > 0:
            server.cuts -= 1
            body = body[: len(body) // 2]  # then the connection closes (HTTP/1.0)
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def server(tiny_pth: Path) -> Iterator[WeightServer]:
    httpd = WeightServer(("127.0.0.1", 0), Handler)
    httpd.payload, httpd.requests = tiny_pth.read_bytes(), []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _source(server: WeightServer, *, prefix: str | None = None, name: str = "") -> UrlSource:
    digest = hashlib.sha256(server.payload).hexdigest()[:8]
    prefix = prefix or digest
    url = f"http://127.0.0.1:{server.server_port}/models/{name or f'vgg16-{prefix}.pth'}"
    return UrlSource("torchvision-vgg16", url, prefix, "vgg16", size_mb=1, channel_divisor=16)


def test_download_converts_and_loads_as_torchvision(server, tmp_path, torchvision_net):
    result = export(_source(server), tmp_path)
    assert not result.skipped and result.layers == 13 and result.parity is None
    assert "parity n/a (hash and shapes checked)" in result.line()
    backbone = load_backbone("torchvision-vgg16", cache_dir=tmp_path, device="cpu")
    assert backbone.normalization == TORCHVISION_NORMALIZATION
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = torchvision_net[:30](x)
    torch.testing.assert_close(backbone.net(x, ["block5_conv3"])["block5_conv3"], expected)


def test_cut_connection_resumes_with_a_range_request(server, tmp_path):
    server.cuts = 1
    export(_source(server), tmp_path)
    half = len(server.payload) // 2
    assert server.requests == [None, f"bytes={half}-"]
    load_backbone("torchvision-vgg16", cache_dir=tmp_path, device="cpu")


def test_cut_connection_without_range_support_starts_over(server, tmp_path):
    server.cuts, server.ranges = 1, False
    export(_source(server), tmp_path)
    assert len(server.requests) == 2
    load_backbone("torchvision-vgg16", cache_dir=tmp_path, device="cpu")


def test_connection_that_keeps_dropping_fails_cleanly_then_resumes(server, tmp_path):
    server.cuts = 100
    with pytest.raises(ExportError, match="failed 4 times.*next run resumes"):
        export(_source(server), tmp_path)
    assert not (tmp_path / "torchvision-vgg16").exists()
    assert not list(tmp_path.glob(".staging-*"))
    [part] = (tmp_path / "downloads").iterdir()
    assert part.name.endswith(".pth.part") and 0 < part.stat().st_size < len(server.payload)

    kept = part.stat().st_size
    server.cuts, server.requests = 0, []
    export(_source(server), tmp_path)
    assert server.requests == [f"bytes={kept}-"]
    load_backbone("torchvision-vgg16", cache_dir=tmp_path, device="cpu")


def test_hash_mismatch_deletes_the_download(server, tmp_path):
    with pytest.raises(ExportError, match="expected one starting with 00000000"):
        export(_source(server, prefix="00000000"), tmp_path)
    assert not (tmp_path / "torchvision-vgg16").exists()
    assert list((tmp_path / "downloads").iterdir()) == []


def test_missing_file_is_not_retried(server, tmp_path):
    with pytest.raises(ExportError, match="HTTP 404"):
        export(_source(server, name="missing.pth"), tmp_path)
    assert len(server.requests) == 1
