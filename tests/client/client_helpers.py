"""Helpers shared by the client tests: small encoded pictures and the ``styleserve`` command
line."""

import io
import sys

from PIL import Image

# Size of the `content` fixture's picture: wider than tall.
CONTENT_SIZE = (64, 32)


def png(size: tuple[int, int] = (16, 16), color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def cli_command(*args: str) -> list[str]:
    """The ``styleserve`` command with ``args``, run by this interpreter."""
    return [sys.executable, "-m", "styleserve.cli", *args]


# A job far longer than any test waits (thousands of iterations at 256 px): if cancelling it
# did not free its slot, the next job would hit its deadline instead of running.
LONG_JOB = {"size": 256, "iterations": 5000, "preset": "default"}
# A quick job on the tiny test network.
QUICK_JOB = {"size": 32, "iterations": 3}
# Deadline for a job that must get the slot a cancelled job held.
NEXT_JOB_TIMEOUT = 60.0
