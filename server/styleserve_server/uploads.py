"""Uploaded pictures: what lets a request name a picture larger than any message may carry.

A request is one gRPC message, bounded (``max_request_bytes``) so that a caller cannot make the
server hold an unbounded message; a print-size picture does not fit one. UploadPicture streams
such a picture in chunks into this store, and ``Image.upload_id`` then names it wherever a
picture goes. The store is content-addressed (the id is the bytes' SHA-256, so that the same
bytes get the same id on every replica and a second upload of them only refreshes the first),
bounded in bytes and expiring: an upload is kept ``expire_seconds`` after it was last stored or
used, and the least recently used ones make room for new ones sooner.

The bound covers the uploads in progress too: an upload's declared size is reserved from its
header on, before any of its bytes arrive, and its bytes are counted as they come, so that no
stream can make the server hold more than it declared or the store more than its bound. A
cut-off upload, one that runs past its size or one whose bytes do not match its digest stores
nothing. Uploads arrive on the event loop and jobs read them from worker threads: every change
happens under one lock.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from styleserve.options import OptionsError
from styleserve.v1 import style_transfer_pb2 as pb

from styleserve_server.metrics import Metrics

__all__ = [
    "StoreInfo",
    "StoredUpload",
    "UnknownUpload",
    "UploadCorrupt",
    "UploadStore",
    "UploadStoreBusy",
    "UploadTooLarge",
    "UploadsOff",
]

# What UploadPictureResponse.upload_id holds; anything else (of any length) is refused without
# being quoted back.
_UPLOAD_ID = re.compile(r"sha256:[0-9a-f]{64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class UploadsOff(Exception):
    """This server was started with no room for uploads."""

    def __init__(self) -> None:
        super().__init__(
            "uploads are off on this server (upload_store_bytes 0): send the picture's bytes "
            "in the request, at most limits.max_image_bytes, or use a server that reports "
            "uploads.max_bytes"
        )


class UnknownUpload(Exception):
    """A request names an upload this server does not hold."""

    def __init__(self, field: str, upload_id: str) -> None:
        self.field = field
        super().__init__(
            f"{field}: this server does not hold the upload {upload_id} (expired, evicted for "
            "newer uploads, or uploaded to another replica): upload the picture again with "
            "UploadPicture (the same bytes get the same id) and resend the request"
        )


class UploadTooLarge(Exception):
    """An upload is larger than one upload may be on this server, whenever it is sent."""


class UploadStoreBusy(Exception):
    """Uploads in progress have reserved the store's room: this one fits once they end."""


class UploadCorrupt(Exception):
    """The bytes of an upload do not match the digest its header declared."""

    def __init__(self, declared: str, received: str) -> None:
        super().__init__(
            f"header.sha256: the bytes received hash to {received}, not to the declared "
            f"{declared}: nothing was stored; upload the picture again"
        )


@dataclass(frozen=True)
class StoreInfo:
    """What GetServerInfo reports of the store (``pb.UploadStoreInfo``'s fields)."""

    max_bytes: int
    used_bytes: int
    expire_seconds: int
    max_upload_bytes: int


@dataclass(frozen=True)
class StoredUpload:
    """An upload the store holds."""

    upload_id: str
    size_bytes: int
    expire_seconds: int


@dataclass
class _Entry:
    data: bytes
    used_at: float


class UploadStore:
    """The uploads of one server: at most ``max_bytes`` of them (0: uploads are off), each at
    most ``max_upload_bytes``, kept ``expire_seconds`` after their last store or use."""

    def __init__(
        self,
        max_bytes: int,
        max_upload_bytes: int,
        expire_seconds: int,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        # One upload can never be larger than the whole store.
        self.max_upload_bytes = min(max_upload_bytes, max_bytes)
        self.expire_seconds = expire_seconds
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        # By digest, least recently stored or used first.
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._stored = 0
        # Bytes declared by the uploads in progress.
        self._reserved = 0

    def info(self) -> StoreInfo:
        with self._lock:
            self._expire()
            used = self._stored + self._reserved
        return StoreInfo(self.max_bytes, used, self.expire_seconds, self.max_upload_bytes)

    def check_on(self) -> None:
        """Raises UploadsOff when this server keeps no uploads."""
        if not self.max_bytes:
            raise UploadsOff

    def get(self, field: str, upload_id: str) -> bytes:
        """The bytes of the upload a request names by ``upload_id`` at ``field``, its expiry
        restarted. Raises OptionsError for no upload id, UploadsOff, or UnknownUpload."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise OptionsError(
                f"{field}.upload_id",
                "is not an upload id (sha256: and 64 lowercase hex digits): send the one "
                "UploadPicture returned",
            )
        self.check_on()
        digest = upload_id.removeprefix("sha256:")
        with self._lock:
            self._expire()
            entry = self._entries.get(digest)
            if entry is not None:
                entry.used_at = self._clock()
                self._entries.move_to_end(digest)
        if entry is None:
            raise UnknownUpload(field, upload_id)
        return entry.data

    async def receive(self, messages: AsyncIterator[pb.UploadPictureRequest]) -> StoredUpload:
        """Stores the picture of one UploadPicture stream: its header, then its chunks. Raises
        OptionsError for a stream that is no upload (no header first, a second header, bytes
        past the declared size, fewer than it), UploadsOff, UploadTooLarge or UploadCorrupt;
        nothing is stored then."""
        self.check_on()
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != "header":
            raise OptionsError(
                "header",
                "send an UploadHeader (the picture's sha256 and size_bytes) as the first "
                "message, then its bytes in chunk messages",
            )
        upload = self._reserve(first.header)
        try:
            async for message in messages:
                if message.WhichOneof("part") == "header":
                    raise OptionsError(
                        "header", "comes once, first: every later message is a chunk"
                    )
                if len(message.chunk) > upload.size - upload.received:
                    # Refused before it is kept or hashed: the stream is read no further.
                    raise OptionsError(
                        "chunk",
                        f"runs past header.size_bytes ({upload.size}): send exactly the "
                        "declared bytes; nothing was stored",
                    )
                # Hashed off the event loop: a chunk may be as large as a message.
                await asyncio.to_thread(upload.add, message.chunk)
            # Joined off the event loop too: the picture may be hundreds of megabytes.
            return await asyncio.to_thread(self._store, upload)
        finally:
            upload.discard()

    def _reserve(self, header: pb.UploadHeader) -> _Upload:
        """Room for the upload ``header`` declares, evicting the least recently used uploads
        when that is what it takes."""
        if not _DIGEST.fullmatch(header.sha256):
            raise OptionsError("header.sha256", "is not a SHA-256 digest (64 lowercase hex digits)")
        size = header.size_bytes
        if not size:
            raise OptionsError("header.size_bytes", "is 0: an upload holds a picture's bytes")
        if size > self.max_upload_bytes:
            raise UploadTooLarge(
                f"header.size_bytes: the picture is {size} bytes, more than the "
                f"{self.max_upload_bytes} one upload may hold on this server "
                "(uploads.max_upload_bytes): send a smaller file (re-encoded as JPEG or WebP, "
                "or downscaled)"
            )
        with self._lock:
            self._expire()
            # Refused before any eviction: evicting cannot free the room reserved by uploads
            # in progress, and stored uploads would be lost for nothing.
            if self._reserved + size > self.max_bytes:
                raise UploadStoreBusy(
                    f"header.size_bytes: the upload store is busy with {self._reserved} bytes "
                    f"of uploads in progress and has no room for {size} more (it holds "
                    f"{self.max_bytes}): retry when they have finished"
                )
            while self._stored + self._reserved + size > self.max_bytes:
                self._evict()
            self._reserved += size
            self._changed()
        return _Upload(self, header.sha256, size)

    def _release(self, upload: _Upload) -> None:
        """Gives back the room ``upload`` reserved, once (it may end stored and cancelled in a
        race: the store's thread and the call's end both let go); under the lock."""
        if not upload.released:
            upload.released = True
            self._reserved -= upload.size
            self._changed()

    def _store(self, upload: _Upload) -> StoredUpload:
        """Keeps a received ``upload`` once its bytes are all there and match its digest."""
        data = upload.data()
        with self._lock:
            self._release(upload)
            entry = self._entries.get(upload.digest)
            if entry is None:
                entry = _Entry(data, self._clock())
                self._entries[upload.digest] = entry
                self._stored += len(data)
            else:
                entry.used_at = self._clock()
                self._entries.move_to_end(upload.digest)
            self._changed()
        return StoredUpload(f"sha256:{upload.digest}", upload.size, self.expire_seconds)

    def _expire(self) -> None:
        """Drops the uploads unused for ``expire_seconds``; under the lock. The oldest come
        first, so the scan stops at the first one still fresh."""
        deadline = self._clock() - self.expire_seconds
        while self._entries:
            entry = next(iter(self._entries.values()))
            if entry.used_at > deadline:
                break
            self._evict("expired")

    def _evict(self, reason: str = "room") -> None:
        """Drops the least recently used upload; under the lock. Jobs that read it keep their
        bytes."""
        _, entry = self._entries.popitem(last=False)
        self._stored -= len(entry.data)
        self._metrics.upload_evictions.labels(reason).inc()
        self._changed()

    def _changed(self) -> None:
        self._metrics.uploads_changed(self._stored + self._reserved, len(self._entries))


class _Upload:
    """One upload in progress: its bytes counted and hashed as they arrive, its reserved room
    given back when it ends without being stored."""

    def __init__(self, store: UploadStore, digest: str, size: int) -> None:
        self.digest = digest
        self.size = size
        self.received = 0
        self.released = False
        self._store = store
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._chunks.append(chunk)
        self.received += len(chunk)

    def data(self) -> bytes:
        """The whole picture, once every byte came and they match the digest."""
        if self.received < self.size:
            raise OptionsError(
                "header.size_bytes",
                f"the stream ended after {self.received} of the declared {self.size} bytes: "
                "nothing was stored; upload the picture again",
            )
        received = self._hash.hexdigest()
        if received != self.digest:
            raise UploadCorrupt(self.digest, received)
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    def discard(self) -> None:
        """Lets go of the bytes received, and of the room reserved unless they were stored."""
        self._chunks.clear()
        with self._store._lock:
            self._store._release(self)
