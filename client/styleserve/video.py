"""Video containers on the client's side: clips in as upright RGB frames, stylised frames out.

The server sees a clip's frames as pictures and never parses a container, so everything that
is about files lives here: decoding (any codec the FFmpeg in PyAV's wheel has), the frame
rate, the rotation a phone records as a display matrix, the audio track, and writing the
result with the same rate, rotation and audio (its packets copied, never re-encoded). Bad
input fails here, before any call, with a ``VideoError`` naming what is wrong, and the output
is written under a temporary name and renamed at the end, so that a failure or Ctrl-C never
leaves a half-written clip under the output's name.

PyAV is the ``video`` extra's: it is imported on first use, so that a client installed
without the extra still imports styleserve, and a missing one says how to install it.
"""

from __future__ import annotations

import importlib
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from PIL import Image

from styleserve.errors import VideoError
from styleserve.info import ServerLimits
from styleserve.pictures import published_mode

if TYPE_CHECKING:
    import av.container

__all__ = [
    "INSTALL_HINT",
    "VideoClip",
    "VideoInfo",
    "VideoWriter",
    "encoder_for",
    "load_av",
    "open_video",
]

INSTALL_HINT = "pip install 'styleserve[video]'"
# Video encoders by preference: H.264 plays everywhere; MPEG-4 part 2 is in every FFmpeg
# build, so a wheel without an H.264 encoder still writes something any player opens.
_ENCODERS = ("libx264", "h264", "libopenh264", "mpeg4")
# WebM holds VP8/VP9/AV1 only.
_WEBM_ENCODERS = ("libvpx-vp9", "libvpx", "libsvtav1")
# How far short of its header's duration a clip's streams may end (the last packet's own
# duration is not always stored) before the file is taken for cut off.
_CUT_OFF_SECONDS = 0.25
# Stylised frames are detailed: x264's default quality (crf 23) smears brush strokes.
_ENCODER_OPTIONS = {"libx264": {"crf": "18"}}
# A constant frame rate's timestamps still jitter by rounding (29.97 fps in milliseconds is
# 33, 33, 34, ...): a frame interval may be this far from the mean, plus one tick.
_RATE_TOLERANCE = 0.02
# PNG effort for frames sent to the server: the fastest level is 3-5x quicker than PIL's
# default and at most a few percent larger, and a clip has many frames.
_FRAME_PNG_LEVEL = 1
# Counterclockwise turns of 90 degrees -> the PIL transpose that makes them.
_TURNS = {
    1: Image.Transpose.ROTATE_90,
    2: Image.Transpose.ROTATE_180,
    3: Image.Transpose.ROTATE_270,
}


def load_av() -> ModuleType:
    """PyAV, or a ModuleNotFoundError that says how to install it."""
    try:
        return importlib.import_module("av")
    except ModuleNotFoundError as error:
        if error.name != "av":
            raise
        raise ModuleNotFoundError(
            f"video needs PyAV, which the video extra installs: {INSTALL_HINT}", name="av"
        ) from error


@dataclass(frozen=True)
class VideoInfo:
    """What a clip is, read from its container and its packets (no frame decoded but the
    first). ``width`` and ``height`` are as displayed, after ``rotation``: the degrees
    counterclockwise that the display matrix turns the stored frames (FFmpeg's convention;
    a portrait phone clip is usually -90)."""

    path: Path
    width: int
    height: int
    frame_count: int
    fps: Fraction
    rotation: int
    codec: str
    # The audio track copied into the output; None: the clip has none.
    audio_codec: str | None
    # When the first frame shows, in seconds (a clip cut from a longer one may start late).
    start_seconds: float

    @property
    def duration_seconds(self) -> float:
        return self.frame_count / float(self.fps)

    def check_limits(self, limits: ServerLimits) -> None:
        """Raises VideoError when the server cannot take these frames: a frame rate over
        ``max_video_fps`` or frames over its picture limits. The frame count is not a limit:
        a clip longer than ``max_video_frames`` is sent in chunks."""
        if limits.max_video_fps and self.fps > limits.max_video_fps:
            raise _error(
                self.path,
                "limits",
                f"its frame rate of {float(self.fps):g} fps is over the server's limit of"
                f" {limits.max_video_fps} fps; convert it first, e.g."
                f" ffmpeg -i IN -vf fps={limits.max_video_fps} OUT",
            )
        pixels = self.width * self.height
        if limits.max_input_pixels and pixels > limits.max_input_pixels:
            raise _error(
                self.path,
                "limits",
                f"its frames of {self.width}x{self.height} ({pixels / 1e6:g} Mpx) are over the"
                f" server's limit of {limits.max_input_pixels / 1e6:g} Mpx per picture;"
                " scale it down first, e.g. ffmpeg -i IN -vf scale=-2:1080 OUT",
            )


def _error(path: Path, reason: str, what: str) -> VideoError:
    return VideoError(f"{path}: {what}", reason=reason)


def _turns(rotation: int) -> int:
    return (rotation // 90) % 4


class VideoClip:
    """An opened clip: its ``info`` and its frames, decoded on demand from the start."""

    def __init__(self, info: VideoInfo) -> None:
        self.info = info

    def frames(self) -> Iterator[Image.Image]:
        """The frames in order, upright RGB. Raises VideoError when one does not decode or
        fewer come than the container holds (a truncated file)."""
        av = load_av()
        info = self.info
        count = 0
        turns = _turns(info.rotation)
        try:
            with av.open(str(info.path)) as container:
                for frame in container.decode(video=0):
                    image = frame.to_image()
                    yield image.transpose(_TURNS[turns]) if turns else image
                    count += 1
        except av.FFmpegError as err:
            raise _error(info.path, "unreadable", f"frame {count} does not decode ({err})") from err
        if count < info.frame_count:
            raise _error(
                info.path,
                "unreadable",
                f"only {count} of its {info.frame_count} frames decode: the file is corrupt or"
                " cut off",
            )

    @staticmethod
    def encode_frame(image: Image.Image) -> bytes:
        """A frame as the PNG sent to the server (lossless, and quick to make)."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=_FRAME_PNG_LEVEL)
        return buffer.getvalue()


def open_video(path: str | os.PathLike[str]) -> VideoClip:
    """Opens and checks the clip at ``path``: raises VideoError naming what is wrong for a
    missing, empty, corrupt or truncated file, an audio-only file, an unknown codec, a clip
    without frames, a variable frame rate or a rotation that is not a multiple of 90
    degrees."""
    av = load_av()
    path = Path(path)
    if path.is_dir():
        raise _error(path, "unreadable", "a folder, not a clip; name a video file")
    if not path.is_file():
        raise _error(path, "unreadable", "no such file")
    if path.stat().st_size == 0:
        raise _error(path, "no_frames", "the file is empty (0 bytes)")
    try:
        with av.open(str(path)) as container:
            return VideoClip(_probe(av, path, container))
    except av.EOFError as err:
        raise _error(path, "no_frames", "the file ends before its first frame") from err
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise _error(
            path, "unreadable", f"not a video FFmpeg can read, or cut off ({err})"
        ) from err


def _probe(av: ModuleType, path: Path, container: av.container.InputContainer) -> VideoInfo:
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
        raise _error(path, "no_video", f"it has no video stream (it holds {kinds})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise _error(
            path,
            "codec",
            f"its video codec is unknown to PyAV {av.__version__}'s FFmpeg; convert it first,"
            " e.g. ffmpeg -i IN -c:v libx264 OUT.mp4",
        )
    codec = stream.codec_context.name
    audio = container.streams.audio[0] if container.streams.audio else None
    times: list[int] = []
    ends = 0.0  # seconds: where the last packet of any stream ends
    for packet in container.demux():
        if packet.pts is None or packet.time_base is None:
            continue
        if packet.stream is stream:
            times.append(packet.pts)
        ends = max(ends, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    times.sort()
    if not times:
        raise _error(path, "no_frames", "its video stream has no frames")
    # An index that promises more frames than the packets hold: the data was cut off.
    if stream.frames and len(times) < stream.frames:
        raise _error(
            path,
            "unreadable",
            f"only {len(times)} of its {stream.frames} frames are in the file: it is cut off",
        )
    time_base = stream.time_base or Fraction(1, 1)
    fps = _frame_rate(path, stream, times, time_base)
    # Matroska and WebM count no frames, but their header says where the clip ends (its
    # duration, counted from 0 there): every stream ending well before that is a file cut off.
    # A packet's own duration is not always stored, so a frame's worth is allowed beside.
    promised = (container.duration or 0) / 1e6
    short = promised - ends - 1 / float(fps)
    if "matroska" in container.format.name and promised and short > _CUT_OFF_SECONDS:
        raise _error(
            path,
            "unreadable",
            f"its streams end at {ends:.2f} s of the {promised:.2f} s its header says: it is"
            " cut off",
        )
    container.seek(0)
    first = next(container.decode(stream), None)
    if first is None:
        raise _error(path, "no_frames", "none of its frames decodes")
    rotation = _rotation(path, first.rotation, stream.metadata)
    width, height = first.width, first.height
    if _turns(rotation) % 2:
        width, height = height, width
    return VideoInfo(
        path=path,
        width=width,
        height=height,
        frame_count=len(times),
        fps=fps,
        rotation=rotation,
        codec=str(codec),
        audio_codec=None
        if audio is None or audio.codec_context is None
        else audio.codec_context.name,
        start_seconds=float(times[0] * time_base),
    )


def _frame_rate(path: Path, stream: Any, times: list[int], time_base: Fraction) -> Fraction:
    """The clip's constant frame rate; raises VideoError for a variable one, which would
    play at the wrong speed once written at one rate."""
    steps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    if steps:
        mean = sum(steps) / len(steps)
        if mean <= 0 or any(abs(s - mean) > 1 + _RATE_TOLERANCE * mean for s in steps):
            seconds = [float(s * time_base) * 1000 for s in steps]
            raise _error(
                path,
                "variable_frame_rate",
                f"its frame rate varies (frames {min(seconds):.1f} to {max(seconds):.1f} ms"
                " apart); convert it to a constant rate first, e.g. ffmpeg -i IN -vf fps=30 OUT",
            )
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if rate:
        return Fraction(rate)
    if not steps:
        raise _error(path, "no_frames", "it has one frame and no frame rate")
    return Fraction(len(steps), times[-1] - times[0]) / time_base


def _rotation(path: Path, displayed: int, metadata: dict[str, str]) -> int:
    """The rotation of the display matrix, or of an older muxer's "rotate" tag (clockwise,
    the opposite sense), normalised to -90, 0, 90 or 180."""
    rotation = displayed
    if not rotation and metadata.get("rotate", "").lstrip("-").isdigit():
        rotation = -int(metadata["rotate"])
    if rotation % 90:
        raise _error(path, "rotation", f"its rotation of {rotation} degrees is not a quarter turn")
    return {0: 0, 1: 90, 2: 180, 3: -90}[_turns(rotation)]


def encoder_for(path: str | os.PathLike[str]) -> str:
    """The video encoder to write ``path`` with, from those in PyAV's FFmpeg: H.264 where it
    has one, MPEG-4 otherwise (VP9 or VP8 for .webm)."""
    av = load_av()
    webm = Path(path).suffix.lower() == ".webm"
    for name in _WEBM_ENCODERS if webm else _ENCODERS:
        if name not in av.codecs_available:
            continue
        try:
            av.Codec(name, "w")
        except av.FFmpegError:  # a decoder of that name, no encoder
            continue
        return name
    raise VideoError(f"{path}: PyAV's FFmpeg has no encoder for it", reason="codec")


class VideoWriter:
    """Writes stylised frames as a clip like ``source``: its frame rate, rotation and start,
    and its audio packets copied unchanged. Use as a context manager: the clip appears under
    ``path`` only when the block ends without an error; before that it is a hidden temporary
    file in the same folder, removed on failure."""

    def __init__(
        self, path: str | os.PathLike[str], source: VideoInfo, *, encoder: str | None = None
    ) -> None:
        self._av = load_av()
        self.path = Path(path)
        self.source = source
        self.encoder = encoder or encoder_for(self.path)
        self.frames = 0
        fd, temp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=f".part{self.path.suffix}"
        )
        os.close(fd)
        self._temp = Path(temp)
        self._container: av.container.OutputContainer | None = None
        self._audio_input: av.container.InputContainer | None = None
        self._stream: Any = None

    def write(self, image: Image.Image) -> None:
        """Adds the next frame (upright, as the server sent it back)."""
        if self._stream is None:
            self._start(image.size)
        assert self._container is not None
        width, height = self._size
        image = image.convert("RGB")
        if image.size != (width, height):
            # 4:2:0 chroma needs even sides: an odd one loses its last row or column.
            image = image.crop((0, 0, width, height))
        turns = _turns(-self.source.rotation)
        stored = image.transpose(_TURNS[turns]) if turns else image
        frame = self._av.VideoFrame.from_image(stored)
        frame.pts = self._first_pts + self.frames
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def check(self) -> None:
        """Writes a blank frame and the source's first audio packet as the clip will be
        written, in memory: raises VideoError (reason "codec") where the container takes
        them not, before any frame is stylised rather than after the last."""
        av = self._av
        try:
            with av.open(io.BytesIO(), "w", format=_format_of(self.path)) as container:
                audio_input = av.open(str(self.source.path)) if self.source.audio_codec else None
                try:
                    stream, audio = self._streams(container, (16, 16), audio_input)
                    container.mux(stream.encode(av.VideoFrame(16, 16, "yuv420p")))
                    container.mux(stream.encode(None))
                    if audio_input is not None:
                        self._copy_audio(audio_input, audio, container, first_only=True)
                finally:
                    if audio_input is not None:
                        audio_input.close()
        except (av.FFmpegError, ValueError) as err:
            raise self._unwritable(err) from err

    def _start(self, size: tuple[int, int]) -> None:
        av = self._av
        self._container = av.open(str(self._temp), "w", format=_format_of(self.path))
        self._audio_input = av.open(str(self.source.path)) if self.source.audio_codec else None
        self._stream, self._audio = self._streams(self._container, size, self._audio_input)
        self._size = _even(size)
        self._first_pts = round(self.source.start_seconds * self.source.fps)

    def _streams(
        self,
        container: av.container.OutputContainer,
        size: tuple[int, int],
        audio_input: av.container.InputContainer | None,
    ) -> tuple[Any, Any]:
        """The video stream (for pictures of ``size``) and the audio stream copied from
        ``audio_input`` (None: no audio) of ``container``."""
        width, height = _even(size)
        source = self.source
        # Any: add_stream's type is the union of every kind of stream.
        stream: Any = container.add_stream(
            self.encoder, rate=source.fps, options=_ENCODER_OPTIONS.get(self.encoder, {})
        )
        stream.pix_fmt = "yuv420p"
        if _turns(source.rotation) % 2:
            width, height = height, width
        stream.width, stream.height = width, height
        stream.time_base = 1 / source.fps
        if source.rotation:
            stream.set_display_rotation(source.rotation)
        audio = None
        if audio_input is not None:
            audio = container.add_stream_from_template(audio_input.streams.audio[0])
        return stream, audio

    def _copy_audio(
        self,
        audio_input: av.container.InputContainer,
        audio: Any,
        container: av.container.OutputContainer,
        *,
        first_only: bool = False,
    ) -> None:
        for packet in audio_input.demux(audio_input.streams.audio[0]):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            packet.stream = audio
            container.mux(packet)
            if first_only:
                return

    def _unwritable(self, err: Exception) -> VideoError:
        return VideoError(
            f"{self.path}: cannot be written with {self.encoder} and the source's"
            f" {self.source.audio_codec} audio ({err}); try another container (.mkv takes"
            " nearly any codec)",
            reason="codec",
        )

    def _finish(self) -> None:
        if self._container is None:
            raise VideoError(f"{self.path}: no frames were written", reason="no_frames")
        self._container.mux(self._stream.encode(None))
        if self._audio_input is not None:
            self._copy_audio(self._audio_input, self._audio, self._container)

    def _close(self) -> None:
        for container in (self._container, self._audio_input):
            if container is not None:
                container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            try:
                if exc_type is None:
                    self._finish()
            finally:
                self._close()
            if exc_type is None:
                os.chmod(self._temp, published_mode(self.path))
                os.replace(self._temp, self.path)
        except self._av.FFmpegError as err:
            raise self._unwritable(err) from err
        finally:
            self._temp.unlink(missing_ok=True)


def _even(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` with even sides, as 4:2:0 chroma needs: an odd one loses a row or column."""
    width, height = size
    return width - width % 2, height - height % 2


def _format_of(path: Path) -> str | None:
    """The muxer for ``path`` by its suffix (None: FFmpeg guesses from the name, which fails
    for the temporary name's own suffix less often than not, so it is named here)."""
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}.get(
        path.suffix.lower()
    )
