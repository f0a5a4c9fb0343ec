"""Checks a request before any heavy work, and decodes its pictures safely.

A bad request must cost the server next to nothing and never reach the engine. ``check`` runs
before the job queues: counts, encoded sizes, option ranges, and each picture's format and
pixel count read from its header alone, so that a decompression bomb is refused without being
decoded and the job's predicted memory counts its decoded pictures (``with_pictures``);
``check_registration`` does the same for RegisterStyle, whose style then stands in for the
pictures of jobs that name it. ``decode`` runs later in the job's worker thread: it decodes
(catching truncated or corrupt data), applies EXIF orientation and brings every mode
(grayscale, 16-bit, palette, CMYK, alpha) to plain 8-bit RGB, the one thing the engine accepts.
A request's regions (masks, a label map) are the exception: they are decoded in ``check``, one
at a time (and one request's at a time), and reduced at once to one byte per output pixel
(``styleserve_server.regions``), so that an empty or overlapping region is refused before the
job queues, as every other bad input is. A picture comes in the request's bytes or as the id of
an upload (``styleserve_server.uploads``), read from the store here, once, so that the job
holds its bytes whatever the store does with them later (an id the store does not hold is the
store's NOT_FOUND, not a refusal of the request).
Every refusal is a ``styleserve.options.OptionsError`` naming the request field at fault (the
one error type both sides use; the servicer answers it with INVALID_ARGUMENT).
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from styleserve.convert import from_proto, request_field
from styleserve.options import (
    STYLE_FIELDS,
    Limits,
    OptionsError,
    StyleOptions,
    check_lengths,
    check_pictures,
    check_style_size,
    resolve,
    shown,
)
from styleserve.plan import Stage, check_output_size, iterations_of, output_size, plan
from styleserve.regions import check_regions
from styleserve.v1 import style_transfer_pb2 as pb

from styleserve_server.regions import (
    RegionLabels,
    check_aspect,
    from_label_map,
    from_masks,
    label_pixels,
    mask_pixels,
)

if TYPE_CHECKING:
    # A type only: checking a request needs no torch.
    from styleserve_server.engine import PreparedStyle

__all__ = [
    "ALLOWED_FORMATS",
    "CheckedRequest",
    "CheckedStyle",
    "admit_input_pixels",
    "check",
    "check_frame",
    "check_registration",
    "decode",
    "decode_all",
    "style_id",
    "with_pictures",
]

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
# A decoded picture holds 4 bytes a pixel (Pillow keeps 8-bit RGB in 32-bit pixels), and its
# decoding up to 17 on the way. Measured at 40 MP: a JPEG (plain, CMYK or turned upright by its
# EXIF) and an RGB or RGBA PNG peaked at 8, a grey PNG at 5, a palette PNG with transparency at
# 9, a 16-bit grey PNG at 10, a grey PNG with alpha at 12, a WebP with alpha at 16.1 (its
# decoder's buffer beside Pillow's), to which a byte is added for room. Admission counts both.
_DECODED_BYTES = 4
_DECODING_BYTES = 17
# Regions are decoded in the request's check, before the job holds any of the memory budget:
# one request's at a time, so that what they take outside it (a picture's decoding, 0.8 GB at
# 40 MP) does not grow with the requests checked at once (the budget's margin holds one).
_DECODING_REGIONS = threading.Lock()
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
)
_SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")
# EXIF orientations that turn the picture a quarter: its upright width is its stored height.
_QUARTER_TURNS = (5, 6, 7, 8)
# How each EXIF orientation is undone (Pillow's ImageOps.exif_transpose uses the same table,
# but also re-encodes the whole EXIF block of the result, which hostile tags make fail or flood
# the log with warnings; the engine needs the pixels alone).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION = 0x0112
# What RegisterStyle reads of its options: those (and the preset they default from), the blend,
# and the size whose stages it prepares.
_REGISTRATION_FIELDS = frozenset((*STYLE_FIELDS, "style_blend", "size"))
# The ids styleserve_server.style_cache makes.
_STYLE_ID = re.compile(r"sty_[0-9a-f]{64}")
# The bytes of the upload a request names at a field (``UploadStore.get``).
Uploads = Callable[[str, str], bytes]


@dataclass(frozen=True)
class CheckedStyle:
    """A RegisterStyle request that passed every check short of decoding: its encoded style
    pictures and its resolved options (the fields it does not read are the preset's)."""

    pictures: tuple[bytes, ...]
    options: StyleOptions
    # Each picture's pixels, read from its header: what decoding it will hold.
    picture_pixels: tuple[int, ...] = ()


@dataclass(frozen=True)
class CheckedRequest:
    """A request that passed every check short of decoding: its resolved options and its
    encoded pictures."""

    options: StyleOptions
    content: bytes
    styles: tuple[bytes, ...]
    init_image: bytes | None
    # The job's stages (styleserve.plan), planned once from the content's header: the job and
    # the engine run them, and Started reports their iterations when the slot is granted,
    # before any picture is decoded.
    stages: tuple[Stage, ...]
    # The content's upright (width, height), read from its header.
    content_size: tuple[int, int]
    # A style the server holds, standing for ``styles`` (then empty).
    style: PreparedStyle | None = None
    # Where each style paints, at the output's size; None: every style paints everywhere.
    regions: RegionLabels | None = None
    # The job's predicted peak memory (bytes), which its slot holds of the server's budget.
    memory_bytes: int = 0
    # Each style picture's pixels and the starting picture's (0: none), read from their
    # headers: what decoding them will hold.
    style_pixels: tuple[int, ...] = ()
    init_pixels: int = 0

    @property
    def total_iterations(self) -> int:
        return iterations_of(self.stages, self.options)

    @property
    def decoded_pixels(self) -> tuple[int, ...]:
        """The pixels of each picture the job may decode: ``decode_all``'s, and a style the
        server holds counts its pictures too (``style_pixels``), which the job decodes where
        it needs them (regions, colour preservation, targets or a vector not kept for it)."""
        width, height = self.content_size
        init = (self.init_pixels,) if self.init_pixels else ()
        return (width * height, *self.style_pixels, *init)


def check(
    request: pb.StyleTransferRequest,
    limits: Limits,
    *,
    backbone: str,
    preview_size: int,
    output_quality: int,
    uploads: Uploads,
    registered: CheckedStyle | None = None,
) -> CheckedRequest:
    """Validates ``request`` for a server serving ``backbone`` (its delivery defaults
    ``preview_size`` and ``output_quality``), ``registered`` being the registration of the
    style it names (``style_id``), whose style options it takes, and ``uploads`` reading the
    pictures it names by upload id. Raises OptionsError naming the field."""
    if registered is None:
        _check_style_count(len(request.styles), limits)
    options = _options(request, limits, backbone, preview_size, output_quality, registered)
    count = len(request.styles) if registered is None else len(registered.pictures)
    check_pictures(options, count, request.HasField("init_image"))
    content = _picture("content", request.content, limits, uploads)
    init_image = None
    if options.init == "image":
        init_image = _picture("init_image", request.init_image, limits, uploads)
    styles = tuple(
        _picture(f"styles[{i}]", s.image, limits, uploads) for i, s in enumerate(request.styles)
    )
    content_size = _check_header("content", content, limits)
    with _as_request_field():
        check_output_size(content_size, options, limits)
    style_pixels = tuple(
        _pixels(_check_header(f"styles[{i}]", style, limits)) for i, style in enumerate(styles)
    )
    init_pixels = 0
    if init_image is not None:
        init_pixels = _pixels(_check_header("init_image", init_image, limits))
    labels = None
    if request.HasField("regions"):
        size = output_size(content_size, options)
        labels = _regions(request, count, content_size, size, limits, uploads)
    return CheckedRequest(
        options=options,
        content=content,
        styles=styles,
        init_image=init_image,
        stages=tuple(plan(content_size, options)),
        content_size=content_size,
        regions=labels,
        style_pixels=style_pixels,
        init_pixels=init_pixels,
    )


def _regions(
    request: pb.StyleTransferRequest,
    styles: int,
    content_size: tuple[int, int],
    size: tuple[int, int],
    limits: Limits,
    uploads: Uploads,
) -> RegionLabels:
    """The labels of ``request``'s regions for ``styles`` style pictures at the output's
    ``size``: every picture's header checked (bytes, pixels, the content's aspect ratio)
    before any is decoded, then each decoded and reduced to ``size`` in turn."""
    for i, style in enumerate(request.styles):
        if style.blend_weight:
            raise OptionsError(
                f"styles[{i}].blend_weight",
                "with regions each style paints its own region and none are blended: leave "
                "every blend_weight 0",
            )
    message = request.regions
    check_regions(message, styles)
    masks = [f"regions.style_masks[{i}]" for i in range(len(message.style_masks))]
    data = {
        field: _picture(field, m, limits, uploads)
        for field, m in zip(masks, message.style_masks, strict=True)
    }
    for name in ("label_map", "keep_mask"):
        if message.HasField(name):
            field = f"regions.{name}"
            data[field] = _picture(field, getattr(message, name), limits, uploads)
    for field, picture in data.items():
        check_aspect(field, _check_header(field, picture, limits), content_size)

    def mask(field: str) -> np.ndarray:
        return mask_pixels(decode(field, data[field], limits), size)

    with _DECODING_REGIONS:
        if message.HasField("label_map"):
            label_map = decode("regions.label_map", data["regions.label_map"], limits)
            keep = message.keep_color if message.HasField("keep_color") else None
            labels = label_pixels(label_map, size)
            return from_label_map(labels, list(message.style_colors), keep)
        keep_mask = mask("regions.keep_mask") if "regions.keep_mask" in data else None
        return from_masks([mask(field) for field in masks], keep_mask)


def _options(
    request: pb.StyleTransferRequest,
    limits: Limits,
    backbone: str,
    preview_size: int,
    output_quality: int,
    registered: CheckedStyle | None,
) -> StyleOptions:
    with _as_request_field(request.options):
        check_lengths(request.options, limits)
        preset, overrides = from_proto(
            request.options, request.delivery, [s.blend_weight for s in request.styles]
        )
        _serve(overrides, backbone)
        if registered is not None:
            overrides.update(_registered(overrides, registered))
        overrides.setdefault("preview_size", preview_size)
        overrides.setdefault("output_quality", output_quality)
        return resolve(preset, limits, **overrides)


@contextlib.contextmanager
def _as_request_field(options: pb.StyleOptions | None = None) -> Iterator[None]:
    """Names the request field of an option's refusal (``size``: ``options.size``,
    ``preview_size``: ``delivery.preview_size``) in the request whose ``options`` they are:
    the one place where the options' errors, which name options, become the request's."""
    try:
        yield
    except OptionsError as error:
        raise OptionsError(request_field(error.field, options), error.message) from None


def _serve(overrides: dict[str, Any], backbone: str) -> None:
    """Sets ``overrides``' backbone to the one this server serves, refusing another."""
    requested = overrides.get("backbone")
    if requested is not None and requested != backbone:
        raise OptionsError(
            "backbone", f"this server serves {backbone!r}; leave it unset or send to a "
            f"server that serves {shown(requested)}",
        )  # fmt: skip
    overrides["backbone"] = backbone


def _registered(overrides: dict[str, Any], registered: CheckedStyle) -> dict[str, Any]:
    """The style options of ``registered``, which ``overrides`` may repeat, not change."""
    fixed = {name: getattr(registered.options, name) for name in (*STYLE_FIELDS, "style_blend")}
    for name in STYLE_FIELDS:
        asked = overrides.get(name)
        if isinstance(asked, list):
            asked = tuple(asked)
        if asked is not None and asked != fixed[name]:
            raise OptionsError(
                name,
                f"the registered style was prepared with {fixed[name]!r}; leave it unset, or "
                f"register the style with {shown(asked)} and use that style_id",
            )
    return fixed


def _check_style_count(count: int, limits: Limits) -> None:
    if not 1 <= count <= limits.max_styles:
        raise OptionsError("styles", f"send 1 to {limits.max_styles} style pictures, got {count}")


def style_id(request: pb.StyleTransferRequest) -> str:
    """The registered style ``request`` names, "" when it sends its style pictures. Raises
    OptionsError when it names one beside pictures, or one that no server makes."""
    if not request.style_id:
        return ""
    if request.styles:
        raise OptionsError(
            "style_id", "send a style_id or style pictures, not both (the style_id stands for "
            "the pictures it was registered with)",
        )  # fmt: skip
    if not _STYLE_ID.fullmatch(request.style_id):
        raise OptionsError(
            "style_id", "is not a style id (sty_ and 64 hex digits): send the one "
            "RegisterStyle returned",
        )  # fmt: skip
    return request.style_id


def check_registration(
    request: pb.RegisterStyleRequest,
    limits: Limits,
    *,
    backbone: str,
    uploads: Uploads,
) -> CheckedStyle:
    """Validates a RegisterStyle ``request`` for a server serving ``backbone`` as ``check``
    does a job's style pictures (``uploads`` reading those it names by upload id) and options
    (only the options it reads: ``STYLE_FIELDS``, the preset, the blend and the size). Raises
    OptionsError naming the field."""
    _check_style_count(len(request.styles), limits)
    with _as_request_field(request.options):
        check_lengths(request.options, limits)
        preset, overrides = from_proto(
            request.options, None, [s.blend_weight for s in request.styles]
        )
        read = {name: value for name, value in overrides.items() if name in _REGISTRATION_FIELDS}
        _serve(read, backbone)
        options = resolve(preset, limits, **read)
        # Whatever the method, a registration works its pictures at the style's size.
        check_style_size(options, limits)
    check_pictures(options, len(request.styles), init_image=False)
    pictures = tuple(
        _picture(f"styles[{i}]", s.image, limits, uploads) for i, s in enumerate(request.styles)
    )
    pixels = tuple(
        _pixels(_check_header(f"styles[{i}]", picture, limits))
        for i, picture in enumerate(pictures)
    )
    return CheckedStyle(pictures=pictures, options=options, picture_pixels=pixels)


def check_frame(
    field: str, image: pb.Image, limits: Limits, uploads: Uploads
) -> tuple[bytes, tuple[int, int]]:
    """A video frame's encoded bytes (sent, or read from the upload it names) and its upright
    (width, height), checked as a job's content is: the bytes within ``max_image_bytes``, the
    format and pixels from the header. Raises OptionsError naming ``field``."""
    data = _picture(field, image, limits, uploads)
    return data, _check_header(field, data, limits)


def _picture(field: str, image: pb.Image, limits: Limits, uploads: Uploads) -> bytes:
    """The encoded bytes ``image`` carries, or those of the upload it names: exactly one of
    the two. Bytes in the request obey ``max_image_bytes``; an upload was held to
    ``max_upload_bytes`` as it arrived."""
    if image.upload_id:
        if image.data:
            raise OptionsError(
                field, "sets both data and upload_id: send the picture's bytes or the id of "
                "their upload, not both",
            )  # fmt: skip
        return uploads(field, image.upload_id)
    data = image.data
    if not data:
        raise OptionsError(
            field, "is empty: send the encoded bytes of a PNG, JPEG or WebP file, or the "
            "upload_id of one (UploadPicture)",
        )  # fmt: skip
    if len(data) > limits.max_image_bytes:
        raise OptionsError(
            field,
            f"is {len(data)} bytes, more than the {limits.max_image_bytes} this server accepts "
            "in a request; upload it first (UploadPicture, which the SDK does by itself) or "
            f"send a smaller file (the output is at most {limits.max_output_side} px anyway)",
        )
    return data


def _check_header(field: str, data: bytes, limits: Limits) -> tuple[int, int]:
    """The picture's upright (width, height), read from its header."""
    with _open(field, data, limits) as image:
        width, height = image.size
        turned = _orientation(image) in _QUARTER_TURNS
    return (height, width) if turned else (width, height)


def _pixels(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def with_pictures(pixels: Sequence[int], work: int = 0) -> int:
    """The peak memory of ``work`` bytes done with pictures of ``pixels`` each decoded, one
    after another (``decode``): their decoding's, or the decoded pictures' (which jobs and
    registrations keep while they run) beside the work's."""
    held = _DECODED_BYTES * sum(pixels)
    decoding = held + (_DECODING_BYTES - _DECODED_BYTES) * max(pixels, default=0)
    return max(decoding, held + work)


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation the header holds (``getexif`` would decode a PNG to find it);
    None when there is none or it cannot be read (``decode`` reports real corruption)."""
    raw = image.info.get("exif")
    if not raw:
        return None
    exif = Image.Exif()
    try:
        exif.load(raw)
    except _DECODE_ERRORS:
        return None
    value = exif.get(_ORIENTATION)
    return value if isinstance(value, int) else None


def admit_input_pixels(limits: Limits) -> None:
    """Raises Pillow's process-wide pixel check to ``limits.max_input_pixels`` where that is
    higher (a server may allow up to CEILINGS'), so that Pillow refuses no picture the server
    allows; ``_open`` checks each picture against the server's own limit from its header."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < limits.max_input_pixels:
        Image.MAX_IMAGE_PIXELS = limits.max_input_pixels


def _open(field: str, data: bytes, limits: Limits) -> Image.Image:
    """Opens ``data`` reading the header only, refusing formats outside the allow-list and
    pictures of more pixels than ``limits`` allow."""
    try:
        with warnings.catch_warnings():
            # The pixel limit is checked below with a message of its own.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        # Over twice Pillow's limit, which a server keeps at its max_input_pixels or above
        # (``admit_input_pixels``): over the server's too.
        raise OptionsError(
            field,
            f"has more pixels than the {limits.max_input_pixels} this server decodes; "
            "downscale it first",
        ) from None
    except UnidentifiedImageError:
        raise OptionsError(field, _unsupported(data)) from None
    except _DECODE_ERRORS as error:
        raise OptionsError(field, f"is corrupt ({error}); re-export the picture") from None
    width, height = image.size
    if width * height > limits.max_input_pixels:
        image.close()
        raise OptionsError(
            field,
            f"is {width}x{height} pixels, more than the {limits.max_input_pixels} this server "
            "decodes; downscale it first",
        )
    return image


# Leading bytes of formats callers send by mistake, to name them in the refusal: read from a
# bounded prefix, never by trying every decoder Pillow has (which costs seconds on large bytes).
_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
)
# ISO base media files (HEIC, AVIF) name their brand at offset 8, after "ftyp".
_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF"}


def _unsupported(data: bytes) -> str:
    """Names what the bytes are, when their first bytes tell, so the caller knows what to
    convert."""
    found = "not a picture this server recognises (or corrupt)"
    named = [name for signature, name in _SIGNATURES if data.startswith(signature)]
    if data[4:8] == b"ftyp" and data[8:12] in _BRANDS:
        named.append(_BRANDS[data[8:12]])
    if named:
        article = "an" if named[0][0] in "AEIOU" else "a"
        found = f"{article} {named[0]} picture"
    return f"is {found}; send PNG, JPEG or WebP"


def decode(field: str, data: bytes, limits: Limits) -> Image.Image:
    """Decodes a picture that passed ``check`` into 8-bit RGB, upright per its EXIF."""
    with _open(field, data, limits) as image:
        try:
            image.load()
            turn = _UPRIGHT.get(_orientation(image) or 1)
            rgb = _to_rgb(image if turn is None else image.transpose(turn))
            # Leaving ``with`` closes the opened picture, which empties it: a copy of it, then.
            return rgb.copy() if rgb is image else rgb
        except _DECODE_ERRORS as error:
            raise OptionsError(
                field, f"is truncated or corrupt ({error}); re-export the picture"
            ) from None


def decode_all(request: CheckedRequest, limits: Limits) -> tuple[
    Image.Image, list[Image.Image], Image.Image | None
]:  # fmt: skip
    """Decodes the content, the styles and the optional starting picture of ``request``."""
    content = decode("content", request.content, limits)
    styles = [decode(f"styles[{i}]", s, limits) for i, s in enumerate(request.styles)]
    init = None if request.init_image is None else decode("init_image", request.init_image, limits)
    return content, styles, init


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT:
        # Plain conversion clips 16-bit values at 255 (a white picture): rescale instead.
        image = image.convert("I").point(lambda v: v / 256).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        # Transparent areas have arbitrary colours underneath; show them on white instead,
        # pasted through their alpha onto a white picture: the same pixels as compositing
        # onto an opaque white, without its three whole-picture copies.
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba)
        return white
    return image if image.mode == "RGB" else image.convert("RGB")
