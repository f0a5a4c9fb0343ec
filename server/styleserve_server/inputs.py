"""Checks a request before any heavy work, and decodes its pictures safely.

A bad request must cost the server next to nothing and never reach the engine. ``check``
runs before the job queues: counts, encoded sizes, option ranges, and each picture's format
and pixel count read from its header alone, so a decompression bomb is refused without
being decoded. ``decode`` runs later in the job's worker thread: it decodes (catching
truncated or corrupt data), applies EXIF orientation and brings every mode (grayscale,
16-bit, palette, CMYK, alpha) to plain 8-bit RGB, the one thing the engine accepts.
Every refusal is an InvalidInput naming the request field at fault.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError
from styleserve.convert import from_proto
from styleserve.options import Limits, OptionsError, StyleOptions, resolve
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = ["ALLOWED_FORMATS", "CheckedRequest", "InvalidInput", "check", "decode", "decode_all"]

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")


class InvalidInput(ValueError):
    """The request cannot be served as sent; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class CheckedRequest:
    """A request that passed every check short of decoding: its resolved options and its
    encoded pictures."""

    options: StyleOptions
    content: bytes
    styles: tuple[bytes, ...]
    init_image: bytes | None


def check(
    request: pb.StyleTransferRequest,
    limits: Limits,
    *,
    backbone: str,
    preview_size: int,
    output_quality: int,
) -> CheckedRequest:
    """Validates ``request`` for a server serving ``backbone`` (its delivery defaults
    ``preview_size`` and ``output_quality``). Raises InvalidInput naming the field."""
    if not 1 <= len(request.styles) <= limits.max_styles:
        count = len(request.styles)
        raise InvalidInput("styles", f"send 1 to {limits.max_styles} style pictures, got {count}")
    options = _options(request, limits, backbone, preview_size, output_quality)
    if options.init == "image" and not request.HasField("init_image"):
        raise InvalidInput("init_image", "options.init is INIT_IMAGE: send the starting picture")
    init_image = request.init_image.data if options.init == "image" else None
    pictures = [("content", request.content.data)]
    pictures += [(f"styles[{i}]", s.image.data) for i, s in enumerate(request.styles)]
    if init_image is not None:
        pictures.append(("init_image", init_image))
    for field, data in pictures:
        _check_header(field, data, limits)
    return CheckedRequest(
        options=options,
        content=request.content.data,
        styles=tuple(s.image.data for s in request.styles),
        init_image=init_image,
    )


def _options(
    request: pb.StyleTransferRequest,
    limits: Limits,
    backbone: str,
    preview_size: int,
    output_quality: int,
) -> StyleOptions:
    try:
        preset, overrides = from_proto(
            request.options, request.delivery, [s.blend_weight for s in request.styles]
        )
        requested = overrides.get("backbone")
        if requested is not None and requested != backbone:
            raise OptionsError(
                "backbone", f"this server serves {backbone!r}; leave it unset or send to a "
                f"server that serves {requested!r}",
            )  # fmt: skip
        overrides["backbone"] = backbone
        overrides.setdefault("preview_size", preview_size)
        overrides.setdefault("output_quality", output_quality)
        options = resolve(preset, limits, **overrides)
    except OptionsError as error:
        raise InvalidInput(f"options.{error.field}", str(error).split(": ", 1)[-1]) from None
    if options.style_blend and len(options.style_blend) != len(request.styles):
        raise InvalidInput("styles", "give every style picture a blend_weight, or none")
    return options


def _check_header(field: str, data: bytes, limits: Limits) -> None:
    if not data:
        raise InvalidInput(field, "is empty: send the encoded bytes of a PNG, JPEG or WebP file")
    if len(data) > limits.max_image_bytes:
        raise InvalidInput(
            field,
            f"is {len(data)} bytes, more than the {limits.max_image_bytes} this server accepts; "
            "send a smaller file (the output is at most "
            f"{limits.max_output_side} px anyway)",
        )
    _open(field, data, limits).close()


def _open(field: str, data: bytes, limits: Limits) -> Image.Image:
    """Opens ``data`` reading the header only, refusing formats outside the allow-list and
    pictures of more pixels than ``limits`` allow."""
    try:
        with warnings.catch_warnings():
            # The pixel limit is checked below with a message of its own.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:
        raise InvalidInput(field, f"has too many pixels ({error}); downscale it first") from None
    except UnidentifiedImageError:
        raise InvalidInput(field, _unsupported(data)) from None
    except _DECODE_ERRORS as error:
        raise InvalidInput(field, f"is corrupt ({error}); re-export the picture") from None
    width, height = image.size
    if width * height > limits.max_input_pixels:
        image.close()
        raise InvalidInput(
            field,
            f"is {width}x{height} pixels, more than the {limits.max_input_pixels} this server "
            "decodes; downscale it first",
        )
    return image


def _unsupported(data: bytes) -> str:
    """Names what the bytes are, when PIL knows, so the caller knows what to convert."""
    found = "not a picture this server recognises (or corrupt)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                found = f"a {image.format} picture"
    except Exception:  # noqa: BLE001 - any failure just means "unrecognised"
        pass
    return f"is {found}; send PNG, JPEG or WebP"


def decode(field: str, data: bytes, limits: Limits) -> Image.Image:
    """Decodes a picture that passed ``check`` into 8-bit RGB, upright per its EXIF."""
    with _open(field, data, limits) as image:
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright)
        except _DECODE_ERRORS as error:
            raise InvalidInput(
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
        # Transparent areas have arbitrary colours underneath; show them on white instead.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
