"""Video end to end: the SDK (sync and asyncio) and the ``styleserve video`` command against real
servers on the tiny test network, one server or two behind one address, and a cancelled clip
freeing every slot it held."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from styleserve import (
    AsyncClient,
    Client,
    InvalidArgument,
    StylizedFrame,
    VideoError,
    VideoProgress,
    VideoResult,
)
from styleserve.video import open_video
from styleserve.video_jobs import video_job

from tests.client.client_helpers import NEXT_JOB_TIMEOUT, QUICK_JOB, cli_command
from tests.client.video_clips import audio_packets, make_clip, stored_rotation
from tests.fixtures_server import RunningServer

# The instant tier at a few dozen pixels: a frame in milliseconds on the tiny network.
INSTANT = {"preset": "instant", "size": 32}


def _requests(server: RunningServer, method: str = "StylizeVideo", code: str = "OK") -> int:
    value = server.server.metrics.registry.get_sample_value(
        "styleserve_requests_total", {"method": method, "code": code}
    )
    return int(value or 0)


def _running(server: RunningServer) -> int:
    return int(server.server.metrics.registry.get_sample_value("styleserve_running_jobs") or 0)


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _frames(events: list[object]) -> list[StylizedFrame]:
    return [e for e in events if isinstance(e, StylizedFrame)]


def test_a_clip_comes_back_frame_by_frame_in_order(server, style, tmp_path: Path):
    clip = make_clip(tmp_path / "in.mp4", frames=8, rotation=-90)
    with Client(server.target, timeout=120) as client:
        events = list(client.stylize_video(clip, [style], request_id="clip-9", **INSTANT))
    frames = _frames(events)
    assert [f.index for f in frames] == list(range(8))
    # Upright: the stored 48x32 turned a quarter, then fitted in 32 px.
    assert {f.image().size for f in frames} == {(21, 32)}
    progress = [e for e in events if isinstance(e, VideoProgress)]
    assert progress[-1].frames_done == progress[-1].frame_count == 8
    result = events[-1]
    assert isinstance(result, VideoResult) and result.frames == 8
    (chunk,) = result.chunks
    assert chunk.options.method == "feed_forward" and chunk.options.temporal_weight > 0
    # Each chunk's call is logged and receipted under the clip's request id and its number.
    assert chunk.receipt.request_id == "clip-9.0"


def test_the_command_writes_the_clip_with_its_rate_rotation_and_audio(
    server, style, tmp_path: Path
):
    source = make_clip(tmp_path / "in.mp4", frames=10, fps=15, rotation=90)
    output = tmp_path / "out.mp4"
    done = subprocess.run(
        cli_command(
            "video",
            str(source),
            str(style),
            "-o",
            str(output),
            "--server",
            server.target,
            "--preset",
            "instant",
            "--size",
            "32",
            "--json",
            "-q",
        ),  # fmt: skip
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["frames"], summary["fps"], summary["rotation"]) == (10, 15.0, 90)
    assert summary["audio_codec"] == "aac" and len(summary["chunks"]) == 1
    info = open_video(output).info
    assert (info.frame_count, info.fps, info.rotation) == (10, Fraction(15), 90)
    assert stored_rotation(output) == 90
    assert audio_packets(output) == audio_packets(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4", "style.jpg"]


def test_the_command_refuses_a_bad_clip_before_any_call(server, style, tmp_path: Path):
    source = make_clip(tmp_path / "vfr.mkv", times_ms=[0, 40, 80, 200, 240], audio=False)
    output = tmp_path / "out.mp4"
    done = subprocess.run(
        cli_command("video", str(source), str(style), "-o", str(output), "--server", server.target),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2  # bad usage: the clip is checked here, as the flags are
    assert "styleserve video: error: " in done.stderr and "frame rate varies" in done.stderr
    assert not output.exists() and _requests(server) == 0


@pytest.mark.parametrize(
    ("source", "audio_codec", "output"),
    [("pcm.mkv", "pcm_s16le", "out.mp4"), ("aac.mp4", "aac", "out.webm")],
)
def test_an_output_that_cannot_hold_the_sources_audio_is_refused_before_any_call(
    server, style, tmp_path: Path, source, audio_codec, output
):
    # Found after the last frame, it threw the whole job away (mp4 and stereo PCM), or was a
    # traceback (WebM and AAC).
    clip = make_clip(tmp_path / source, audio_codec=audio_codec, audio_layout="stereo")
    command = cli_command("video", str(clip), str(style), "-o", str(tmp_path / output))
    done = subprocess.run(
        [*command, "--server", server.target, *("--preset", "instant")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot be written with" in done.stderr and f"{audio_codec} audio" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source, "style.jpg"])
    assert _requests(server) == 0


def test_a_bad_clip_raises_video_error_from_the_sdk(server, style, tmp_path: Path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    with Client(server.target) as client, pytest.raises(VideoError) as failure:
        client.stylize_video(path, [style], **INSTANT)
    assert failure.value.reason == "unreadable"
    assert _requests(server) == 0


def test_a_time_budget_for_a_video_is_refused_by_the_sdk_before_any_call(server, style):
    frames = [Image.new("RGB", (32, 24), (i * 20, 40, 80)) for i in range(3)]
    with Client(server.target) as client, pytest.raises(InvalidArgument) as failure:
        client.stylize_video(frames, [style], fps=10, time_budget_seconds=5, **INSTANT)
    assert failure.value.details.startswith("time_budget_seconds: a video has no best picture")
    assert _requests(server, code="INVALID_ARGUMENT") == 0


def test_a_style_picture_larger_than_a_request_takes_is_uploaded_for_a_clip(start_server, tmp_path):
    noise = np.random.default_rng(3).integers(0, 256, (220, 220, 3), np.uint8)
    style = tmp_path / "style.png"
    Image.fromarray(noise).save(style, compress_level=0)
    limits = {"max_request_bytes": 128 * 1024, "max_image_bytes": 64 * 1024}
    assert style.stat().st_size > limits["max_image_bytes"]
    frames = [Image.new("RGB", (32, 24), (i * 20, 40, 80)) for i in range(3)]
    with start_server(**limits) as srv, Client(srv.target) as client:
        events = list(client.stylize_video(frames, [style], fps=10, **INSTANT))
        assert len(_frames(events)) == 3
        assert _requests(srv, "UploadPicture") == 1


def test_a_clips_job_names_the_servers_output_quality_which_its_joins_are_made_at(
    start_server, style
):
    with start_server(output_quality=57) as srv, Client(srv.target) as client:
        server = client.info()
    # Said in the job, so the server encodes the frames at the quality the joiner re-encodes
    # a join's cross-faded frames at (``Joiner``), whatever the server's setting.
    assert video_job([style], None, None, {}, server).delivery.output_quality == 57
    asked = video_job([style], None, None, {"output_quality": 80}, server)
    assert asked.delivery.output_quality == 80


@pytest.fixture
def two_servers(
    start_server: Callable[..., contextlib.AbstractContextManager[RunningServer]],
) -> Iterator[list[RunningServer]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(start_server(job_slots=1, queue_size=4)) for _ in range(2)]


def test_chunks_go_to_both_servers_and_join_into_every_frame_once_in_order(
    two_servers: list[RunningServer], style, tmp_path: Path
):
    clip = make_clip(tmp_path / "in.mp4", frames=40, audio=False)
    # Independent frames (temporal weight 0): a frame of the joined clip is the one the tiny
    # network makes of that input alone, wherever its chunk ran, except where two are blended.
    job = {**INSTANT, "temporal_weight": 0.0}
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in two_servers)
    with Client(target, load_balancing="round_robin", timeout=120) as client:
        events = list(client.stylize_video(clip, [style], chunk_frames=16, **job))
    result = events[-1]
    assert isinstance(result, VideoResult) and len(result.chunks) == 3
    # A server counts a call just after its last message: wait for the count.
    assert _wait_for(lambda: sum(_requests(s) for s in two_servers) == 3)
    assert all(_requests(s) >= 1 for s in two_servers), [_requests(s) for s in two_servers]
    with Client(two_servers[0].target, timeout=120) as alone:
        reference = _frames(list(alone.stylize_video(clip, [style], concurrency=1, **job)))
    frames = _frames(events)
    assert [f.index for f in frames] == list(range(40))
    shared = {i for a, b in zip(result.chunks, result.chunks[1:], strict=False)
              for i in range(b.chunk.start, a.chunk.stop)}  # fmt: skip
    assert shared
    for frame, alone_frame in zip(frames, reference, strict=True):
        if frame.index not in shared:
            assert frame.image().tobytes() == alone_frame.image().tobytes(), frame.index


def test_cancelling_a_clip_frees_every_slot(
    start_server: Callable[..., contextlib.AbstractContextManager[RunningServer]],
    content,
    style,
    tmp_path: Path,
):
    clip = make_clip(tmp_path / "in.mp4", frames=40, audio=False)
    with start_server(job_slots=2, queue_size=0) as srv, Client(srv.target) as client:
        # Thousands of iterations a frame: the chunks hold both slots for as long as they run.
        events = client.stylize_video(
            clip, [style], size=64, iterations=5000, chunk_frames=24, concurrency=2
        )
        next(events)  # the first progress: the calls are under way
        assert _wait_for(lambda: _running(srv) == 2), "both chunks should be running"
        events.close()
        assert _wait_for(lambda: _running(srv) == 0), "a cancelled chunk kept its slot"
        # Both slots take work again at once (a queue of 0 refuses a job with no free slot).
        for _ in range(2):
            client.stylize(content, [style], timeout=NEXT_JOB_TIMEOUT, **QUICK_JOB)
        assert _requests(srv, code="CANCELLED") == 2


async def test_the_async_client_makes_the_clip_the_sync_client_makes(
    two_servers: list[RunningServer], style, tmp_path: Path
):
    clip = make_clip(tmp_path / "in.mp4", frames=40, audio=False)
    job = {**INSTANT, "temporal_weight": 0.0, "chunk_frames": 16}
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in two_servers)
    async with AsyncClient(target, load_balancing="round_robin", timeout=120) as client:
        async with contextlib.aclosing(client.stylize_video(clip, [style], **job)) as run:
            events = [event async for event in run]
    result = events[-1]
    assert isinstance(result, VideoResult) and len(result.chunks) == 3
    assert _wait_for(lambda: sum(_requests(s) for s in two_servers) == 3)
    assert all(_requests(s) >= 1 for s in two_servers), [_requests(s) for s in two_servers]
    with Client(target, load_balancing="round_robin", timeout=120) as sync:
        reference = _frames(list(sync.stylize_video(clip, [style], **job)))
    frames = _frames(events)
    assert [f.index for f in frames] == list(range(40))
    assert [f.data for f in frames] == [f.data for f in reference]
    progress = [e for e in events if isinstance(e, VideoProgress)]
    assert progress[-1].frames_done == progress[-1].frame_count == 40


async def test_a_bad_clip_raises_video_error_from_the_async_client(server, style, tmp_path: Path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    async with AsyncClient(server.target) as client:
        with pytest.raises(VideoError) as failure:
            await anext(client.stylize_video(path, [style], **INSTANT))
    assert failure.value.reason == "unreadable"
    assert _requests(server) == 0


async def test_leaving_an_async_clip_early_frees_every_slot(
    start_server: Callable[..., contextlib.AbstractContextManager[RunningServer]],
    content,
    style,
    tmp_path: Path,
):
    clip = make_clip(tmp_path / "in.mp4", frames=40, audio=False)
    with start_server(job_slots=2, queue_size=0) as srv:
        async with AsyncClient(srv.target) as client:
            video = client.stylize_video(
                clip, [style], size=64, iterations=5000, chunk_frames=24, concurrency=2
            )
            async with contextlib.aclosing(video) as events:
                await anext(events)  # the first progress: the calls are under way
                assert await asyncio.to_thread(_wait_for, lambda: _running(srv) == 2)
            assert await asyncio.to_thread(_wait_for, lambda: _running(srv) == 0)
            for _ in range(2):
                await client.stylize(content, [style], timeout=NEXT_JOB_TIMEOUT, **QUICK_JOB)
    assert _requests(srv, code="CANCELLED") == 2
