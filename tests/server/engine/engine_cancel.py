"""A cancel event that turns set at a known look: a call cancelled while the engine is under
way, at a known point of its work, without timing anything."""

from __future__ import annotations

import threading


class SetAfter(threading.Event):
    """A cancel event that its checker finds set from its ``checks``-th look on."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.looks, self._checks = 0, checks

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks >= self._checks
