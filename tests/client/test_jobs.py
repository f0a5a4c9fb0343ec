"""The SDK's and the CLI's detachable jobs by id (get, list, cancel, watch) and a detachable call
dropped while it queued, against real loopback servers (issue 22)."""

import json
import re
import subprocess
import threading

import pytest
from harness import TcpProxy
from styleserve import (
    Cancelled,
    Client,
    NotFound,
    OutOfRange,
    Progress,
    Queued,
    Result,
    Started,
)
from styleserve.cli import EXIT_INTERRUPTED

from tests.client.client_helpers import cli_command, ctrl_c

_ENDLESS = {"size": 32, "iterations": 5000}


def _started(client, content, style, **options):
    """Starts a detachable job and leaves its stream after the first Progress (the job runs
    on); its Started."""
    started = None
    for event in client.stream(content, style, detachable=True, **options):
        if isinstance(event, Started):
            started = event
        if isinstance(event, Progress):
            break
    assert started is not None
    return started


def test_get_list_and_cancel_a_job_by_id(start_server, content, style):
    with start_server(job_slots=1) as srv, Client(srv.target, timeout=60) as client:
        started = _started(client, content, style, **_ENDLESS)
        job = client.get_job(started.job_id)
        assert job.state == "running" and not job.done and job.progress.iteration >= 1
        assert [j.job_id for j in client.list_jobs()] == [started.job_id]
        client.cancel_job(started.job_id)
        cancelled = client.get_job(started.job_id)
        assert cancelled.state == "cancelled" and isinstance(cancelled.error, Cancelled)
        with pytest.raises(NotFound):
            client.get_job("no-such-job")
        # A watch resuming past the job's newest event: a class of its own, not the base one.
        with pytest.raises(OutOfRange, match="after_sequence"):
            next(client.watch_job(started.job_id, after_sequence=10**9))
        # The slot is free again: a quick job runs.
        assert client.stylize(content, style, size=32, iterations=3).width == 32


def test_a_detachable_call_dropped_while_queued_is_sent_again(start_server, content, style):
    with start_server(job_slots=1, queue_size=4) as srv, TcpProxy(srv.target) as proxy:
        with Client(srv.target, timeout=120) as blocker, Client(proxy.target, timeout=120) as me:
            ahead = blocker.stream(content, style, size=32, iterations=60)
            next(e for e in ahead if isinstance(e, Started))
            blocked: list = []
            rest = threading.Thread(target=lambda: blocked.extend(ahead))
            rest.start()
            events = []
            for event in me.stream(content, style, size=32, iterations=20, detachable=True):
                events.append(event)
                if isinstance(event, Queued) and proxy.drops == 0:
                    proxy.drop()
            rest.join(timeout=120)
        started = [e for e in events if isinstance(e, Started)]
        assert proxy.drops == 1 and len(started) == 1 and isinstance(events[-1], Result)
        iterations = srv.server.metrics.registry.get_sample_value("styleserve_iterations_total")
        # Each job ran once: the dropped request queued again rather than running twice.
        assert iterations == blocked[-1].iterations + events[-1].iterations


def _cli(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = cli_command("jobs", *args, "--server", target, "--json")
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_jobs_command_lists_gets_watches_and_cancels(start_server, content, style, tmp_path):
    with start_server(job_slots=1) as srv, Client(srv.target, timeout=60) as client:
        events = list(client.stream(content, style, size=32, iterations=5, detachable=True))
        done = next(e for e in events if isinstance(e, Started)).job_id
        output = tmp_path / "watched.png"
        watched = _cli(srv.target, "watch", done, "-o", str(output))
        assert watched.returncode == 0, watched.stderr
        assert output.read_bytes() == events[-1].data
        assert json.loads(watched.stdout)["result"]["sha256"] == events[-1].sha256
        running = _started(client, content, style, **_ENDLESS).job_id
        listed = _cli(srv.target, "list")
        assert [(j["job_id"], j["state"]) for j in json.loads(listed.stdout)] == [
            (done, "succeeded"),
            (running, "running"),
        ]
        got = json.loads(_cli(srv.target, "get", done).stdout)
        assert got["result"]["sha256"] == events[-1].sha256 and got["error"] is None
        cancelled = json.loads(_cli(srv.target, "cancel", running).stdout)
        assert cancelled["state"] == "cancelled" and cancelled["error"]["code"] == "CANCELLED"
        missing = _cli(srv.target, "get", "no-such-job")
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
        # Past the Result's number, a watch of an ended job has nothing left: said, exit 0.
        after = _cli(srv.target, "watch", done, "--after", str(events[-1].sequence))
        assert after.returncode == 0, after.stderr
        assert "nothing after event" in after.stdout


def test_ctrl_c_leaves_a_detachable_cli_job_running_and_names_it(
    start_server, content, style, tmp_path
):
    previews = tmp_path / "previews"
    with start_server(job_slots=1) as srv:
        # A preview on disk: Started, which names the job, came before it.
        status, stderr = ctrl_c(
            cli_command(
                "stylize", str(content), str(style), "-o", str(tmp_path / "out.png"),
                "--server", srv.target, "--detachable", "--size", "32", "--iterations", "5000",
                "--previews", str(previews), "--preview-every", "1",
            ),
            lambda: previews.is_dir() and any(previews.iterdir()),
            "a preview",
        )  # fmt: skip
        assert status == EXIT_INTERRUPTED
        said = re.search(
            r"interrupted; job (\S+) runs on, .*detach grace.*jobs watch \1 -o", stderr
        )
        assert said, stderr
        job_id = said.group(1)
        assert json.loads(_cli(srv.target, "get", job_id).stdout)["state"] == "running"
        cancelled = json.loads(_cli(srv.target, "cancel", job_id).stdout)
        assert cancelled["state"] == "cancelled"


def test_a_folder_run_refuses_detachable(tmp_path, content, style):
    done = subprocess.run(
        cli_command("stylize", str(content), str(style), "-o", f"{tmp_path}/", "--detachable"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--detachable takes one picture" in done.stderr
