"""Bad pictures and options are refused as INVALID_ARGUMENT naming the field, before any
engine work, and the server stays healthy; good pictures of every mode decode to RGB."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image
from styleserve.options import LIMITS, Limits, OptionsError
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_server.inputs import admit_input_pixels, check_frame, decode

from tests.fixtures_server import SERVING, health
from tests.server.service_helpers import connect, encoded, picture, request, rpc_error

pytestmark = pytest.mark.timeout(180)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with a token of data: a pixel bomb
    as far as anything that trusts the header is concerned."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


GOOD = encoded()
BAD_PICTURES = {
    "empty": b"",
    "garbage": b"this is not a picture, just some bytes " * 10,
    "gif": encoded(picture(), "GIF"),
    "bmp": encoded(picture(), "BMP"),
    "truncated png": GOOD[: len(GOOD) // 2],
    "truncated jpeg": encoded(picture((64, 64)), "JPEG")[:-400],
    "bomb beyond PIL's own limit": png_header_only(20_000, 20_000),
    "bomb beyond the server's limit": png_header_only(8_000, 8_000),
    "too many bytes": encoded(picture((300, 300)), "PNG"),
}
EXPECTED_WORDS = {
    "empty": "empty",
    "garbage": "PNG, JPEG or WebP",
    "gif": "GIF",
    "bmp": "BMP",
    "truncated png": "truncated",
    "truncated jpeg": "truncated",
    "bomb beyond PIL's own limit": "has more pixels than the 40000000 this server decodes",
    "bomb beyond the server's limit": "is 8000x8000 pixels, more than the 40000000",
    "too many bytes": "bytes",
}
BAD_OPTIONS = [
    ({"content_weight": float("nan")}, "options.content_weight"),
    ({"style_weight": -1.0}, "options.style_weight"),
    ({"iterations": 1_000_000}, "options.iterations"),
    ({"size": 100_000}, "options.size"),
    ({"content_layers": ["block9_conv9"]}, "options.content_layers"),
    ({"preset": "nope"}, "options.preset"),
    ({"backbone": "torchvision-vgg19"}, "options.backbone"),
    ({"optimizer": 99}, "options.optimizer"),
    ({"scales": [0.5, 0.25]}, "options.scales"),
    ({"init": pb.INIT_IMAGE}, "init_image"),
]


def invalid_requests() -> list[tuple[str, pb.StyleTransferRequest, str, str]]:
    """(name, request, field the message must name, word it must contain)."""
    cases = []
    for name, data in BAD_PICTURES.items():
        cases.append((f"content {name}", request(content=data), "content", EXPECTED_WORDS[name]))
    cases.append(("second style", request(styles=[GOOD, BAD_PICTURES["gif"]]), "styles[1]", "GIF"))
    cases.append(("no style", request(styles=[]), "styles", "style"))
    negative = request(styles=[GOOD, GOOD])
    negative.styles[0].blend_weight = -1
    # Each refusal names the field the caller sent, wherever its option travels.
    cases.append(("negative blend", negative, "styles[].blend_weight", "[0, "))
    big_preview = request()
    big_preview.delivery.preview_size = 100_000
    cases.append(("preview size", big_preview, "delivery.preview_size", ""))
    unknown = request()
    unknown.options.normalization = 99
    cases.append(("normalization", unknown, "options.normalization", ""))
    # An older client's deprecated string is named as it sent it; beside the enum, it is unread.
    deprecated = request()
    deprecated.options.loss_normalization = "bogus"
    cases.append(("deprecated string", deprecated, "options.loss_normalization", "one of"))
    both = request()
    both.options.normalization, both.options.loss_normalization = 99, "bogus"
    cases.append(("enum beside the string", both, "options.normalization", ""))
    unread = request()
    unread.init_image.data = GOOD
    cases.append(("init image for nothing", unread, "init_image", 'init is "content"'))
    instant = request(preset="instant")
    instant.options.init = pb.INIT_IMAGE
    instant.init_image.data = GOOD
    cases.append(("init image for the instant tier", instant, "init_image", "starts from no"))
    for options, field in BAD_OPTIONS:
        cases.append((f"option {field}", request(**options), field, ""))
    return cases


def test_every_bad_request_is_invalid_argument_and_the_server_stays_healthy(start_server):
    cases = invalid_requests()
    # A small byte limit, so that "too many bytes" needs no multi-megabyte picture.
    with start_server(max_image_bytes=64 * 1024) as srv, connect(srv.target) as stub:
        for name, message, field, word in cases:
            error = rpc_error(stub.StyleTransfer(message, timeout=60))
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, name
            assert error.details().startswith(f"{field}: "), (name, error.details())
            assert word in error.details(), (name, error.details())
        metrics = srv.server.metrics.registry
        # Nothing of any of them reached the engine.
        assert metrics.get_sample_value("styleserve_iterations_total") == 0
        assert health(srv.target) == SERVING
        assert list(stub.StyleTransfer(request(), timeout=120))[-1].HasField("result")
    labels = {"method": "StyleTransfer", "code": "INVALID_ARGUMENT"}
    assert metrics.get_sample_value("styleserve_requests_total", labels) == len(cases)


def test_a_request_over_the_message_limit_is_refused_by_grpc(start_server):
    with start_server(max_request_bytes=64 * 1024, max_image_bytes=32 * 1024) as srv:
        with connect(srv.target) as stub:
            error = rpc_error(stub.StyleTransfer(request(content=b"x" * 100_000), timeout=60))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def decoded(data: bytes) -> Image.Image:
    image = decode("content", data, LIMITS)
    assert image.mode == "RGB"
    return image


def test_grayscale_becomes_rgb_with_equal_channels():
    pixels = np.asarray(decoded(encoded(picture(mode="L"))))
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_sixteen_bit_is_rescaled_not_clipped():
    grey = Image.fromarray(np.full((16, 16), 32768, np.uint16))
    assert np.asarray(decoded(encoded(grey))).mean() == pytest.approx(128, abs=1)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 8, 16))
    pixels = np.asarray(decoded(encoded(rgba)))
    assert tuple(pixels[0, 0]) == (255, 255, 255) and tuple(pixels[0, 15]) == (255, 0, 0)


def test_partial_alpha_blends_with_white_as_compositing_does():
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (24, 32, 4), np.uint8), "RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    assert (np.asarray(decoded(encoded(rgba))) == expected).all()


def test_palette_with_transparency_is_composited_on_white():
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(0, (0, 0, 8, 16))
    pixels = np.asarray(decoded(encoded(palette, transparency=0)))
    assert tuple(pixels[0, 0]) == (255, 255, 255) and tuple(pixels[0, 15]) == (0, 0, 255)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in ink
    red, green, blue = np.asarray(decoded(encoded(cmyk, "JPEG"))).reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    data = encoded(picture((40, 20)), "JPEG", exif=exif.tobytes())
    assert decoded(data).size == (20, 40)


def test_webp_is_accepted():
    assert decoded(encoded(picture(), "WEBP")).size == (48, 32)


def test_decode_checks_the_pixel_limit_itself():
    with pytest.raises(OptionsError) as error:
        decode("init_image", encoded(picture((100, 100))), Limits(max_input_pixels=99))
    assert error.value.field == "init_image"


@pytest.mark.parametrize(
    ("content", "options", "advice"),
    [
        ((400, 4), {"size": 64}, "ask for size >= 1600"),
        ((4000, 2), {"size": 64, "max_output_side": 2048}, "crop the content"),
    ],
    ids=["a-larger-size-works", "too-elongated-for-this-server"],
)
def test_an_output_whose_feature_maps_would_vanish_is_refused_saying_what_works(
    start_server, content, options, advice
):
    limit = options.pop("max_output_side", 2048)
    with start_server(max_output_side=limit) as srv, connect(srv.target) as stub:
        error = rpc_error(stub.StyleTransfer(request(encoded(picture(content)), **options)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("options.size: ") and advice in error.details()


def test_option_values_that_would_overflow_the_loss_are_refused(server):
    with connect(server.target) as stub:
        for options in ({"tv_weight": 3e38}, {"tv_power": 8.0}, {"learning_rate": 1e30}):
            error = rpc_error(stub.StyleTransfer(request(**options), timeout=60))
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, options
        # At the bounds the arithmetic stays finite and the job runs.
        bounds = {"tv_weight": 1e9, "content_weight": 1e9, "style_weight": 1e9, "tv_power": 4.0}
        assert list(stub.StyleTransfer(request(**bounds), timeout=120))[-1].HasField("result")


def test_a_server_allowing_more_pixels_than_pillow_reads_their_headers(monkeypatch):
    # Pillow refuses pictures over twice its process-wide limit (179 MP by default); a server
    # whose max_input_pixels is above that raises the limit to its own when it starts.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    limits = dataclasses.replace(LIMITS, max_input_pixels=200_000_000)
    frame = pb.Image(data=png_header_only(14_000, 13_500))  # 189 MP

    def size() -> tuple[int, int]:
        return check_frame("frame", frame, limits, lambda *_: b"")[1]

    with pytest.raises(OptionsError, match="^frame: has more pixels than the 200000000"):
        size()
    admit_input_pixels(limits)
    assert size() == (14_000, 13_500)
    admit_input_pixels(LIMITS)  # never lowered: another server of the process may need it
    assert size() == (14_000, 13_500)
