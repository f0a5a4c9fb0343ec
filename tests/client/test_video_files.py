"""Clips in and out of the client (styleserve.video): a round trip keeps the frame count, the
frame rate, the rotation and the audio; every kind of bad input gets a VideoError naming what
is wrong; nothing half-written is left under the output's name."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image
from styleserve.errors import InvalidArgument, StyleserveError, VideoError
from styleserve.info import ServerLimits
from styleserve.video import INSTALL_HINT, VideoWriter, encoder_for, load_av, open_video

from tests.client.video_clips import (
    MARKER_SIDE,
    audio_packets,
    make_audio_only,
    make_clip,
    stored_rotation,
)


def _is_marker(pixel: tuple[int, ...]) -> bool:
    red, green, blue = pixel[:3]
    return red > 200 and green < 60 and blue < 60


def _marker_corner(image: Image.Image) -> str:
    """Which corner of ``image`` holds the red marker."""
    width, height = image.size
    inset = MARKER_SIDE // 2
    corners = {
        "top left": (inset, inset),
        "top right": (width - 1 - inset, inset),
        "bottom left": (inset, height - 1 - inset),
        "bottom right": (width - 1 - inset, height - 1 - inset),
    }
    (corner,) = [name for name, xy in corners.items() if _is_marker(image.getpixel(xy))]
    return corner


def test_a_clip_is_read_upright_with_its_rate_rotation_duration_and_audio(tmp_path: Path):
    # A phone held upright: frames stored landscape, displayed turned a quarter clockwise.
    path = make_clip(tmp_path / "in.mp4", frames=8, size=(48, 32), fps=10, rotation=-90)
    clip = open_video(path)
    info = clip.info
    assert (info.frame_count, info.fps, info.rotation) == (8, Fraction(10), -90)
    assert (info.width, info.height) == (32, 48)
    assert info.duration_seconds == pytest.approx(0.8)
    assert (info.codec, info.audio_codec) == ("h264", "aac")
    frames = list(clip.frames())
    assert len(frames) == 8 and {f.size for f in frames} == {(32, 48)}
    assert all(f.mode == "RGB" for f in frames)
    # A quarter turn clockwise takes the stored top-left corner to the top right.
    assert _marker_corner(frames[0]) == "top right"


def test_writing_keeps_frame_count_rate_rotation_and_the_audio_packets(tmp_path: Path):
    source = make_clip(tmp_path / "in.mp4", frames=8, fps=12, rotation=90)
    clip = open_video(source)
    output = tmp_path / "out.mp4"
    with VideoWriter(output, clip.info) as writer:
        for frame in clip.frames():
            writer.write(frame)
    assert writer.frames == 8
    written = open_video(output)
    info = written.info
    assert (info.frame_count, info.fps, info.rotation) == (8, Fraction(12), 90)
    assert (info.width, info.height) == (clip.info.width, clip.info.height)
    assert info.audio_codec == "aac"
    # Copied, not re-encoded: the very same packets.
    assert audio_packets(output) == audio_packets(source)
    assert stored_rotation(output) == 90
    upright = list(written.frames())
    assert _marker_corner(upright[0]) == _marker_corner(next(clip.frames()))


def test_a_clip_without_audio_or_rotation_round_trips(tmp_path: Path):
    source = make_clip(tmp_path / "in.mkv", frames=5, fps=25, audio=False)
    clip = open_video(source)
    assert (clip.info.audio_codec, clip.info.rotation) == (None, 0)
    output = tmp_path / "out.mkv"
    with VideoWriter(output, clip.info) as writer:
        for frame in clip.frames():
            writer.write(frame)
    info = open_video(output).info
    assert (info.frame_count, info.fps, info.audio_codec) == (5, Fraction(25), None)


def test_odd_sides_lose_their_last_row_or_column(tmp_path: Path):
    clip = open_video(make_clip(tmp_path / "in.mp4", frames=3, audio=False))
    output = tmp_path / "out.mp4"
    with VideoWriter(output, clip.info) as writer:
        for _ in range(3):
            writer.write(Image.new("RGB", (33, 21), (0, 90, 200)))
    info = open_video(output).info
    assert (info.width, info.height, info.frame_count) == (32, 20, 3)


def test_a_failure_leaves_nothing_under_the_output_name(tmp_path: Path):
    clip = open_video(make_clip(tmp_path / "in.mp4", frames=4))
    output = tmp_path / "out" / "clip.mp4"
    output.parent.mkdir()
    with pytest.raises(RuntimeError), VideoWriter(output, clip.info) as writer:
        for frame in clip.frames():
            writer.write(frame)
            raise RuntimeError("stylising failed half way")
    assert list(output.parent.iterdir()) == []


def test_an_existing_output_is_replaced_only_at_the_end(tmp_path: Path):
    clip = open_video(make_clip(tmp_path / "in.mp4", frames=3))
    output = tmp_path / "out.mp4"
    output.write_bytes(b"the previous result")
    with VideoWriter(output, clip.info) as writer:
        for frame in clip.frames():
            writer.write(frame)
            assert output.read_bytes() == b"the previous result"
    assert open_video(output).info.frame_count == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_no_frames_written_is_an_error_and_leaves_nothing(tmp_path: Path):
    clip = open_video(make_clip(tmp_path / "in.mp4", frames=3))
    with pytest.raises(VideoError) as failure, VideoWriter(tmp_path / "out.mp4", clip.info):
        pass
    assert failure.value.reason == "no_frames"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_the_encoder_is_h264_where_the_wheel_has_it():
    av = load_av()
    assert encoder_for("out.mp4") == ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    assert encoder_for("out.webm").startswith(("libvpx", "libsvtav1"))


# --- bad input --------------------------------------------------------------------------------


def _refused(path: Path) -> VideoError:
    with pytest.raises(VideoError) as failure:
        open_video(path)
    error = failure.value
    # One of the SDK's errors, caught like any other refused input.
    assert isinstance(error, InvalidArgument) and isinstance(error, StyleserveError)
    assert str(path) in error.details
    return error


def test_a_corrupt_file_is_refused(tmp_path: Path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"not a video at all " * 200)
    error = _refused(path)
    assert error.reason == "unreadable" and "cut off" in error.details


def test_a_file_cut_off_before_its_index_is_refused(tmp_path: Path):
    whole = make_clip(tmp_path / "whole.mp4", frames=12).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(whole[: len(whole) * 6 // 10])
    assert _refused(path).reason == "unreadable"


def test_a_file_cut_off_in_its_frames_is_refused(tmp_path: Path):
    # The index first (faststart): the cut loses frames the index promises.
    whole = make_clip(
        tmp_path / "whole.mp4", frames=20, options={"movflags": "faststart"}, audio=False
    ).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(whole[: len(whole) * 6 // 10])
    error = _refused(path)
    assert error.reason == "unreadable" and "of its 20 frames" in error.details


def test_a_matroska_file_cut_off_is_refused(tmp_path: Path):
    # Matroska counts no frames; its header's duration is what the cut falls short of.
    whole = make_clip(tmp_path / "whole.mkv", frames=40).read_bytes()
    path = tmp_path / "cut.mkv"
    path.write_bytes(whole[: len(whole) * 8 // 10])
    error = _refused(path)
    assert error.reason == "unreadable" and "it is cut off" in error.details
    assert open_video(tmp_path / "whole.mkv").info.frame_count == 40


@pytest.mark.parametrize(
    "clip",
    [{"times_ms": [10_000 + 100 * i for i in range(8)]}, {"fps": 2}],
    ids=["starting-at-10-s", "2-fps"],
)
def test_a_whole_matroska_file_starting_late_or_slow_is_not_taken_for_cut_off(tmp_path, clip):
    # Its header's duration counts from 0, and its last packet may not store its duration.
    path = make_clip(tmp_path / "whole.mkv", audio=False, **clip)
    assert open_video(path).info.frame_count == 8


def test_an_unknown_codec_is_refused(tmp_path: Path):
    whole = make_clip(tmp_path / "whole.mp4", frames=4).read_bytes()
    path = tmp_path / "unknown.mp4"
    path.write_bytes(whole.replace(b"avc1", b"zzz1"))
    error = _refused(path)
    assert error.reason == "codec" and "codec is unknown" in error.details


def test_a_variable_frame_rate_is_refused(tmp_path: Path):
    path = make_clip(tmp_path / "vfr.mkv", times_ms=[0, 33, 66, 150, 183, 300, 333], audio=False)
    error = _refused(path)
    assert error.reason == "variable_frame_rate" and "33.0 to 117.0 ms" in error.details


def test_a_constant_rate_with_rounded_timestamps_is_accepted(tmp_path: Path):
    # 29.97 fps in milliseconds: 33 or 34 apart.
    times = [round(i * 1001 / 30) for i in range(10)]
    path = make_clip(tmp_path / "ntsc.mkv", times_ms=times, fps=30, audio=False)
    assert open_video(path).info.frame_count == 10


@pytest.mark.parametrize("content", [b"", None], ids=["zero bytes", "header only"])
def test_a_zero_length_clip_is_refused(tmp_path: Path, content: bytes | None):
    path = tmp_path / "empty.mkv"
    if content is None:
        av = load_av()
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
            out.start_encoding()
    else:
        path.write_bytes(content)
    assert _refused(path).reason == "no_frames"


def test_an_audio_only_file_is_refused(tmp_path: Path):
    error = _refused(make_audio_only(tmp_path / "song.m4a"))
    assert error.reason == "no_video" and "holds audio" in error.details


def test_a_missing_file_is_refused(tmp_path: Path):
    assert _refused(tmp_path / "nowhere.mp4").reason == "unreadable"


def test_a_clip_over_the_servers_frame_rate_or_picture_limits_is_refused(tmp_path: Path):
    info = open_video(make_clip(tmp_path / "in.mp4", frames=3, fps=30)).info
    info.check_limits(ServerLimits(max_video_fps=30, max_input_pixels=48 * 32))
    with pytest.raises(VideoError) as fast:
        info.check_limits(ServerLimits(max_video_fps=24))
    assert fast.value.reason == "limits" and "30 fps is over the server's limit of 24" in str(
        fast.value
    )
    with pytest.raises(VideoError) as large:
        info.check_limits(ServerLimits(max_input_pixels=1000))
    assert large.value.reason == "limits" and "48x32" in str(large.value)
    # The frame count is no limit: a long clip goes in chunks.
    info.check_limits(dataclasses.replace(ServerLimits(), max_video_frames=2))


# --- without the video extra ------------------------------------------------------------------


def test_without_pyav_styleserve_imports_and_video_says_how_to_install_it(tmp_path: Path):
    code = (
        "import sys\n"
        "sys.modules['av'] = None\n"
        "import styleserve, styleserve.cli, styleserve.video\n"
        "try:\n"
        "    styleserve.video.open_video(sys.argv[1])\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "in.mp4")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert INSTALL_HINT in done.stdout, done.stdout + done.stderr
