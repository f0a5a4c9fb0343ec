"""Registered styles: what style pictures cost a job, computed once and kept for many jobs.

RegisterStyle hands the server style pictures and the options that decide their targets; the
server computes the Gram targets of the resolutions those options ask for and, where the
instant tier exists, the style vector, and keeps them with the encoded pictures under an id
derived from the content: sha256 over the pictures, their blend, those options and the
backbone's weights, so that every replica serving the same weights names the same style the
same way. A job names the id instead of sending the pictures, or sends the same pictures and
finds them here all the same, and skips their decoding, upload and forward pass; the targets of
a resolution no job asked for before are computed by the first job that does and kept.

The cache is bounded in bytes (the pictures, the targets and the vector of each style): adding
evicts the least recently used styles, and a style larger than the whole cache is refused with
nothing stored. Only RegisterStyle adds styles: a one-off request that sent its pictures must
not evict the styles callers registered. Jobs run in worker threads, so every change happens
under one lock; targets are computed outside it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from styleserve.options import STYLE_FIELDS, Limits, StyleOptions

from styleserve_server import inputs
from styleserve_server.engine import Grams, StyleKey
from styleserve_server.metrics import Metrics

__all__ = ["StyleCache", "StyleCacheOff", "StyleEntry", "StyleTooLarge", "UnknownStyle", "style_id"]

# Bumped when the targets a style's inputs give change meaning, so that old ids stop matching.
_ID_VERSION = 1

T = TypeVar("T", Grams, np.ndarray)


class StyleCacheOff(Exception):
    """This server was started with no room for registered styles."""

    def __init__(self) -> None:
        super().__init__(
            "style registration is off on this server (style_cache_bytes 0): send the style "
            "pictures with each request, or use a server that reports style_cache.max_bytes"
        )


class UnknownStyle(Exception):
    """A job names a style_id this server does not hold."""

    def __init__(self, style_id: str) -> None:
        super().__init__(
            f"style_id: this server does not hold {style_id} (evicted, or registered with "
            "another replica): register it again with RegisterStyle (the same pictures and "
            "options give the same id) or send the style pictures"
        )


class StyleTooLarge(Exception):
    """A style needs more bytes than the whole cache holds."""

    def __init__(self, needed: int, max_bytes: int) -> None:
        super().__init__(
            f"the style needs {needed} bytes but this server's style cache holds at most "
            f"{max_bytes} (style_cache_bytes): register fewer or smaller style pictures, or "
            "send them with each request"
        )


def style_id(pictures: Sequence[bytes], options: StyleOptions, weights_sha256: str) -> str:
    """The id of ``pictures`` with ``options``' blend and style options on the backbone whose
    weights have ``weights_sha256``: the same on every server with those weights."""
    blend = options.style_blend or (1.0,) * len(pictures)
    # Blends with the same shares ((1, 1) and (2, 2)) give the same targets, hence one id.
    total = float(sum(blend))
    spec: dict[str, Any] = {name: getattr(options, name) for name in STYLE_FIELDS}
    spec.update(version=_ID_VERSION, weights=weights_sha256, shares=[w / total for w in blend])
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for picture in pictures:
        digest.update(hashlib.sha256(picture).digest())
    return f"sty_{digest.hexdigest()}"


def _nbytes(value: Grams | np.ndarray) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return sum(t.numel() * t.element_size() for t in value.values())


class StyleEntry:
    """One registered style: its registration, and the targets and vector kept so far (an
    ``engine.style.PreparedStyle``)."""

    def __init__(self, style_id: str, registration: inputs.CheckedStyle, cache: StyleCache) -> None:
        self.style_id = style_id
        self.registration = registration
        self._cache = cache
        # StyleKey -> Grams, and "vector" -> the feed-forward vector; guarded by the cache.
        self._values: dict[Hashable, Any] = {}
        self._evicted = False

    @property
    def count(self) -> int:
        return len(self.registration.pictures)

    @property
    def nbytes(self) -> int:
        """Bytes the style holds: its encoded pictures and what is kept of its targets."""
        with self._cache.lock:
            return self._held_bytes()

    def _held_bytes(self) -> int:
        pictures = sum(len(p) for p in self.registration.pictures)
        return pictures + sum(_nbytes(v) for v in self._values.values())

    def pictures(self) -> list[Image.Image]:
        limits = self._cache.limits
        return [
            inputs.decode(f"styles[{i}]", data, limits)
            for i, data in enumerate(self.registration.pictures)
        ]

    def grams(self, key: StyleKey, compute: Callable[[Sequence[Image.Image]], Grams]) -> Grams:
        return self._cache.keep(self, key, lambda: compute(self.pictures()))

    def vector(self, compute: Callable[[Sequence[Image.Image]], np.ndarray]) -> np.ndarray:
        return self._cache.keep(self, "vector", lambda: compute(self.pictures()))


class StyleCache:
    """The registered styles of one server, at most ``max_bytes`` of them (0: none)."""

    def __init__(self, max_bytes: int, limits: Limits, metrics: Metrics) -> None:
        self.max_bytes = max_bytes
        self.limits = limits
        self.lock = threading.Lock()
        self._metrics = metrics
        self._entries: collections.OrderedDict[str, StyleEntry] = collections.OrderedDict()
        self._used = 0

    def info(self) -> tuple[int, int, int]:
        """(max_bytes, used bytes, styles held)."""
        with self.lock:
            return self.max_bytes, self._used, len(self._entries)

    def check_on(self) -> None:
        """Raises StyleCacheOff when this server keeps no styles."""
        if not self.max_bytes:
            raise StyleCacheOff

    def get(self, style_id: str) -> StyleEntry:
        """The style a job names by ``style_id``. Raises StyleCacheOff or UnknownStyle."""
        self.check_on()
        entry = self._lookup(style_id, "style_id")
        if entry is None:
            raise UnknownStyle(style_id)
        return entry

    def find(
        self, pictures: Sequence[bytes], options: StyleOptions, weights_sha256: str
    ) -> StyleEntry | None:
        """The registered style a job sending ``pictures`` with ``options`` asks for, if held."""
        if not self.max_bytes:
            return None
        return self._lookup(style_id(pictures, options, weights_sha256), "pictures")

    def _lookup(self, style_id: str, lookup: str) -> StyleEntry | None:
        with self.lock:
            entry = self._entries.get(style_id)
            if entry is not None:
                self._entries.move_to_end(style_id)
        metrics = self._metrics
        counter = metrics.style_cache_misses if entry is None else metrics.style_cache_hits
        counter.labels(lookup).inc()
        return entry

    def check_room(self, registration: inputs.CheckedStyle, targets_nbytes: int) -> None:
        """Raises StyleTooLarge when ``registration`` with targets of ``targets_nbytes`` (known
        from its options) could never fit: checked before any of them is computed, so that
        what a registration computes stays within the cache."""
        self.check_on()
        needed = sum(len(p) for p in registration.pictures) + targets_nbytes
        if needed > self.max_bytes:
            raise StyleTooLarge(needed, self.max_bytes)

    def register(
        self,
        registration: inputs.CheckedStyle,
        weights_sha256: str,
        prepare: Callable[[StyleEntry], None],
    ) -> StyleEntry:
        """The held style of ``registration``, after ``prepare`` has had it keep what its
        options ask for (a style registered before keeps what it had and gains what is new).
        Raises StyleCacheOff, or StyleTooLarge with nothing stored."""
        self.check_on()
        key = style_id(registration.pictures, registration.options, weights_sha256)
        with self.lock:
            held = self._entries.get(key)
            if held is not None:
                self._entries.move_to_end(key)
        if held is not None:
            prepare(held)
            with self.lock:
                if not held._evicted:
                    return held
            # Evicted while it was prepared (other styles were added meanwhile): anew.
        entry = StyleEntry(key, registration, self)
        with self.lock:
            self._fits(entry)  # before the work: the pictures alone may be too many bytes
        prepare(entry)
        with self.lock:
            held = self._entries.get(key)
            if held is not None:  # registered meanwhile by another call
                return held
            self._fits(entry)
            self._entries[key] = entry
            self._used += entry._held_bytes()
            self._evict(keep=entry)
        return entry

    def keep(self, entry: StyleEntry, key: Hashable, make: Callable[[], T]) -> T:
        """``entry``'s value for ``key``: the kept one, else ``make()``, kept where it fits
        (the least recently used other styles evicted to make room)."""
        with self.lock:
            found: T | None = entry._values.get(key)
        if found is not None:
            return found
        value = make()
        size = _nbytes(value)
        with self.lock:
            found = entry._values.get(key)
            if found is not None:  # another job computed it meanwhile
                return found
            held = self._entries.get(entry.style_id) is entry
            if entry._evicted or (held and entry._held_bytes() + size > self.max_bytes):
                return value  # used by this job only
            entry._values[key] = value
            if held:
                self._used += size
                self._entries.move_to_end(entry.style_id)
                self._evict(keep=entry)
        return value

    def _fits(self, entry: StyleEntry) -> None:
        needed = entry._held_bytes()
        if needed > self.max_bytes:
            raise StyleTooLarge(needed, self.max_bytes)

    def _evict(self, keep: StyleEntry) -> None:
        """Evicts the least recently used styles other than ``keep`` (the most recent, and
        never larger than the cache) until the rest fits; under the lock."""
        while self._used > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            assert evicted is not keep
            self._used -= evicted._held_bytes()
            evicted._evicted = True
            # Jobs using it keep the targets they hold; new ones are no longer kept.
            evicted._values.clear()
            self._metrics.style_cache_evictions.inc()
        self._metrics.style_cache_changed(self._used, len(self._entries))
