"""The server says which precision "auto" means on its device and why, in GetServerInfo and in
every receipt (the measurement itself is the engine's, tested in tests/server/engine), and runs
only the precisions it timed."""

from __future__ import annotations

import grpc
import pytest
from styleserve.v1 import style_transfer_pb2 as pb

from tests.server.service_helpers import connect, encoded, picture, request


def test_server_info_and_receipts_report_the_measured_choice(server):
    with connect(server.target) as stub:
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        auto = list(stub.StyleTransfer(request(precision=pb.PRECISION_AUTO), timeout=60))
        asked = list(stub.StyleTransfer(request(precision=pb.PRECISION_FLOAT32), timeout=60))
    choice = info.precision_choice
    trials = {t.precision: t for t in choice.trials}
    # float32 is always measured (it is the reference), and the chosen one among the trials.
    assert "float32" in trials and choice.precision in trials
    assert all(t.seconds > 0 for t in choice.trials) and trials["float32"].deviation == 0
    assert choice.reason
    receipt = auto[-1].result.receipt
    assert receipt.precision_choice == choice
    assert receipt.precision == choice.precision
    assert auto[-1].result.effective_options.precision != pb.PRECISION_AUTO
    requested = asked[-1].result.receipt.precision_choice
    assert requested.precision == "float32" and requested.reason == "requested"
    assert not requested.trials


def test_a_precision_the_device_only_emulates_is_refused_before_any_work(server):
    style = pb.StylePicture(image=pb.Image(data=encoded(picture((40, 40)))))
    with connect(server.target) as stub:
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        timed = [t.precision for t in info.precision_choice.trials]
        # A CPU never times float16 (oneDNN emulates it); a GPU times every precision.
        emulated = [p for p in ("bfloat16", "float16") if p not in timed]
        if not emulated:
            pytest.skip(f"this server's device computes in every precision ({timed})")
        for name in emulated:
            precision = pb.Precision.Value(f"PRECISION_{name.upper()}")
            sent = []
            with pytest.raises(grpc.RpcError) as job:
                sent.extend(stub.StyleTransfer(request(precision=precision), timeout=30))
            with pytest.raises(grpc.RpcError) as registration:
                stub.RegisterStyle(
                    pb.RegisterStyleRequest(
                        styles=[style], options=pb.StyleOptions(size=32, precision=precision)
                    ),
                    timeout=30,
                )
            # Refused while its request was checked: not even queued.
            assert sent == []
            for error in (job.value, registration.value):
                assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
                assert f"does not compute in {name}" in error.details()
                assert all(p in error.details() for p in timed)
