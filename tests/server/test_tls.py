"""TLS and mTLS on the gRPC port, and the plaintext health-only port beside it for kubelet.

The certificates come from ``trustme``: a throwaway CA issues the server's certificate (for
127.0.0.1, the address test servers listen on) and a client's; a second CA stands for anyone
else. The CLI runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from styleserve import AsyncClient, Client, Progress, Unauthenticated, Unavailable
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc
from styleserve_server.app import SERVICE_NAME

from tests.fixtures_server import NOT_SERVING, SERVING, RunningServer, health, serve_in_thread
from tests.server.service_helpers import encoded, picture, wait_until

pytestmark = pytest.mark.timeout(300)

TOKEN = "tls-t0ken"


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA, the server's pair, a client's pair, and a CA that signed neither."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    issued = {
        "server": ca.issue_cert("127.0.0.1", "localhost"),
        "client": ca.issue_cert("client.styleserve.test"),
        "other_client": other.issue_cert("intruder.styleserve.test"),
    }
    for name, cert in issued.items():
        cert.private_key_pem.write_to_path(str(directory / f"{name}.key"))
        # The leaf and its chain, in one file, as cert-manager writes tls.crt.
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(directory / f"{name}.crt"), append=i > 0)
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    other.cert_pem.write_to_path(str(directory / "other_ca.crt"))
    return Pki(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other_ca.crt",
        other_client_cert=directory / "other_client.crt",
        other_client_key=directory / "other_client.key",
    )


def tls_settings(pki: Pki, *, mtls: bool = False, **overrides: Any) -> dict[str, Any]:
    """Settings of a TLS (``mtls``: client certificates required) test server."""
    settings: dict[str, Any] = {
        "tls_cert_file": pki.server_cert,
        "tls_key_file": pki.server_key,
        "health_port": 0,
        "auth_token": TOKEN,
        **overrides,
    }
    if mtls:
        settings["tls_client_ca_file"] = pki.ca
    return settings


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[RunningServer]:
    with serve_in_thread(**tls_settings(pki)) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[RunningServer]:
    with serve_in_thread(**tls_settings(pki, mtls=True)) as running:
        yield running


def health_target(srv: RunningServer) -> str:
    assert srv.server.health_port, "a TLS server binds its plaintext health port"
    return f"127.0.0.1:{srv.server.health_port}"


def style_picture() -> bytes:
    return encoded(picture((40, 40)), "JPEG")


# --- TLS --------------------------------------------------------------------------------------


def test_client_stylizes_over_tls_with_the_token(tls_server: RunningServer, pki: Pki):
    with Client(tls_server.target, ca_cert=pki.ca, token=TOKEN, timeout=60) as client:
        assert client.info().version
        result = client.stylize(encoded(), style_picture(), size=32, iterations=3)
    assert (result.width, result.height) == (32, 21)


def test_ca_cert_may_be_pem_bytes(tls_server: RunningServer, pki: Pki):
    with Client(tls_server.target, ca_cert=pki.ca.read_bytes(), token=TOKEN, timeout=60) as c:
        assert c.info().limits.job_slots >= 1


def test_the_token_is_still_required_over_tls(tls_server: RunningServer, pki: Pki):
    with Client(tls_server.target, ca_cert=pki.ca, timeout=60) as client:
        with pytest.raises(Unauthenticated):
            client.info()


@pytest.mark.parametrize("trust", ["plaintext", "other_ca", "system_roots"])
def test_a_client_that_cannot_verify_the_server_fails_the_handshake(
    tls_server: RunningServer, pki: Pki, trust: str
):
    connection: dict[str, Any] = {
        "plaintext": {},
        "other_ca": {"ca_cert": pki.other_ca},
        "system_roots": {"tls": True},
    }[trust]
    with Client(tls_server.target, token=TOKEN, timeout=30, **connection) as client:
        with pytest.raises(Unavailable):
            client.info()


def test_client_cert_without_its_key_is_refused(pki: Pki):
    with pytest.raises(ValueError, match="client_key"):
        Client("127.0.0.1:1", ca_cert=pki.ca, client_cert=pki.client_cert)


def test_credentials_and_pem_inputs_are_exclusive(pki: Pki):
    with pytest.raises(ValueError, match="not both"):
        Client("127.0.0.1:1", ca_cert=pki.ca, credentials=grpc.ssl_channel_credentials())


# --- mTLS -------------------------------------------------------------------------------------


def test_mtls_client_with_a_certificate_of_the_client_ca_works(
    mtls_server: RunningServer, pki: Pki
):
    with Client(
        mtls_server.target,
        ca_cert=pki.ca,
        client_cert=pki.client_cert,
        client_key=pki.client_key,
        token=TOKEN,
        timeout=60,
    ) as client:
        assert client.info().version
        result = client.stylize(encoded(), style_picture(), size=32, iterations=3)
    assert result.width == 32


def test_async_client_over_mtls(mtls_server: RunningServer, pki: Pki):
    async def info() -> str:
        async with AsyncClient(
            mtls_server.target,
            ca_cert=pki.ca,
            client_cert=pki.client_cert.read_bytes(),
            client_key=pki.client_key.read_bytes(),
            token=TOKEN,
            timeout=60,
        ) as client:
            return (await client.info()).version

    assert asyncio.run(info())


@pytest.mark.parametrize("identity", ["none", "other_ca"])
def test_mtls_refuses_a_client_without_a_certificate_of_the_client_ca(
    mtls_server: RunningServer, pki: Pki, identity: str
):
    connection: dict[str, Any] = {
        "none": {},
        "other_ca": {"client_cert": pki.other_client_cert, "client_key": pki.other_client_key},
    }[identity]
    with Client(
        mtls_server.target, ca_cert=pki.ca, token=TOKEN, timeout=30, **connection
    ) as client:
        with pytest.raises(Unavailable):
            client.info()


def test_mtls_client_trusting_the_wrong_ca_fails(mtls_server: RunningServer, pki: Pki):
    with Client(
        mtls_server.target,
        ca_cert=pki.other_ca,
        client_cert=pki.client_cert,
        client_key=pki.client_key,
        token=TOKEN,
        timeout=30,
    ) as client:
        with pytest.raises(Unavailable):
            client.info()


# --- the plaintext health-only port -----------------------------------------------------------


def test_health_port_answers_kubelet_style_checks(mtls_server: RunningServer):
    # kubelet's gRPC probe: plaintext, no client certificate, service "" (the whole server).
    assert health(health_target(mtls_server)) == SERVING
    assert health(health_target(mtls_server), SERVICE_NAME) == SERVING


def test_health_port_serves_nothing_else(mtls_server: RunningServer):
    with grpc.insecure_channel(health_target(mtls_server)) as channel:
        stub = pb_grpc.StyleTransferServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as stream:
            list(stub.StyleTransfer(pb.StyleTransferRequest(), timeout=30))
        assert stream.value.code() is grpc.StatusCode.UNIMPLEMENTED
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as reflected:
            list(reflection.ServerReflectionInfo(iter([listing]), timeout=30))
        assert reflected.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_tls_port_does_not_answer_plaintext_health(mtls_server: RunningServer):
    with pytest.raises(grpc.RpcError) as info:
        health(mtls_server.target)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_no_health_only_port_without_tls(server: RunningServer):
    assert server.server.health_port is None
    assert health(server.target) == SERVING


def test_health_port_drains_with_the_server_and_closes_after_it(start_server, pki: Pki):
    with start_server(**tls_settings(pki, grace_seconds=120)) as srv:
        target = health_target(srv)
        with Client(srv.target, ca_cert=pki.ca, token=TOKEN, timeout=120) as client:
            events = client.stream(encoded(), style_picture(), size=256, iterations=5000)
            next(e for e in events if isinstance(e, Progress))
            stopping = threading.Thread(target=srv.stop, args=(120,))
            stopping.start()
            # The job still runs: the TLS port drains and the health port says so.
            wait_until(lambda: health(target) == NOT_SERVING)
            events.close()  # cancels the job, which ends the drain
            stopping.join(120)
        assert not stopping.is_alive()
        with pytest.raises(grpc.RpcError) as closed:
            health(target)
        assert closed.value.code() is grpc.StatusCode.UNAVAILABLE


# --- the CLI ----------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "styleserve.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_info_over_tls(tls_server: RunningServer, pki: Pki):
    done = _cli(
        "info", "--server", tls_server.target, "--tls", "--ca-cert", str(pki.ca),
        "--token", TOKEN,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "preset     seed:" in done.stdout


def _mtls_flags(srv: RunningServer, pki: Pki, *, client_certificate: bool = True) -> list[str]:
    flags = ["--server", srv.target, "--tls", "--ca-cert", str(pki.ca), "--token", TOKEN]
    if client_certificate:
        flags += ["--client-cert", str(pki.client_cert), "--client-key", str(pki.client_key)]
    return flags


def test_cli_stylize_over_mtls(mtls_server: RunningServer, pki: Pki, tmp_path: Path):
    content, style, out = tmp_path / "content.png", tmp_path / "style.jpg", tmp_path / "out.png"
    content.write_bytes(encoded())
    style.write_bytes(style_picture())
    done = _cli(
        "stylize", str(content), str(style), "-o", str(out), "--size", "32", "--iterations", "3",
        *_mtls_flags(mtls_server, pki),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.exists()


def test_cli_info_over_mtls_needs_the_client_certificate(mtls_server: RunningServer, pki: Pki):
    done = _cli("info", "--json", *_mtls_flags(mtls_server, pki))
    assert done.returncode == 0, done.stderr
    refused = _cli("info", *_mtls_flags(mtls_server, pki, client_certificate=False))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("styleserve: UNAVAILABLE")
