"""Pictures in and out of the client: what callers may pass, and how results reach disk.

The service takes encoded bytes; callers have paths, bytes or PIL images. Encoded input is sent
as it is (the server checks it, so a bad file fails with the server's message), and results are
written atomically so that a crash or Ctrl-C never leaves a half-written picture behind.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from pathlib import Path

from PIL import Image

__all__ = ["PICTURE_TYPES", "Picture", "encode_picture", "write_atomically"]

Picture = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image
"""A picture argument: a file path, encoded bytes (PNG, JPEG or WebP) or a PIL image."""
# The classes of ``Picture`` for isinstance checks, e.g. one picture versus a list of them.
PICTURE_TYPES = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)


def encode_picture(picture: Picture, *, what: str = "picture") -> bytes:
    """Encoded bytes of ``picture``; PIL images are encoded losslessly as PNG."""
    if isinstance(picture, (bytes, bytearray, memoryview)):
        return bytes(picture)
    if isinstance(picture, Image.Image):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(picture, (str, os.PathLike)):
        path = Path(picture)
        try:
            return path.read_bytes()
        except OSError as err:
            raise OSError(f"cannot read the {what} {str(path)!r}: {err.strerror or err}") from err
    raise TypeError(
        f"the {what} must be a path, encoded bytes or a PIL image, not {type(picture).__name__}"
    )


def write_atomically(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, so that readers
    see the old file or the whole new one, never a part."""
    target = Path(path)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            # mkstemp makes the file private (0600); a picture is for sharing like any other.
            mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o644
            os.fchmod(file.fileno(), mode)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
