"""The sync client against a real server on a loopback port (tiny VGG, so jobs are quick)."""

import contextlib
import threading

import pytest
from PIL import Image
from styleserve import (
    Client,
    DeadlineExceeded,
    InvalidArgument,
    Preview,
    Progress,
    Queued,
    ResourceExhausted,
    Result,
    Started,
    StyleOptions,
    Unauthenticated,
)
from styleserve.options import PRESETS

from tests.client.client_helpers import CONTENT_SIZE, LONG_JOB, NEXT_JOB_TIMEOUT, QUICK_JOB


def _advance_to(events, kind):
    for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"the stream ended before a {kind.__name__} event")


def test_stylize_returns_a_decodable_picture_of_the_requested_size(server, content, style):
    with Client(server.target, timeout=120) as client:
        result = client.stylize(content, style, size=48, iterations=4, seed=7)
    assert isinstance(result, Result)
    picture = result.image()
    assert picture.format == "PNG"
    # The longest side is 48 and the content's 2:1 aspect ratio is kept.
    assert picture.size == (48, 48 * CONTENT_SIZE[1] // CONTENT_SIZE[0])
    assert (result.width, result.height) == picture.size
    assert result.receipt.seed == 7
    assert result.receipt.device and result.receipt.backbone and result.receipt.server_version
    assert isinstance(result.options, StyleOptions)
    assert (result.options.size, result.options.iterations, result.options.seed) == (48, 4, 7)
    assert result.timings.total_seconds >= result.timings.optimize_seconds > 0


def test_pictures_go_in_as_paths_bytes_or_pil_images_and_out_as_files(
    server, content, style, tmp_path
):
    with Client(server.target, timeout=120) as client:
        result = client.stylize(
            content.read_bytes(), [Image.open(style), style], output_format="jpeg", **QUICK_JOB
        )
    saved = result.save(tmp_path / "out.jpg")
    assert saved.read_bytes() == result.data
    assert Image.open(saved).format == "JPEG"


def test_a_job_streams_queued_started_progress_previews_then_result(start_server, content, style):
    with start_server(job_slots=1, queue_size=2) as srv, Client(srv.target, timeout=120) as client:
        # The first job holds the only slot, so the second one queues first.
        first = client.stream(content, style, size=32, iterations=20)
        _advance_to(first, Started)
        second = client.stream(
            content, style, size=40, iterations=6, preview_every=2, preview_size=16
        )
        events = [next(second)]
        assert events == [Queued(position=0, sequence=1)]
        assert isinstance(_advance_to(first, Result), Result)
        events += list(second)
    kinds = [type(e).__name__ for e in events]
    assert kinds[-1] == "Result" and kinds.count("Result") == 1
    # Numbered 1, 2, 3, ... in the order they came (a job's own call keeps every event).
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    started = kinds.index("Started")
    assert set(kinds[:started]) == {"Queued"}
    assert set(kinds[started + 1 : -1]) == {"Progress", "Preview"}
    progress = [e for e in events if isinstance(e, Progress)]
    total = events[started].total_iterations
    assert [p.iteration for p in progress] == list(range(1, total + 1))
    assert all(p.total_iterations == total and p.losses.total > 0 for p in progress)
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and all(max(p.image().size) == 16 for p in previews)
    result = events[-1]
    assert max(result.image().size) == 40


def test_leaving_the_stream_early_cancels_the_job_and_frees_its_slot(start_server, content, style):
    with start_server(job_slots=1, queue_size=1) as srv, Client(srv.target) as client:
        for event in client.stream(content, style, **LONG_JOB):
            if isinstance(event, Progress):
                break
        # Were the long job still running, this one would wait for it past its deadline.
        result = client.stylize(content, style, timeout=NEXT_JOB_TIMEOUT, **QUICK_JOB)
    assert result.iterations > 0


def test_a_full_queue_is_resource_exhausted_with_a_retry_hint(start_server, content, style):
    # No retries: the SDK would re-send after the server's hint (a measured job's length, which
    # on a loaded machine is long enough to outlast the call's timeout).
    with (
        start_server(job_slots=1, queue_size=0) as srv,
        Client(srv.target, timeout=120, retries=0) as client,
    ):
        with contextlib.closing(client.stream(content, style, **LONG_JOB)) as running:
            _advance_to(running, Progress)
            with pytest.raises(ResourceExhausted) as err:
                client.stylize(content, style, **QUICK_JOB)
    assert err.value.code.name == "RESOURCE_EXHAUSTED"
    assert err.value.retry_after is not None and err.value.retry_after > 0
    assert "retry" in err.value.details


def test_a_deadline_is_deadline_exceeded_and_the_server_stops_the_job(start_server, content, style):
    with start_server(job_slots=1, queue_size=1) as srv, Client(srv.target) as client:
        with pytest.raises(DeadlineExceeded):
            # Strict: the default policy would end the job in time with a partial result.
            client.stylize(content, style, timeout=2.0, deadline_policy="strict", **LONG_JOB)
        assert client.stylize(content, style, timeout=NEXT_JOB_TIMEOUT, **QUICK_JOB).iterations


@pytest.mark.parametrize(
    "bad",
    [b"not a picture", b"\x89PNG\r\n\x1a\n" + b"\0" * 40],
    ids=["garbage", "truncated-png"],
)
def test_a_bad_picture_is_invalid_argument_naming_it(server, style, bad):
    with Client(server.target, timeout=60) as client:
        with pytest.raises(InvalidArgument, match="content") as err:
            client.stylize(bad, style, **QUICK_JOB)
    assert err.value.code.name == "INVALID_ARGUMENT"


def test_a_wrong_or_missing_token_is_unauthenticated(start_server, content, style):
    with start_server(auth_token="s3cret") as srv:
        for token in ("wrong", None):
            with Client(srv.target, token=token, timeout=30) as client:
                with pytest.raises(Unauthenticated):
                    client.info()
                with pytest.raises(Unauthenticated):
                    client.stylize(content, style, **QUICK_JOB)
        with Client(srv.target, token="s3cret", timeout=60) as client:
            assert client.info().version
            assert client.stylize(content, style, **QUICK_JOB).iterations


def test_info_describes_the_server(server):
    with Client(server.target, timeout=30) as client:
        info = client.info()
    assert info.version and info.device and info.backbones
    assert set(info.presets) == set(PRESETS)
    assert info.presets["seed"].iterations == 30
    assert info.limits.job_slots >= 1 and info.limits.max_output_side > 0


def test_round_robin_over_a_dns_target(server, content, style):
    port = server.target.rsplit(":", 1)[1]
    target = f"dns:///127.0.0.1:{port}"
    with Client(target, load_balancing="round_robin", timeout=60) as client:
        assert client.stylize(content, style, **QUICK_JOB).iterations


def _infos_served(server) -> int:
    value = server.server.metrics.registry.get_sample_value(
        "styleserve_requests_total", {"method": "GetServerInfo", "code": "OK"}
    )
    return int(value or 0)


@pytest.mark.parametrize(
    ("load_balancing", "servers_used"), [(None, 2), ("pick_first", 1)], ids=["default", "chosen"]
)
def test_a_dns_target_spreads_calls_over_its_addresses_unless_told_not_to(
    start_server, load_balancing, servers_used
):
    # localhost is two addresses, each with its own server on the same port.
    with start_server(host="127.0.0.1") as v4, start_server(host="::1", port=v4.port) as v6:
        target = f"dns:///localhost:{v4.port}"
        with Client(target, load_balancing=load_balancing, timeout=30) as client:
            # round_robin uses an address once connected to it: give it a few calls.
            for _ in range(20):
                client.info()
        served = [_infos_served(v4), _infos_served(v6)]
    assert sum(served) == 20
    assert sum(n > 0 for n in served) == servers_used, f"calls per address: {served}"


def test_clients_in_threads_share_a_server(start_server, content, style):
    results: list[Result] = []
    with start_server(job_slots=2, queue_size=4) as srv, Client(srv.target, timeout=120) as client:
        threads = [
            threading.Thread(
                target=lambda: results.append(client.stylize(content, style, **QUICK_JOB))
            )
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 3
    assert len({r.receipt.request_id for r in results}) == 3


def test_an_address_list_spreads_calls_over_its_servers(start_server):
    with start_server() as a, start_server() as b:
        with Client(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}", timeout=30) as client:
            for _ in range(20):
                client.info()
        served = [_infos_served(a), _infos_served(b)]
    assert sum(served) == 20
    assert all(n > 0 for n in served), f"calls per address: {served}"
