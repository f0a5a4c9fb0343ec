"""Folders and batches: ``styleserve stylize photos/*.jpg style.jpg -o out/`` and
``Client.stylize_many``, against real servers on loopback (the tiny network, small pictures).

What ran where is read off each server's own metrics (requests by method and code, and the
admission gauges), so that no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import styleserve.client
from PIL import Image
from styleserve import AsyncClient, Client, InvalidArgument, Outcome
from styleserve.batch import batch_concurrency, replica_count
from styleserve.cli import EXIT_INTERRUPTED, main
from styleserve.folders import FolderError, plan

from tests.client.client_helpers import (
    LONG_JOB,
    NEXT_JOB_TIMEOUT,
    QUICK_JOB,
    cli_command,
    ctrl_c,
    run_on_terminal,
)
from tests.fixtures_server import RunningServer

PICTURES = 20


def _photos(folder: Path, count: int = PICTURES, corrupt: str | None = None) -> list[Path]:
    """``count`` small JPEGs of different colours; ``corrupt`` names one that is not a
    picture at all."""
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:02d}.jpg"
        Image.new("RGB", (24, 16), (12 * i, 255 - 12 * i, 90)).save(path)
        paths.append(path)
    if corrupt is not None:
        (folder / corrupt).write_bytes(b"this is not a picture")
        paths.append(folder / corrupt)
    return paths


def _requests(server: RunningServer, method: str = "StyleTransfer", code: str = "OK") -> int:
    value = server.server.metrics.registry.get_sample_value(
        "styleserve_requests_total", {"method": method, "code": code}
    )
    return int(value or 0)


def _all_requests(server: RunningServer) -> int:
    """Every RPC the server finished, whatever its method and code."""
    return int(
        sum(
            sample.value
            for metric in server.server.metrics.registry.collect()
            if metric.name == "styleserve_requests"
            for sample in metric.samples
            if sample.name == "styleserve_requests_total"
        )
    )


def _running(server: RunningServer) -> int:
    return int(server.server.metrics.registry.get_sample_value("styleserve_running_jobs") or 0)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = NEXT_JOB_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _served(server: RunningServer, total: int) -> int:
    """StyleTransfer calls served OK once ``total`` are counted: a server counts a call just
    after its last message, so the client may see the result a moment earlier."""
    _wait_for(lambda: _requests(server) >= total, f"fewer than {total} calls were counted")
    return _requests(server)


class _Peak:
    """Stands in for an admission gauge and keeps the highest value it was set to: the most
    jobs the server held at once, whatever the timing."""

    def __init__(self) -> None:
        self.value = 0.0
        self.peak = 0.0

    def set(self, value: float) -> None:
        self.value = value
        self.peak = max(self.peak, value)


def _watch_jobs(server: RunningServer) -> tuple[_Peak, _Peak]:
    """The server's (queued, running) gauges, replaced by peak keepers."""
    metrics = server.server.metrics
    metrics.queue_depth, metrics.running_jobs = _Peak(), _Peak()  # type: ignore[assignment]
    return metrics.queue_depth, metrics.running_jobs  # type: ignore[return-value]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout)


def _stylize_folder(srv: RunningServer, photos: list[Path], style: Path, out: Path, *extra: str):
    return _cli(
        "stylize", *map(str, photos), str(style), "-o", f"{out}/", "--server", srv.target,
        "--size", str(QUICK_JOB["size"]), "--iterations", str(QUICK_JOB["iterations"]),
        "--json", *extra,
    )  # fmt: skip


def test_a_folder_is_written_whole_and_a_rerun_skips_every_picture(start_server, style, tmp_path):
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    with start_server(job_slots=2, queue_size=8) as srv:
        done = _stylize_folder(srv, photos, style, out)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert len(summary["written"]) == PICTURES
        assert summary["skipped"] == [] and summary["failed"] == []
        # Named after the content, with the output format's suffix; nothing half-written.
        assert sorted(p.name for p in out.iterdir()) == [f"{p.stem}.png" for p in photos]
        assert {e["output"] for e in summary["written"]} == {str(p) for p in out.iterdir()}
        assert all(Image.open(p).width == QUICK_JOB["size"] for p in out.iterdir())
        assert _served(srv, PICTURES) == PICTURES

        calls_before = _all_requests(srv)
        rerun = _stylize_folder(srv, photos, style, out)
        assert rerun.returncode == 0, rerun.stderr
        summary = json.loads(rerun.stdout)
        assert summary["written"] == [] and summary["failed"] == []
        assert {e["content"] for e in summary["skipped"]} == {str(p) for p in photos}
        # Not one call reached the server: no job, not even a question about its slots.
        assert _all_requests(srv) == calls_before


def test_a_corrupt_picture_is_reported_and_the_rest_are_written(start_server, style, tmp_path):
    photos = _photos(tmp_path / "photos", PICTURES - 1, corrupt="broken.jpg")
    out = tmp_path / "out"
    with start_server(job_slots=2, queue_size=8) as srv:
        done = _stylize_folder(srv, [tmp_path / "photos"], style, out, "--output-format", "jpeg")
        assert done.returncode == 1
        summary = json.loads(done.stdout)
        assert len(summary["written"]) == PICTURES - 1
        [failed] = summary["failed"]
        assert failed["content"] == str(photos[-1]) and failed["code"] == "INVALID_ARGUMENT"
        assert failed["request_id"]
        # One line on stderr names the file and the error; the batch went on.
        [line] = [line for line in done.stderr.splitlines() if "broken.jpg" in line]
        assert line.startswith(f"styleserve: {photos[-1]}: INVALID_ARGUMENT: ")
        assert "Traceback" not in done.stderr
        assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.jpg" for p in photos[:-1])

        # A rerun sends the one picture still missing, and fails it again.
        refused_before = _requests(srv, code="INVALID_ARGUMENT")
        ok_before = _requests(srv)
        again = _stylize_folder(srv, [tmp_path / "photos"], style, out, "--output-format", "jpeg")
        assert again.returncode == 1
        summary = json.loads(again.stdout)
        assert len(summary["skipped"]) == PICTURES - 1 and len(summary["failed"]) == 1
        assert _requests(srv, code="INVALID_ARGUMENT") == refused_before + 1
        assert _requests(srv) == ok_before


def test_the_sdk_keeps_at_most_the_bound_in_flight(start_server, content, style):
    pictures = [content] * 6 + [b"not a picture"] + [content] * 3
    with start_server(job_slots=4, queue_size=8) as srv:
        queued, running = _watch_jobs(srv)
        with Client(srv.target, timeout=NEXT_JOB_TIMEOUT) as client:
            outcomes = list(client.stylize_many(pictures, style, concurrency=2, **QUICK_JOB))
        assert sorted(o.index for o in outcomes) == list(range(len(pictures)))
        failed = [o for o in outcomes if not o.ok]
        assert [o.index for o in failed] == [6]
        assert isinstance(failed[0].error, InvalidArgument) and failed[0].result is None
        assert all(o.result is not None and o.result.iterations > 0 for o in outcomes if o.ok)
        assert len({o.request_id for o in outcomes}) == len(pictures)
        # Four slots free, yet never more than two jobs held at once, and none waited.
        assert 1 <= running.peak <= 2 and queued.peak == 0


def test_by_default_the_bound_is_the_servers_slots(start_server, content, style):
    """With no queue and no retries, a job beyond the server's slots would be refused."""
    with start_server(job_slots=2, queue_size=0) as srv:
        _, running = _watch_jobs(srv)
        with Client(srv.target, retries=0, timeout=NEXT_JOB_TIMEOUT) as client:
            outcomes = list(client.stylize_many([content] * 6, style, **QUICK_JOB))
        assert all(o.ok for o in outcomes), [o.error for o in outcomes]
        assert running.peak <= 2
        assert _requests(srv, code="RESOURCE_EXHAUSTED") == 0


def test_an_instant_batch_is_bounded_by_the_instant_tiers_own_slots(
    start_server, content, style, monkeypatch
):
    chosen: list[int] = []
    real = styleserve.client.run_batch

    def spy(stylize, contents, concurrency, in_flight):  # type: ignore[no-untyped-def]
        chosen.append(concurrency)
        return real(stylize, contents, concurrency, in_flight)

    monkeypatch.setattr(styleserve.client, "run_batch", spy)
    with start_server(job_slots=3, feed_forward_slots=2) as srv, Client(srv.target) as client:
        limits = client.info().limits
        assert (limits.feed_forward_slots, limits.feed_forward_queue_size) == (2, 32)
        instant = list(client.stylize_many([content] * 3, style, preset="instant", size=32))
        optimised = list(client.stylize_many([content] * 3, style, **QUICK_JOB))
    assert all(o.ok for o in instant + optimised)
    assert chosen == [2, 3]


def test_two_servers_behind_one_address_share_a_batch(start_server, content, style):
    with start_server(job_slots=1, queue_size=4) as a, start_server(job_slots=1, queue_size=4) as b:
        target = f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}"
        assert batch_concurrency(1, target, "round_robin") == 2
        with Client(target, load_balancing="round_robin", timeout=NEXT_JOB_TIMEOUT) as client:
            outcomes = list(client.stylize_many([content] * 6, style, **QUICK_JOB))
        assert all(o.ok for o in outcomes)
        # round_robin sends calls to each address in turn: both servers took jobs.
        _wait_for(lambda: _requests(a) + _requests(b) >= 6, "not every call was counted")
        assert _requests(a) > 0 and _requests(b) > 0


def test_the_asyncio_client_runs_a_batch_too(start_server, content, style):
    async def run(target: str) -> list[Outcome]:
        async with AsyncClient(target, timeout=NEXT_JOB_TIMEOUT) as client:
            batch = client.stylize_many([content, b"junk", content], style, **QUICK_JOB)
            async with contextlib.aclosing(batch) as outcomes:
                return [outcome async for outcome in outcomes]

    with start_server(job_slots=1, queue_size=4) as srv:
        queued, running = _watch_jobs(srv)
        outcomes = asyncio.run(run(srv.target))
    assert sorted((o.index, o.ok) for o in outcomes) == [(0, True), (1, False), (2, True)]
    assert running.peak <= 1 and queued.peak == 0


def test_an_option_no_picture_could_go_with_stops_the_batch_before_any_call(server, content, style):
    # Not a failure per picture: a folder of thousands would read and refuse each.
    before = _all_requests(server)
    with (
        Client(server.target) as client,
        pytest.raises(InvalidArgument, match="^INVALID_ARGUMENT: size"),
    ):
        client.stylize_many([content] * 3, style, size="big")  # type: ignore[typeddict-item]

    async def run() -> None:
        async with AsyncClient(server.target) as client:
            batch = client.stylize_many([content] * 3, style, size="big")  # type: ignore[typeddict-item]
            async with contextlib.aclosing(batch) as outcomes:
                await anext(outcomes)

    with pytest.raises(InvalidArgument, match="^INVALID_ARGUMENT: size"):
        asyncio.run(run())
    assert _all_requests(server) == before


def test_leaving_a_batch_early_cancels_the_jobs_in_flight(start_server, content, style):
    with start_server(job_slots=2, queue_size=4) as srv:
        with Client(srv.target, timeout=NEXT_JOB_TIMEOUT) as client:
            # A picture refused at once, then two long jobs; the loop ends at the refusal.
            jobs = client.stylize_many([b"junk", content, content], style, **LONG_JOB)
            with contextlib.closing(jobs):
                first = next(jobs)
                # The batch waits on its caller, its slots busy with the next pictures.
                _wait_for(lambda: _running(srv) == 2, "the long jobs never ran together")
            assert first.index == 0 and isinstance(first.error, InvalidArgument)
        # The long jobs' slots are free long before they could have finished.
        _wait_for(lambda: _running(srv) == 0, "a cancelled job kept its slot")
        assert _requests(srv, code="CANCELLED") >= 2


def test_ctrl_c_cancels_every_job_of_a_folder_run(start_server, style, tmp_path):
    photos = _photos(tmp_path / "photos", 3)
    out = tmp_path / "out"
    with start_server(job_slots=2, queue_size=4) as srv:
        status, stderr = ctrl_c(
            cli_command(
                "stylize", *map(str, photos), str(style), "-o", f"{out}/", "--server",
                srv.target, "--size", str(LONG_JOB["size"]), "--iterations",
                str(LONG_JOB["iterations"]),
            ),
            lambda: _running(srv) == 2,
            "the batch to fill both slots",
        )  # fmt: skip
        assert status == EXIT_INTERRUPTED, stderr
        assert "the jobs in flight were cancelled" in stderr.strip().splitlines()[-1]
        _wait_for(lambda: _running(srv) == 0, "a cancelled job kept its slot")
        assert list(out.iterdir()) == []


def test_plan_names_outputs_after_contents_and_refuses_collisions(tmp_path):
    photos = _photos(tmp_path / "photos", 3)
    (tmp_path / "photos" / ".photo_00.png.x1.part").write_bytes(b"")
    (tmp_path / "photos" / "notes.txt").write_text("not a picture")
    planned = plan([tmp_path / "photos", photos[0]], tmp_path / "out", "webp")
    assert [(p.content, p.output.name) for p in planned] == [(p, f"{p.stem}.webp") for p in photos]
    (tmp_path / "photo_00.png").write_bytes(b"")
    with pytest.raises(FolderError, match="would both be written"):
        plan([photos[0], tmp_path / "photo_00.png"], tmp_path / "out", "png")
    with pytest.raises(FolderError, match="folder of content pictures"):
        plan([tmp_path / "photos"], tmp_path / "photos", "png")
    # Named one by one (photos/*.png): the outputs would be the pictures themselves.
    with pytest.raises(FolderError, match="holds the content picture 'photo_00.jpg'"):
        plan(photos, tmp_path / "photos", "png")


def test_replicas_are_the_addresses_round_robin_spreads_calls_over():
    assert replica_count("ipv4:127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", "round_robin") == 3
    assert replica_count("ipv4:127.0.0.1:1,127.0.0.1:2", None) == 1
    assert replica_count("dns:///127.0.0.1:50051", "round_robin") == 1
    assert replica_count("unix:/tmp/socket", "round_robin") == 1
    assert batch_concurrency(0, "127.0.0.1:1", None) == 1
    with Client("dns:///localhost:1") as client:
        assert client.load_balancing == "round_robin"


def test_a_folder_run_shows_one_bar_over_the_pictures_and_q_hides_it(server, style, tmp_path):
    photos = _photos(tmp_path / "photos", 3)
    command = cli_command(
        "stylize", *map(str, photos), str(style), "-o", f"{tmp_path / 'out'}/",
        "--server", server.target, "--size", "32", "--iterations", "2",
    )  # fmt: skip
    status, stdout, terminal = run_on_terminal(command)
    assert status == 0, terminal
    assert "3/3" in terminal and "picture" in terminal
    assert stdout.splitlines()[-1].startswith("3 written, 0 already there (skipped), 0 failed")
    assert len([line for line in stdout.splitlines() if line.startswith("wrote ")]) == 3
    status, stdout, terminal = run_on_terminal([*command, "-q"])
    assert status == 0 and "%|" not in terminal
    assert stdout.splitlines()[-1].startswith("0 written, 3 already there (skipped)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "out/"], "then the style picture"),
        (["STYLE", "-o", "out/", "--previews", "p"], "--previews takes one picture"),
        (["STYLE", "-o", "out/", "--jobs", "0"], "--jobs: must be at least 1, got 0"),
        (["STYLE", "-o", "no/such/out/"], "does not exist"),
    ],
)
def test_folder_usage_errors_exit_2(content, style, args, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["stylize", str(content), *(str(style) if a == "STYLE" else a for a in args)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
