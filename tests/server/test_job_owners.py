"""A detachable job is its caller's alone, over the network: two callers with certificates
from the same CA (mTLS), and the same token, are two owners (issue 22).

``test_detach`` checks the store's rule (another owner's id is NOT_FOUND, worded as an unknown
one) and that a wrong token is turned away before it; this runs the rule end to end, where the
owner is what the server derives from a real TLS handshake's client certificate. The server
takes one token, so two callers with tokens of their own cannot both get in: the certificates
are what tells them apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc

from tests.fixtures_server import RunningServer, serve_in_thread
from tests.server.service_helpers import request, rpc_error

pytestmark = pytest.mark.timeout(300)

TOKEN = "shared-t0ken"
_METADATA = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def pem() -> dict[str, bytes]:
    """PEM bytes by name: the CA, and the server's, Alice's and Bob's pairs, all of one CA."""
    ca = trustme.CA()
    issued = {
        "server": ca.issue_cert("127.0.0.1"),
        "alice": ca.issue_cert("alice.styleserve.test"),
        "bob": ca.issue_cert("bob.styleserve.test"),
    }
    blobs = {"ca": ca.cert_pem.bytes()}
    for name, cert in issued.items():
        blobs[f"{name}.key"] = cert.private_key_pem.bytes()
        blobs[f"{name}.crt"] = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    return blobs


@pytest.fixture(scope="module")
def mtls_server(pem: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("mtls")
    files: dict[str, Path] = {}
    for name in ("ca", "server.crt", "server.key"):
        files[name] = folder / name
        files[name].write_bytes(pem[name])
    settings: dict[str, Any] = {
        "tls_cert_file": files["server.crt"],
        "tls_key_file": files["server.key"],
        "tls_client_ca_file": files["ca"],
        "auth_token": TOKEN,
    }
    with serve_in_thread(**settings) as running:
        yield running


def _stub(
    srv: RunningServer, pem: dict[str, bytes], who: str
) -> Iterator[pb_grpc.StyleTransferServiceStub]:
    credentials = grpc.ssl_channel_credentials(pem["ca"], pem[f"{who}.key"], pem[f"{who}.crt"])
    with grpc.secure_channel(srv.target, credentials) as channel:
        yield pb_grpc.StyleTransferServiceStub(channel)


@pytest.fixture
def alice(mtls_server, pem):
    yield from _stub(mtls_server, pem, "alice")


@pytest.fixture
def bob(mtls_server, pem):
    yield from _stub(mtls_server, pem, "bob")


def _watch_error(stub, job_id: str) -> grpc.RpcError:
    watch = pb.WatchJobRequest(job_id=job_id)
    return rpc_error(stub.WatchJob(watch, timeout=30, metadata=_METADATA))


def test_another_callers_running_job_is_not_found_like_an_unknown_id(alice, bob):
    message = request(iterations=40)
    message.detachable = True
    call = alice.StyleTransfer(message, timeout=60, metadata=_METADATA)
    started = next(r.started for r in call if r.HasField("started"))
    assert started.job_id
    theirs, unknown = _watch_error(bob, started.job_id), _watch_error(bob, "x" * 32)
    assert theirs.code() is unknown.code() is grpc.StatusCode.NOT_FOUND
    assert theirs.details() == unknown.details()
    # Bob's attempt took nothing from Alice: her call, and a watch of hers, see the job end.
    rest = list(call)
    assert rest[-1].HasField("result")
    watch = pb.WatchJobRequest(job_id=started.job_id)
    replay = [r.event for r in alice.WatchJob(watch, timeout=30, metadata=_METADATA)]
    assert replay[-1] == rest[-1]
