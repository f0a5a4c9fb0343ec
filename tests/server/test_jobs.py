"""The worker-to-stream hand-off never blocks the worker and never loses the end of a job."""

from __future__ import annotations

import asyncio
import threading

import pytest
from PIL import Image
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_server.engine import Finished, Iterate, Losses, PrecisionChoice
from styleserve_server.jobs import Mailbox

from tests.server.service_helpers import connect, request, sample, wait_until

LOSSES = Losses(total=1.0, content=0.5, style=0.25, tv=0.25)
PICTURE = Image.new("RGB", (8, 8))


def iterate(i: int, preview: bool = False) -> Iterate:
    return Iterate(
        iteration=i, total=500, stage=0, width=8, height=8, losses=LOSSES, elapsed=i / 10,
        preview=PICTURE if preview else None,
    )  # fmt: skip


FINISHED = Finished(
    image=PICTURE, losses=LOSSES, iterations=500, seed=1, precision="float32", device="cpu",
    setup_seconds=0.1, optimize_seconds=1.0,
    precision_choice=PrecisionChoice("float32", "requested"),
)  # fmt: skip


async def test_a_reader_that_fell_behind_gets_every_progress_record_in_order():
    mailbox = Mailbox(asyncio.get_running_loop())

    def worker() -> None:
        for i in range(1, 501):
            mailbox.put(iterate(i, preview=i % 10 == 0))
        mailbox.put(FINISHED)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()  # the whole job ran while nobody read: it never waited
    batch = await mailbox.take()
    progress = [r.iteration for r in batch if isinstance(r, Iterate) and r.preview is None]
    previews = [r.iteration for r in batch if isinstance(r, Iterate) and r.preview is not None]
    assert progress == list(range(1, 501))  # every one: nothing is lost to a slow reader
    assert previews == [500]  # only the newest picture
    assert batch[-1] is FINISHED


async def test_an_error_comes_after_the_news_before_it():
    mailbox = Mailbox(asyncio.get_running_loop())
    mailbox.put(iterate(1))
    mailbox.put(RuntimeError("boom"))
    assert [r.iteration for r in await mailbox.take()] == [1]
    with pytest.raises(RuntimeError, match="boom"):
        await mailbox.take()


@pytest.mark.timeout(180)
def test_a_stalled_reader_does_not_stall_the_job(start_server):
    with start_server() as srv, connect(srv.target) as stub:
        # Large previews every iteration: some 15 MB in all, far more than the transport
        # buffers (a few MB) can hold for a reader that does not read.
        delivery = pb.DeliveryOptions(preview_every=1, preview_size=1024)
        call = stub.StyleTransfer(request(iterations=30, delivery=delivery), timeout=120)
        assert next(call).HasField("queued")
        # Read nothing more until the job has finished on the server: a worker that waited
        # for the reader would never get there.
        finished = "styleserve_job_duration_seconds_count"
        wait_until(lambda: sample(srv, finished, outcome="finished") == 1, timeout=120)
        rest = list(call)
    result = rest[-1].result
    previews = [r for r in rest if r.HasField("preview")]
    # Stale previews were dropped while the reader stalled, the last one is there.
    assert len(previews) < result.iterations
    assert previews[-1].preview.iteration == result.iterations
    progress = [r.progress.iteration for r in rest if r.HasField("progress")]
    assert progress[-1] == result.iterations
