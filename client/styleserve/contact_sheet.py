"""A contact sheet: the previews of a job on one grid picture, to see the optimisation at a
glance instead of opening each preview file."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

__all__ = ["contact_sheet"]

_GAP = 4
_LABEL_HEIGHT = 14


def contact_sheet(
    pictures: Sequence[tuple[str, Image.Image]], columns: int | None = None
) -> Image.Image:
    """The ``(label, picture)`` pairs on a grid of ``columns`` (None: near-square), row by row,
    each cell as large as the largest picture, its label under it."""
    if not pictures:
        raise ValueError("a contact sheet needs at least one picture")
    if columns is None:
        columns = math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    cell_w = max(p.width for _, p in pictures)
    cell_h = max(p.height for _, p in pictures) + _LABEL_HEIGHT
    sheet = Image.new(
        "RGB",
        (columns * (cell_w + _GAP) + _GAP, rows * (cell_h + _GAP) + _GAP),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    for index, (label, picture) in enumerate(pictures):
        x = _GAP + (index % columns) * (cell_w + _GAP)
        y = _GAP + (index // columns) * (cell_h + _GAP)
        sheet.paste(picture.convert("RGB"), (x, y))
        draw.text((x, y + picture.height + 1), label, fill="black")
    return sheet
