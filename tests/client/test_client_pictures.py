"""Pictures in (paths, bytes, PIL images) and out (atomic writes)."""

import io
import os
import stat

import pytest
from PIL import Image
from styleserve.contact_sheet import contact_sheet
from styleserve.pictures import encode_picture, save_encoded, write_atomically

from tests.client.client_helpers import png


def test_paths_bytes_and_pil_images_become_encoded_bytes(tmp_path):
    data = png((24, 16), (200, 30, 40))
    path = tmp_path / "a.png"
    path.write_bytes(data)
    assert encode_picture(path) == data
    assert encode_picture(str(path)) == data
    assert encode_picture(data) == data
    assert encode_picture(bytearray(data)) == data
    decoded = Image.open(io.BytesIO(encode_picture(Image.open(path))))
    assert decoded.format == "PNG" and decoded.size == (24, 16)
    assert decoded.getpixel((3, 3)) == (200, 30, 40)


def test_a_missing_file_names_the_picture_and_the_path(tmp_path):
    with pytest.raises(OSError, match=r"cannot read the style picture '.*nope\.png'"):
        encode_picture(tmp_path / "nope.png", what="style picture")


def test_other_types_are_refused_with_what_to_pass():
    with pytest.raises(TypeError, match="path, encoded bytes or a PIL image, not int"):
        encode_picture(42)  # type: ignore[arg-type]


def test_write_atomically_replaces_whole_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    write_atomically(target, b"new picture")
    assert target.read_bytes() == b"new picture"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    fresh = write_atomically(tmp_path / "fresh.png", b"x")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644


def test_write_atomically_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomically(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_write_atomically_names_a_missing_folder_not_its_temporary_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nodir: no such folder to write out\.png in"):
        write_atomically(tmp_path / "nodir" / "out.png", b"x")


@pytest.mark.parametrize(("name", "saved"), [("x.jpg", False), ("x.PNG", True), ("x.bin", True)])
def test_an_encoded_picture_is_saved_only_under_its_own_formats_suffix(tmp_path, name, saved):
    data = png((8, 8))
    if saved:
        assert save_encoded(tmp_path / name, data).read_bytes() == data
        return
    with pytest.raises(ValueError, match=r"the picture is PNG; name a \.png file"):
        save_encoded(tmp_path / name, data)
    assert list(tmp_path.iterdir()) == []


def test_contact_sheet_is_a_near_square_grid_of_every_picture():
    pictures = [(f"#{i}", Image.new("RGB", (20, 10), (i * 40, 0, 0))) for i in range(5)]
    sheet = contact_sheet(pictures)
    # 5 pictures: 3 columns, 2 rows of 20x(10+label) cells with 4 px gaps.
    assert sheet.size == (3 * 24 + 4, 2 * (10 + 14 + 4) + 4)
    assert sheet.getpixel((4 + 5, 4 + 5)) == (0, 0, 0)
    assert sheet.getpixel((4 + 24 + 5, 4 + 5)) == (40, 0, 0)
    assert sheet.getpixel((4 + 24 + 5, 4 + 28 + 5)) == (160, 0, 0)
    with pytest.raises(ValueError):
        contact_sheet([])


@pytest.mark.parametrize(
    ("mode", "sent"),
    [("CMYK", "RGB"), ("YCbCr", "RGB"), ("I", "RGB"), ("F", "RGB"), ("PA", "RGBA"),
     ("P", "P"), ("LA", "LA"), ("I;16", "I;16")],
)  # fmt: skip
def test_a_pil_image_in_any_mode_is_sent_as_a_png_the_server_reads(mode, sent):
    # A print JPEG opens in CMYK; PNG stores none of the first five modes as they are.
    image = Image.new("RGB", (8, 8), (200, 100, 50))
    image = image.convert(mode) if mode not in ("PA", "I;16") else Image.new(mode, (8, 8))
    with Image.open(io.BytesIO(encode_picture(image))) as png:
        assert (png.format, png.mode, png.size) == ("PNG", sent, (8, 8))
        if mode in ("CMYK", "YCbCr"):
            red, green, blue = png.convert("RGB").getpixel((0, 0))
            assert abs(red - 200) + abs(green - 100) + abs(blue - 50) < 12


def test_a_long_missing_path_is_named_by_its_end():
    path = "x" * 5000 + "/missing.png"
    with pytest.raises(OSError) as error:
        encode_picture(path, what="content picture")
    said = str(error.value)
    assert len(said) < 300 and said.startswith("cannot read the content picture '...")
    assert "x/missing.png'" in said
