"""Admission by memory, through real calls on a loopback server: a job (or a style's
registration) that could never fit the budget is refused before it queues with the size that
would fit, one that fits alone waits for the memory the running jobs hold, and GetServerInfo
tells the budget."""

from __future__ import annotations

import re

import grpc
import pytest
import torch
from PIL import Image
from styleserve import Client, ResourceExhausted
from styleserve.options import resolve
from styleserve.plan import fit_longest_side, plan_climb
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_server.engine import (
    TEMPORAL_BYTES,
    predicted_peak_bytes,
    registration_peak_bytes,
)
from styleserve_server.inputs import with_pictures
from styleserve_server.memory import _device_bytes
from styleserve_server.settings import Settings

from tests.server.service_helpers import (
    connect,
    encoded,
    next_event,
    picture,
    request,
    rpc_error,
    sample,
    start_endless,
)

pytestmark = pytest.mark.timeout(180)

BUDGET = 2**30


def peak(side: int, styles: int = 1, shape: tuple[int, int] = (48, 32)) -> int:
    """What the server predicts for the test requests' job at size ``side`` (their content is
    48 x 32) with ``styles`` style pictures (40 x 40); ``shape``: the aspect ratio it sizes
    the output at (the server looks for a size that fits at the asked output's)."""
    options = resolve(size=side, iterations=3, precision="float32")
    stages = plan_climb(fit_longest_side(shape, side), options.scales, options.iterations)
    sizes = [(s.width, s.height) for s in stages]
    work = predicted_peak_bytes(sizes, options, "float32", 2**20, styles=styles)
    return with_pictures([48 * 32, *[40 * 40] * styles], work)


def test_a_job_that_can_never_fit_is_refused_with_the_size_that_would(start_server):
    assert peak(512) < BUDGET < peak(1024)
    with start_server(memory_budget_bytes=BUDGET) as srv, connect(srv.target) as stub:
        error = rpc_error(stub.StyleTransfer(request(size=1024), timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "memory_budget_bytes" in error.details()
        found = re.search(r"ask for size <= (\d+)", error.details())
        assert found, error.details()
        fits = int(found.group(1))
        assert peak(fits) <= BUDGET < peak(fits + 1)
        # The size it names is admitted.
        ok = stub.StyleTransfer(request(size=fits, iterations=1), timeout=120)
        assert list(ok)[-1].HasField("result")


def video_call(side: int, **options: float) -> list[pb.StylizeVideoRequest]:
    """A two-frame StylizeVideo call whose frames are the test requests' content (48 x 32)."""
    job = request(size=side, **options)
    frames = [pb.VideoFrame(index=i, image=job.content) for i in range(2)]
    job.ClearField("content")
    start = pb.VideoStart(job=job, frame_count=2, frames_per_second=24)
    return [pb.StylizeVideoRequest(start=start), *(pb.StylizeVideoRequest(frame=f) for f in frames)]


def test_a_consistent_videos_temporal_state_counts_against_the_budget(start_server):
    # Room for a 512 px frame's job, not for its flows and carried frame beside it.
    budget = peak(512) + 2**22
    width, height = fit_longest_side((48, 32), 512)
    assert peak(512) + TEMPORAL_BYTES * width * height > budget
    with start_server(memory_budget_bytes=budget) as srv, connect(srv.target) as stub:
        error = rpc_error(stub.StylizeVideo(iter(video_call(512)), timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        found = re.search(r"ask for size <= (\d+)", error.details())
        assert found, error.details()
        fits = int(found.group(1))
        frame = fit_longest_side((width, height), fits)
        assert peak(fits, shape=(width, height)) + TEMPORAL_BYTES * frame[0] * frame[1] <= budget
        # Frames on their own hold no temporal state: the same call fits.
        alone = stub.StylizeVideo(iter(video_call(512, temporal_weight=0.0)), timeout=120)
        assert list(alone)[-1].HasField("result")


def test_a_video_counts_the_frame_it_holds_while_it_decodes_the_next(start_server):
    # 40 MP frames (small as JPEG files) for 64 px: one decoding peaks at 17 bytes a pixel
    # beside the 4 of the frame before it, 0.84 GB; a picture's job of one of them at 0.68 GB.
    gradient = Image.linear_gradient("L").resize((7302, 5476)).convert("RGB")
    big = encoded(gradient, "JPEG")
    with start_server(memory_budget_bytes=int(0.76e9)) as srv, connect(srv.target) as stub:
        ok = stub.StyleTransfer(request(big, size=64, iterations=1), timeout=120)
        assert list(ok)[-1].HasField("result")
        calls = video_call(64, temporal_weight=0.0)
        for message in calls[1:]:
            message.frame.image.data = big
        error = rpc_error(stub.StylizeVideo(iter(calls), timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert "send smaller pictures" in error.details()


def test_a_job_sized_by_width_and_height_is_told_the_width_and_height_that_fit(start_server):
    with start_server(memory_budget_bytes=BUDGET) as srv, connect(srv.target) as stub:
        error = rpc_error(stub.StyleTransfer(request(width=1500, height=1000), timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        found = re.search(r"ask for width and height <= (\d+)x(\d+)", error.details())
        assert found, error.details()
        width, height = (int(side) for side in found.groups())
        assert 512 < width < 1500 and abs(width / height - 1.5) < 0.01
        ok = stub.StyleTransfer(request(width=width, height=height, iterations=1), timeout=120)
        assert list(ok)[-1].HasField("result")


def test_every_style_picture_counts_against_the_budget(start_server):
    # Room for the job with one style picture at 8192 px, not with eight: each is held as
    # float32 RGB at the stage's size while the targets are computed (at smaller sizes the
    # evaluations' memory is the larger).
    budget = peak(8192) + 2**26
    assert peak(8192, styles=8) > budget
    eight = [encoded(picture((40, 40)), "JPEG")] * 8
    with start_server(memory_budget_bytes=budget) as srv, connect(srv.target) as stub:
        error = rpc_error(stub.StyleTransfer(request(styles=eight, size=8192), timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        found = re.search(r"ask for size <= (\d+)", error.details())
        assert found, error.details()
        fits = int(found.group(1))
        assert peak(fits, styles=8) <= budget < peak(fits + 1, styles=8)


def test_the_pictures_a_job_decodes_count_against_the_budget(start_server):
    # Nine pictures of 40 MP (the default max_input_pixels), small as JPEG files, for an
    # output of 64 px: decoded, they would hold 1.4 GB whatever the output's size.
    gradient = Image.linear_gradient("L").resize((7302, 5476)).convert("RGB")
    big = encoded(gradient, "JPEG")
    assert len(big) < 2**20
    with start_server(memory_budget_bytes=BUDGET) as srv, connect(srv.target) as stub:
        error = rpc_error(stub.StyleTransfer(request(big, [big] * 8, size=64), timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert "send smaller pictures" in error.details()
        assert sample(srv, "styleserve_running_jobs") == 0
        # One of them fits, and runs.
        ok = stub.StyleTransfer(request(big, size=64, iterations=1), timeout=120)
        assert list(ok)[-1].HasField("result")


def test_a_registered_styles_pictures_count_against_the_budget(start_server):
    # Three 40 MP pictures, registered (4 x 3 x 40 MP held, one decoding at 17 B a pixel:
    # 1.0 GB, which fits), then named by a job with a 40 MP content: the job may decode them
    # too (regions, colour preservation, targets not kept for its size), so they count as
    # pictures it is sent do, and with its content they cannot fit (1.16 GB).
    gradient = Image.linear_gradient("L").resize((7302, 5476)).convert("RGB")
    big = encoded(gradient, "JPEG")
    assert with_pictures([7302 * 5476] * 3) < BUDGET < with_pictures([7302 * 5476] * 4)
    styles = [pb.StylePicture(image=pb.Image(data=big))] * 3
    options = pb.StyleOptions(size=64, precision=pb.PRECISION_FLOAT32)
    with start_server(memory_budget_bytes=BUDGET) as srv, connect(srv.target) as stub:
        registration = pb.RegisterStyleRequest(styles=styles, options=options)
        style_id = stub.RegisterStyle(registration, timeout=120).style_id
        job = request(big, [], size=64, iterations=1)
        job.style_id = style_id
        error = rpc_error(stub.StyleTransfer(job, timeout=60))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert "send smaller pictures" in error.details()
        # With a small content, it fits and runs.
        job.content.data = encoded()
        assert list(stub.StyleTransfer(job, timeout=120))[-1].HasField("result")


def registration_peak(side: int, pictures: int) -> int:
    """What the server predicts for registering ``pictures`` style pictures at size ``side``."""
    options = resolve(size=side, precision="float32")
    stages = plan_climb((side, side), options.scales, options.iterations)
    sizes = [(s.width, s.height) for s in stages]
    work = registration_peak_bytes(sizes, options, "float32", 2**20, styles=pictures)
    return with_pictures([96 * 96] * pictures, work)


def register(stub, side: int, pictures: int) -> pb.RegisterStyleResponse:
    """Registers ``pictures`` square style pictures (small files, enlarged by the server) at
    size ``side``."""
    data = encoded(picture((96, 96)))
    styles = [pb.StylePicture(image=pb.Image(data=data)) for _ in range(pictures)]
    options = pb.StyleOptions(size=side, precision=pb.PRECISION_FLOAT32)
    return stub.RegisterStyle(pb.RegisterStyleRequest(styles=styles, options=options), timeout=120)


def test_a_registration_that_can_never_fit_is_refused_with_the_size_that_would(start_server):
    assert registration_peak(512, 4) < BUDGET < registration_peak(4096, 4)
    with start_server(memory_budget_bytes=BUDGET) as srv, connect(srv.target) as stub:
        with pytest.raises(grpc.RpcError) as refused:
            register(stub, 4096, 4)
        error = refused.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        found = re.search(r"ask for size <= (\d+)", error.details())
        assert found, error.details()
        fits = int(found.group(1))
        assert registration_peak(fits, 4) <= BUDGET < registration_peak(fits + 1, 4)
        assert sample(srv, "styleserve_running_jobs") == 0
        assert register(stub, fits, 4).style_id.startswith("sty_")


def test_a_job_that_fits_alone_waits_for_the_memory_of_the_running_one(start_server):
    # Two slots, but room for one job of this size at a time.
    budget = int(1.5 * peak(512))
    with start_server(memory_budget_bytes=budget, job_slots=2) as srv, connect(srv.target) as stub:
        first = start_endless(stub, size=512)
        second = stub.StyleTransfer(request(size=512, iterations=1), timeout=120)
        assert next_event(second, "queued").queued.position == 0
        # It really waits: queued behind the memory, with a slot free.
        assert sample(srv, "styleserve_queue_depth") == 1
        assert sample(srv, "styleserve_running_jobs") == 1
        first.cancel()
        assert next_event(second, "started").HasField("started")
        assert list(second)[-1].HasField("result")


def test_server_info_tells_the_budget_set_or_measured(start_server):
    with start_server(memory_budget_bytes=BUDGET) as srv, connect(srv.target) as stub:
        assert stub.GetServerInfo(pb.GetServerInfoRequest()).limits.memory_budget_bytes == BUDGET
    with start_server() as srv, connect(srv.target) as stub:
        info = stub.GetServerInfo(pb.GetServerInfoRequest())
        measured = info.limits.memory_budget_bytes
        # A share of the device's memory, less what the server holds.
        assert 2**30 < measured < 0.8 * _device_bytes(torch.device(info.device))
        start_endless(stub).cancel()
    defaults = Settings()
    stores = defaults.upload_store_bytes + defaults.style_cache_bytes + defaults.job_store_bytes
    no_stores = dict(upload_store_bytes=0, style_cache_bytes=0, job_store_bytes=0)
    with start_server(**no_stores) as srv, connect(srv.target) as stub:
        unshared = stub.GetServerInfo(pb.GetServerInfoRequest()).limits.memory_budget_bytes
    # On CPU the stores' caps come off the budget (what the process holds moves a little
    # between the two starts).
    assert abs(unshared - measured - stores) < 256 * 2**20


def test_the_sdk_does_not_send_a_job_that_can_never_fit_again(start_server, tmp_path):
    content = tmp_path / "content.png"
    content.write_bytes(request().content.data)
    with start_server(memory_budget_bytes=BUDGET) as srv, Client(srv.target) as client:
        with pytest.raises(ResourceExhausted, match=r"ask for size <= \d+"):
            client.stylize(content, content, size=1024)
        # The SDK retries RESOURCE_EXHAUSTED (a full queue), but not a refusal for good.
        refused = {"method": "StyleTransfer", "code": "RESOURCE_EXHAUSTED"}
        assert sample(srv, "styleserve_requests_total", **refused) == 1


def test_stores_that_leave_the_jobs_no_memory_are_named_at_start_up(start_server, caplog):
    with start_server(upload_store_bytes=2**50) as srv, connect(srv.target) as stub:
        assert stub.GetServerInfo(pb.GetServerInfoRequest()).limits.memory_budget_bytes == 0
    warned = [r.getMessage() for r in caplog.records if "measured memory budget" in r.getMessage()]
    assert len(warned) == 1 and "upload_store_bytes" in warned[0]
