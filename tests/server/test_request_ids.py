"""A caller's request id is echoed in metadata and log lines, so it is checked first: printable
ASCII of at most 128 characters, else INVALID_ARGUMENT and nothing of it logged."""

from __future__ import annotations

import logging

import grpc
import pytest
from styleserve_server import logs

from tests.fixtures_server import SERVING, health
from tests.server.service_helpers import connect, kinds, request, rpc_error


@pytest.mark.parametrize(
    "bad",
    ["x" * 129, "caf\u00e9", "two words", "forged\nlog line", "nul\x00", "tab\there"],
    ids=["too-long", "non-ascii", "space", "newline", "nul", "tab"],
)
def test_a_bad_request_id_is_invalid_argument_and_never_logged(server, bad, caplog):
    caplog.set_level(logging.INFO)
    # The server's own filter, which stamps each record with its call's request id.
    caplog.handler.addFilter(logs._RequestIdFilter())
    with connect(server.target) as stub:
        message = request(iterations=1)
        message.request_id = bad
        error = rpc_error(stub.StyleTransfer(message, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("request_id: ")
    assert all(bad not in record.getMessage() for record in caplog.records)
    assert all(record.request_id != bad for record in caplog.records)
    assert any(len(record.request_id) == 32 for record in caplog.records)  # its own id instead
    assert health(server.target) == SERVING


def test_a_good_request_id_comes_back_in_the_headers(server):
    good = "order-42/job_7:retry=1"
    with connect(server.target) as stub:
        message = request(iterations=1)
        message.request_id = good
        call = stub.StyleTransfer(message, timeout=60)
        assert dict(call.initial_metadata())["x-request-id"] == good
        assert kinds(call)[-1] == "result"
