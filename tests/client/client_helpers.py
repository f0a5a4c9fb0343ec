"""Helpers shared by the client tests: small encoded pictures and the ``styleserve`` command
line."""

import fcntl
import io
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable

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


def run_on_terminal(command: list[str], timeout: float = 120) -> tuple[int, str, str]:
    """Runs ``command`` with its stderr on a pseudo-terminal, as in a user's shell (the
    progress bar shows on a terminal only): its exit status, stdout and what the terminal got."""
    controller, terminal = pty.openpty()
    # A terminal of 24 rows by 120 columns: tqdm draws nothing on one of width 0.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=terminal, text=True, timeout=timeout
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed and everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    return done.returncode, done.stdout, shown.decode(errors="replace")


def interruptible() -> None:
    """For Popen's preexec_fn: Ctrl-C (SIGINT) raises KeyboardInterrupt in the child even when
    the tests run in the background, whose children start with SIGINT ignored (Python then
    keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ctrl_c(command: list[str], ready: Callable[[], bool], waiting_for: str) -> tuple[int, str]:
    """Runs ``command``, presses Ctrl-C (SIGINT) once ``ready()`` holds (within 60 s, the
    command still running) and returns its exit status and stderr."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, f"waited in vain for {waiting_for}"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr
