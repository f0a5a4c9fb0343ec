"""Pictures larger than a message, both ways, decided once for the sync and asyncio clients.

A server takes requests of at most ``limits.max_request_bytes`` and pictures in them of at most
``limits.max_image_bytes``; a larger picture goes first by UploadPicture, in chunks, and the
request names its upload id instead (``to_upload`` picks which, ``upload_requests`` makes the
stream). The other way, a result larger than the caller's largest message comes as
``result_chunk`` events before its Result, whose digest and size check what they assemble
(``ResultAssembly``); every result's digest is checked, in chunks or not. The clients only do
the calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import TypeVar

from styleserve.convert import from_proto, request_field
from styleserve.errors import DataLoss, InvalidArgument, ResourceExhausted
from styleserve.events import Result
from styleserve.info import ServerInfo
from styleserve.options import OptionsError, resolve
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = [
    "PLAIN_REQUEST_BYTES",
    "Request",
    "ResultAssembly",
    "chunk_bytes",
    "to_upload",
    "upload_requests",
]

# The requests that carry pictures.
Request = TypeVar("Request", pb.StyleTransferRequest, pb.RegisterStyleRequest)

# Requests up to this size go as they are, without asking the server for its limits first (a
# round trip, once per client): far below what any useful server takes (16 MiB a picture by
# default), and above most small pictures, so that small jobs never wait for it.
PLAIN_REQUEST_BYTES = 64 * 1024
# The size of an upload's chunks: a few per round trip of the server's receive window (1 MiB by
# default), and far below any message limit a server keeps.
_CHUNK_BYTES = 2**20
# Room left in a request for what naming uploads adds to it (an id instead of each picture).
_REQUEST_HEADROOM = 64 * 1024


def chunk_bytes(info: ServerInfo | None) -> int:
    """The chunk size of an upload to the server described by ``info`` (None: not known)."""
    if info is None:
        return _CHUNK_BYTES
    return max(1, min(_CHUNK_BYTES, info.limits.max_request_bytes // 2))


def upload_requests(data: bytes, chunk: int = _CHUNK_BYTES) -> Iterator[pb.UploadPictureRequest]:
    """The UploadPicture stream of the encoded picture ``data``: its header, then its bytes."""
    header = pb.UploadHeader(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    yield pb.UploadPictureRequest(header=header)
    for offset in range(0, len(data), chunk):
        yield pb.UploadPictureRequest(chunk=data[offset : offset + chunk])


def _pictures(
    message: pb.StyleTransferRequest | pb.RegisterStyleRequest,
) -> list[tuple[str, pb.Image]]:
    """Every picture of ``message`` with its field's name, in a fixed order."""
    styles = [(f"styles[{i}].image", style.image) for i, style in enumerate(message.styles)]
    if isinstance(message, pb.RegisterStyleRequest):
        return styles
    pictures = [("content", message.content), *styles]
    if message.HasField("init_image"):
        pictures.append(("init_image", message.init_image))
    if message.HasField("regions"):
        regions = message.regions
        pictures.extend(
            (f"regions.style_masks[{i}]", mask) for i, mask in enumerate(regions.style_masks)
        )
        pictures.extend(
            (f"regions.{n}", getattr(regions, n))
            for n in ("label_map", "keep_mask")
            if regions.HasField(n)
        )
    return pictures


def to_upload(message: Request, info: ServerInfo) -> tuple[Request, list[pb.Image]]:
    """``message`` and its pictures to upload first for the server ``info`` describes: every
    picture larger than its ``max_image_bytes``, then the largest others until the request
    fits its ``max_request_bytes``. The pictures are those of a copy of ``message`` (the one
    returned), so that the caller's keeps its bytes. Raises InvalidArgument where pictures
    must be uploaded to a server that takes none (a server too old to say is sent the request
    as it is), ResourceExhausted where they are more than its upload store holds together:
    each would evict the one before (its least recently used), and the job would not find it.
    """
    limits = info.limits
    room = limits.max_request_bytes - _REQUEST_HEADROOM
    size = message.ByteSize()
    named = _pictures(message)
    by_size = sorted(
        ((index, picture) for index, (_, picture) in enumerate(named)),
        key=lambda p: len(p[1].data),
        reverse=True,
    )
    chosen = []
    for index, picture in by_size:
        if len(picture.data) <= limits.max_image_bytes and size <= room:
            break
        chosen.append(index)
        size -= len(picture.data)
    if not chosen or info.uploads is None:
        return message, []
    if isinstance(message, pb.StyleTransferRequest):
        # The server's limits are known now: what it would refuse, refused before the uploads
        # (the client's own check, ``styleserve.request``, left them to it).
        preset, given = from_proto(message.options, message.delivery)
        try:
            resolve(preset, info.limits, **given)
        except OptionsError as error:
            raise InvalidArgument(f"{request_field(error.field)}: {error.message}") from None
    uploading = sum(len(picture.data) for _, picture in by_size[: len(chosen)])
    if not info.uploads.max_bytes:
        field, largest = named[chosen[0]]
        raise InvalidArgument(
            f"{field}: takes {_mib(len(largest.data))}; this server takes"
            f" {_mib(limits.max_image_bytes)} a picture and {_mib(limits.max_request_bytes)} a"
            " request, and no uploads (upload_store_bytes 0): send smaller pictures"
        )
    if uploading > info.uploads.max_bytes:
        raise ResourceExhausted(
            f"the pictures to upload ({_mib(uploading)} together) are more than this server's"
            f" upload store holds ({_mib(info.uploads.max_bytes)}): send smaller pictures, or"
            " use a server with a larger upload_store_bytes"
        )
    copy = type(message)()
    copy.CopyFrom(message)
    copied = _pictures(copy)
    return copy, [copied[index][1] for index in sorted(chosen)]


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


class ResultAssembly:
    """A job's ``result_chunk`` events put back together, and its Result checked against the
    digest and size the server sent (a server too old to send them is taken at its word)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: pb.ImageChunk) -> None:
        if chunk.offset != self._size:
            raise DataLoss(
                f"the result's chunk at offset {chunk.offset} came where offset {self._size} "
                "was due: the picture cannot be assembled; run the job again"
            )
        self._chunks.append(chunk.data)
        self._size += len(chunk.data)

    def result(self, result: Result, message: pb.Result) -> Result:
        """``result`` with the picture the chunks assembled (when they came), checked."""
        if self._chunks:
            if result.data:
                raise DataLoss("the result came both in chunks and whole; run the job again")
            result = dataclasses.replace(result, data=b"".join(self._chunks))
            self._chunks = []
        if not message.image_sha256:
            return result
        digest = hashlib.sha256(result.data).hexdigest()
        if len(result.data) != message.image_size_bytes or digest != message.image_sha256:
            raise DataLoss(
                f"the result's {len(result.data)} bytes hash to {digest}, but the server sent "
                f"{message.image_size_bytes} bytes hashing to {message.image_sha256}: the "
                "picture was damaged on the way; run the job again"
            )
        return result
