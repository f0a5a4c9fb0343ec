"""The client's view of a time budget: a Result that says whether it is partial and why."""

from styleserve import Client

from tests.client.client_helpers import LONG_JOB, QUICK_JOB


def test_a_result_says_whether_the_job_ran_out_of_time(server, content, style):
    with Client(server.target, timeout=60) as client:
        partial = client.stylize(content, style, time_budget_seconds=1.0, **LONG_JOB)
        complete = client.stylize(content, style, **QUICK_JOB)
    assert partial.partial and partial.stop_reason == "time_budget"
    assert partial.options.time_budget_seconds == 1.0
    assert not complete.partial and complete.stop_reason == "completed"
