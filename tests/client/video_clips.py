"""Tiny clips for the video tests, made with PyAV so that no test depends on sample files:
a few frames of a few dozen pixels, with a tone as the audio track and a display rotation, and
broken ones (cut off, unknown codec, variable frame rate, audio only, empty)."""

from __future__ import annotations

import array
import math
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

# A marker in the stored frames' top-left corner shows where rotation took it.
MARKER = (255, 0, 0)
MARKER_SIDE = 8


def frame_picture(index: int, size: tuple[int, int]) -> Image.Image:
    """Frame ``index``: a shade that moves with the index, and the marker top left."""
    picture = Image.linear_gradient("L").resize(size).point(lambda v: (v + 23 * index) % 256)
    picture = Image.merge(
        "RGB", (picture, picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT), picture)
    )
    picture.paste(MARKER, (0, 0, MARKER_SIDE, MARKER_SIDE))
    return picture


def make_clip(
    path: Path,
    *,
    frames: int = 8,
    size: tuple[int, int] = (48, 32),
    fps: int = 10,
    rotation: int = 0,
    audio: bool = True,
    audio_codec: str = "aac",
    audio_layout: str = "mono",
    times_ms: list[int] | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """A clip of ``frames`` frames at ``fps`` (or at ``times_ms``, a variable rate), stored at
    ``size`` with a display ``rotation`` and, with ``audio``, a tone as long (in
    ``audio_codec``, ``audio_layout``)."""
    with av.open(str(path), "w", options=options or {}) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        if times_ms is not None:
            video.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            video.set_display_rotation(rotation)
        # Every stream before the first packet: the header is written with it.
        sound = _audio_stream(out, audio_codec, audio_layout) if audio else None
        for index in range(frames if times_ms is None else len(times_ms)):
            frame = av.VideoFrame.from_image(frame_picture(index, size))
            if times_ms is None:
                frame.pts = index
            else:
                frame.pts, frame.time_base = times_ms[index], Fraction(1, 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            _tone(out, sound, frames / fps)
    return path


_RATE = 8000


def _audio_stream(
    out: av.container.OutputContainer, codec: str = "aac", layout: str = "mono"
) -> av.AudioStream:
    stream = out.add_stream(codec, rate=_RATE)
    stream.layout = layout
    return stream


def _tone(
    out: av.container.OutputContainer, stream: av.AudioStream, seconds: float, rate: int = _RATE
) -> None:
    samples = int(rate * seconds)
    channels = stream.layout.nb_channels
    frame = av.AudioFrame(format="s16", layout=stream.layout.name, samples=samples)
    # Interleaved: each sample once per channel.
    wave = array.array(
        "h", (int(3000 * math.sin(t // channels / 4)) for t in range(samples * channels))
    )
    frame.planes[0].update(wave.tobytes())
    frame.sample_rate, frame.pts = rate, 0
    out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        _tone(out, _audio_stream(out), 1.0)
    return path


def audio_packets(path: Path) -> list[bytes]:
    """The audio track's packets, as stored."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [bytes(p) for p in container.demux(stream) if p.dts is not None]


def stored_rotation(path: Path) -> int:
    """The display rotation the first frame of ``path`` carries."""
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).rotation
