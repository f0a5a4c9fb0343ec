"""Pictures in and out of the client: what callers may pass, and how results reach disk.

The service takes encoded bytes, or the id of bytes uploaded before; callers have paths, bytes,
PIL images or such an upload (``UploadedPicture``). Encoded input is sent as it is (the server
checks it, so a bad file fails with the server's message), and results are written atomically
so that a crash or Ctrl-C never leaves a half-written picture behind.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from styleserve.v1 import style_transfer_pb2 as pb

__all__ = [
    "FORMAT_SUFFIXES",
    "PICTURE_TYPES",
    "SUFFIX_FORMATS",
    "Picture",
    "UploadedPicture",
    "encode_picture",
    "picture_message",
    "published_mode",
    "save_encoded",
    "write_atomically",
]

# The output format of each picture suffix; the files of a folder that count as pictures
# (what the server decodes). A format's first suffix is the one its outputs get.
SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
# The suffix an output gets for each output format.
FORMAT_SUFFIXES = {
    f: next(s for s, g in SUFFIX_FORMATS.items() if g == f) for f in SUFFIX_FORMATS.values()
}
# How much of a long path an error message shows (its end).
_SHOWN_PATH = 120
# How each output format's files begin (WebP: RIFF, a size, then WEBP).
_SIGNATURES = {"png": (0, b"\x89PNG"), "jpeg": (0, b"\xff\xd8"), "webp": (8, b"WEBP")}


@dataclass(frozen=True)
class UploadedPicture:
    """A picture the server holds, by the id ``upload_picture`` returned: it stands wherever a
    picture goes (content, styles, init_image, regions) without its bytes being sent again,
    until the server lets it expire or evicts it (NOT_FOUND: upload it again)."""

    upload_id: str


Picture = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | UploadedPicture
"""A picture argument: a file path, encoded bytes (PNG, JPEG or WebP), a PIL image, or an
upload on the server."""
# The classes of ``Picture`` for isinstance checks, e.g. one picture versus a list of them.
PICTURE_TYPES = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, UploadedPicture)


# The modes PNG stores as they are (Pillow's PNG writer); other modes are converted first.
_PNG_MODES = frozenset({"1", "L", "LA", "I;16", "P", "RGB", "RGBA"})


def _named(path: Path) -> str:
    """``path`` for an error message: its end where it is long (the file's name)."""
    text = str(path)
    return repr(text) if len(text) <= _SHOWN_PATH else f"'...{text[-_SHOWN_PATH:]}'"


def encode_picture(picture: Picture, *, what: str = "picture") -> bytes:
    """Encoded bytes of ``picture``; PIL images are encoded losslessly as PNG (in RGB, or RGBA
    with transparency, when PNG has no mode of theirs: CMYK, YCbCr, LAB, HSV, 32-bit, PA)."""
    if isinstance(picture, (bytes, bytearray, memoryview)):
        return bytes(picture)
    if isinstance(picture, Image.Image):
        if picture.mode not in _PNG_MODES:
            picture = picture.convert("RGBA" if picture.has_transparency_data else "RGB")
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(picture, (str, os.PathLike)):
        path = Path(picture)
        try:
            return path.read_bytes()
        except OSError as err:
            raise OSError(f"cannot read the {what} {_named(path)}: {err.strerror or err}") from err
    raise TypeError(
        f"the {what} must be a path, encoded bytes or a PIL image, not {type(picture).__name__}"
    )


def picture_message(picture: Picture, *, what: str = "picture") -> pb.Image:
    """The wire message of ``picture``: the upload it names, or its encoded bytes."""
    if isinstance(picture, UploadedPicture):
        return pb.Image(upload_id=picture.upload_id)
    return pb.Image(data=encode_picture(picture, what=what))


def published_mode(target: Path) -> int:
    """The mode for a temporary file about to replace ``target``: mkstemp makes it private
    (0600), but a result is for sharing like any other file, so it takes the mode of the file
    it replaces, or 0644 for a new one."""
    return stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o644


def save_encoded(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write the encoded picture ``data`` to ``path`` (``write_atomically``), whose suffix, if
    it names a picture format, must be the picture's own: ValueError otherwise (the bytes are
    written as they are, so a .jpg file would hold a PNG)."""
    wanted = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    made = next((f for f, (at, sign) in _SIGNATURES.items() if data[at:].startswith(sign)), None)
    if wanted is not None and made is not None and made != wanted:
        raise ValueError(
            f"{path}: the picture is {made.upper()}; name a {FORMAT_SUFFIXES[made]} file, or"
            " convert it with .image().save(path)"
        )
    return write_atomically(path, data)


def write_atomically(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, so that readers
    see the old file or the whole new one, never a part."""
    target = Path(path)
    if not target.parent.is_dir():
        # Said of the folder: mkstemp's error would name the temporary file.
        raise FileNotFoundError(f"{target.parent}: no such folder to write {target.name} in")
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            os.fchmod(file.fileno(), published_mode(target))
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
