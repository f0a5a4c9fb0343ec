"""The server says which precision "auto" means on its device and why, in GetServerInfo and in
every receipt (the measurement itself is the engine's, tested in tests/server/engine)."""

from __future__ import annotations

from styleserve.v1 import style_transfer_pb2 as pb

from tests.server.service_helpers import connect, request


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
