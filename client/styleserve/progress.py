"""The CLI's live progress bar: a job's events rendered on one tqdm line.

Kept apart from the argument handling so that the CLI reads as "parse, call, show", and so
that the wording of the bar (queue position, loss, speed, time left) lives in one place.
"""

from __future__ import annotations

import datetime
import sys
from types import TracebackType
from typing import IO, TYPE_CHECKING, NoReturn

from tqdm import tqdm

from styleserve.events import Event, Progress, Queued, Started

if TYPE_CHECKING:
    from typing_extensions import Self

    from styleserve.video_jobs import VideoProgress

__all__ = ["FramesBar", "PicturesBar", "ProgressBar"]

_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"


class _Bar:
    """What the bars share: one tqdm line (``_bar``), left on screen when the command ends
    well and wiped when it fails, so that the error is the one line left."""

    _bar: tqdm[NoReturn]

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._bar.leave = exc_type is None
        self.close()


class ProgressBar(_Bar):
    """Shows where a job stands: its queue position while queued, then iteration / total,
    loss, iterations per second and the server's estimate of the time left."""

    def __init__(self, file: IO[str] | None = None, *, disable: bool | None = None) -> None:
        """``disable``: True hides the bar, None (tqdm's) shows it only on a terminal, so that
        logs and files never fill with its frames."""
        self._bar = tqdm(
            total=None,
            desc="connecting",
            unit="it",
            bar_format=_FORMAT,
            file=file,
            disable=disable,
        )

    def show(self, event: Event) -> None:
        if isinstance(event, Queued):
            ahead = f"{event.position} ahead" if event.position else "next"
            self._bar.set_description(f"queued ({ahead})")
        elif isinstance(event, Started):
            # Restarts the clock so that it/s counts optimisation, not queueing.
            self._bar.reset(total=event.total_iterations)
            self._bar.set_description(f"stylizing on {event.device}")
        elif isinstance(event, Progress):
            left = datetime.timedelta(seconds=round(event.eta_seconds))
            self._bar.set_postfix_str(f"loss {event.losses.total:.4g}, {left} left", refresh=False)
            self._bar.update(event.iteration - self._bar.n)


class PicturesBar(_Bar):
    """A folder run's one bar: pictures finished of those to do, and how many failed. Its
    jobs run at once on several servers, so a bar per job would be a screenful of them."""

    def __init__(self, total: int, *, disable: bool | None = None) -> None:
        """``disable``: as for ``ProgressBar``."""
        self._bar = tqdm(total=total, desc="stylizing", unit="picture", disable=disable)
        self._failed = 0

    def finished(self, line: str | None, *, failed: bool = False) -> None:
        """One more picture done, ``line`` saying how (above the bar: on stdout, or on stderr
        for a failure)."""
        if line is not None:
            self._bar.write(line, file=sys.stderr if failed else sys.stdout)
        if failed:
            self._failed += 1
            self._bar.set_postfix_str(f"{self._failed} failed", refresh=False)
        self._bar.update()


class FramesBar(_Bar):
    """A clip's one bar: frames stylised of the clip's, and where the chunk that last moved
    stands (its chunks run at once, on several servers)."""

    def __init__(self, total: int, *, disable: bool | None = None) -> None:
        """``disable``: as for ``ProgressBar``."""
        self._bar = tqdm(total=total, desc="stylizing", unit="frame", disable=disable)

    def show(self, event: VideoProgress) -> None:
        self._bar.set_postfix_str(
            f"chunk {event.chunk + 1}/{event.chunks}:"
            f" {event.chunk_frames_done}/{event.chunk_frame_count}",
            refresh=False,
        )
        self._bar.update(event.frames_done - self._bar.n)
