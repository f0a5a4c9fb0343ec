"""The client's view of a time budget: a Result that says whether it is partial and why."""

import subprocess

from styleserve import Client

from tests.client.client_helpers import LONG_JOB, QUICK_JOB, cli_command


def test_a_result_says_whether_the_job_ran_out_of_time(server, content, style):
    with Client(server.target, timeout=60) as client:
        partial = client.stylize(content, style, time_budget_seconds=1.0, **LONG_JOB)
        complete = client.stylize(content, style, **QUICK_JOB)
    assert partial.partial and partial.stop_reason == "time_budget"
    assert partial.options.time_budget_seconds == 1.0
    assert not complete.partial and complete.stop_reason == "completed"


def test_the_cli_says_when_the_instant_picture_stands_in(server, content, style, tmp_path):
    # No time for one iteration: the instant tier's picture comes back, and the closing line
    # says so rather than "0 iterations, loss 0, seed 0" with no backbone.
    out = tmp_path / "out.png"
    command = cli_command(
        "stylize", str(content), str(style), "-o", str(out), "--server", server.target,
        "--time-budget", "0.001",
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    said = done.stdout.strip()
    assert "feed-forward in" in said and "tiny-arbitrary" in said, said
    assert "no iteration fitted before the time_budget, so it stands in" in said, said
