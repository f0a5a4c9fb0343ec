"""The CLI's live progress bar: a job's events rendered on one tqdm line.

Kept apart from the argument handling so that the CLI reads as "parse, call, show", and so
that the wording of the bar (queue position, loss, speed, time left) lives in one place.
"""

from __future__ import annotations

import datetime
from types import TracebackType
from typing import IO

from tqdm import tqdm

from styleserve.events import Event, Progress, Queued, Started

__all__ = ["ProgressBar"]

_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"


class ProgressBar:
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

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # On failure the bar is wiped so that the error is the one line left.
        self._bar.leave = exc_type is None
        self.close()
