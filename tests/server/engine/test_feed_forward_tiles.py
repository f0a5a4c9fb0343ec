"""The instant tier in tiles: the plan covers the picture within its budget, and the tiles,
sharing the whole picture's normalisation, give the whole picture's pixels (no seams).

A small graph shaped like Magenta's transform (mirror-padded convolutions, a stride-2 step and
a nearest upsampling, conditional instance normalisation decomposed into GlobalAveragePool,
Sub, Mul, Sqrt..., float and int8-quantised as tf2onnx wrote the real one) shows it in a
fraction of a second; the real networks, where exported, show it on a photograph.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from styleserve.options import StyleOptions
from styleserve_export.artifact import FeedForwardArtifact
from styleserve_export.feed_forward import CONTENT_INPUT, OUTPUT, VECTOR, VECTOR_SIZE, tiny_pair
from styleserve_export.loader import load_feed_forward
from styleserve_server.engine.feed_forward import (
    INSTANT_TILE_PIXELS,
    MIN_INSTANT_TILE_PIXELS,
    FeedForward,
    instant_peak_bytes,
)
from styleserve_server.engine.feed_forward_tiles import PLANE_LIMIT, plan_tiles
from styleserve_server.engine.records import JobCancelled

from benchmarks.seams import borders, seam_ratio
from tests.server.engine.engine_cancel import SetAfter

CPU = torch.device("cpu")
STARRY_NIGHT = Path(__file__).resolve().parents[3] / "examples" / "starry_night.jpg"


# --- a normalised stand-in for the transform ---------------------------------------------------


class _Graph:
    """Nodes and weights of the stand-in, named as they are added."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def weight(self, values: np.ndarray | float, dtype: type = np.float32) -> str:
        name = self.name("w")
        self.weights.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes: object) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attributes))
        return out

    def sines(self, shape: tuple[int, ...], phase: float, scale: float) -> str:
        # A formula, not a generator: the same weights on every platform.
        values = scale * np.sin(np.arange(int(np.prod(shape))) * 0.61 + phase)
        return self.weight(values.reshape(shape))

    def conv(self, x: str, out: int, into: int, kernel: int, phase: float, stride: int = 1) -> str:
        half = kernel // 2
        pads = self.weight([0, 0, half, half, 0, 0, half, half], np.int64)
        padded = self.op("Pad", x, pads, mode="reflect")
        weights = self.sines((out, into, kernel, kernel), phase, 1.5 / kernel)
        return self.op("Conv", padded, weights, self.sines((out,), phase + 1, 0.1),
                       kernel_shape=[kernel, kernel], strides=[stride, stride])  # fmt: skip

    def quantised(self, x: str, scale: float, zero: int) -> str:
        q = self.op("QuantizeLinear", x, self.weight(scale), self.weight(zero, np.int8))
        return self.op("DequantizeLinear", q, self.weight(scale), self.weight(zero, np.int8))

    def norm(self, x: str, channels: int, phase: float, quantised: bool) -> str:
        """Conditional instance normalisation as TF writes it: the picture's per-channel mean
        and variance, a scale and shift from the style vector."""
        if quantised:
            x = self.quantised(x, 0.04, 0)
        mean = self.op("GlobalAveragePool", x)
        if quantised:
            mean = self.quantised(mean, 0.01, 0)
        centred = self.op("Sub", x, mean)
        square = self.op("Mul", centred, centred)
        if quantised:
            square = self.quantised(square, 0.05, -128)
        variance = self.op("GlobalAveragePool", square)
        if quantised:
            variance = self.quantised(variance, 0.02, -128)
        deviation = self.op("Sqrt", self.op("Add", variance, self.weight(1e-3)))
        flat = self.op("Reshape", VECTOR, self.weight([1, VECTOR_SIZE], np.int64))
        shape = self.weight([1, channels, 1, 1], np.int64)
        projections = (self.sines((VECTOR_SIZE, channels), p, 0.05) for p in (phase, phase + 2))
        gain, shift = (self.op("Reshape", self.op("MatMul", flat, w), shape) for w in projections)
        gain = self.op("Add", gain, self.weight(1.0))
        scaled = self.op("Mul", centred, self.op("Div", gain, deviation))
        return self.op("Add", scaled, shift)


def normalised_transform(quantised: bool) -> bytes:
    """Magenta's transform in miniature: its receptive field is 5x5, then 3x3 at half size,
    then 3x3 after doubling back, each followed by a picture-wide normalisation."""
    g = _Graph()
    x = g.op("Transpose", CONTENT_INPUT, perm=[0, 3, 1, 2])
    x = g.op("Relu", g.norm(g.conv(x, 4, 3, 5, 0.0), 4, 0.0, quantised))
    x = g.op("Relu", g.norm(g.conv(x, 8, 4, 3, 1.0, stride=2), 8, 1.0, quantised))
    scales = g.weight([1.0, 1.0, 2.0, 2.0])
    x = g.op("Resize", x, "", scales, mode="nearest", nearest_mode="floor",
             coordinate_transformation_mode="asymmetric")  # fmt: skip
    x = g.op("Sigmoid", g.norm(g.conv(x, 3, 8, 3, 2.0), 3, 2.0, quantised))
    g.nodes.append(helper.make_node("Transpose", [x], [OUTPUT], perm=[0, 2, 3, 1]))
    graph = helper.make_graph(
        g.nodes,
        "normalised_transform",
        [
            helper.make_tensor_value_info(CONTENT_INPUT, TensorProto.FLOAT, [1, "h", "w", 3]),
            helper.make_tensor_value_info(VECTOR, TensorProto.FLOAT, [1, 1, 1, VECTOR_SIZE]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, "h", "w", 3])],
        g.weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def normalised_pair(quantised: bool) -> FeedForwardArtifact:
    return dataclasses.replace(tiny_pair(), transform=normalised_transform(quantised))


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Coarse noise enlarged smoothly: structure at several scales, the same on every line
    on average (a seam measure's fair ground)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)


def own_statistics(
    network: FeedForward, content: Image.Image, style: Image.Image, tiles
) -> Image.Image:
    """The naive tiling: each tile through the whole network alone, normalised by its own
    statistics."""
    pixels = np.asarray(content)
    out = np.zeros_like(pixels)
    vector = network.style_vector(style)
    for top, left, bottom, right in tiles:
        tile = Image.fromarray(pixels[top:bottom, left:right])
        out[top:bottom, left:right] = np.asarray(network._paint(tile, vector))
    return Image.fromarray(out)


# --- the plan ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "budget", "halo"),
    [
        (3000, 4000, 4 << 20, 36),
        (4320, 7680, 1 << 20, 36),
        (96, 640, 9000, 4),
        (400, 300, 1 << 20, 8),
    ],
)
def test_the_plan_covers_the_picture_once_in_aligned_tiles_within_the_budget(
    height: int, width: int, budget: int, halo: int
) -> None:
    tiles = plan_tiles(height, width, budget, halo, 4)
    covered = np.zeros((height, width), np.int8)
    for top, left, bottom, right in tiles:
        assert all(v % 4 == 0 for v in (top, left, bottom, right))
        covered[top:bottom, left:right] += 1
        grown = (min(bottom + halo, height) - max(top - halo, 0)) * (
            min(right + halo, width) - max(left - halo, 0)
        )
        assert grown <= budget
    assert (covered == 1).all()


def test_a_picture_within_the_budget_is_one_tile_and_a_budget_below_one_tile_is_refused() -> None:
    assert plan_tiles(300, 400, 300 * 400, 36, 4) == [(0, 0, 300, 400)]
    with pytest.raises(ValueError, match="at least 5776"):
        plan_tiles(300, 400, 5000, 36, 4)


# --- the tiles share the whole picture's normalisation ----------------------------------------


@pytest.mark.parametrize(("quantised", "levels"), [(False, 1), (True, 0)], ids=["float", "int8"])
def test_tiles_sharing_the_statistics_give_the_whole_pictures_pixels(
    quantised: bool, levels: int
) -> None:
    """The halos cover each stage's reach, and the reductions are the whole pass's: exactly
    where the graph quantises them (MLAS's integer arithmetic, as in Magenta's int8 graph);
    float means are summed in another order than onnxruntime's, so a pixel may round to the
    next level."""
    pair = normalised_pair(quantised)
    whole, tiled = FeedForward(pair, CPU, 1), FeedForward(pair, CPU, 1, tile_pixels=1)
    content, style = photo(1200, 900), photo(64, 64, seed=1)
    options = StyleOptions(width=1200, height=900)
    expected = np.asarray(whole.picture(content, [style], options), dtype=np.int16)
    tiles = tiled.tiles(1200, 900)
    assert len(tiles) >= 4 and whole.tiles(1200, 900) == []
    result = np.asarray(tiled.picture(content, [style], options))
    assert np.abs(result - expected).max() <= levels
    # Tiles normalised each by its own statistics disagree: that is what sharing prevents.
    naive = np.asarray(own_statistics(whole, content, style, tiles))
    assert np.abs(naive - expected).mean() > 2


def test_a_halo_short_of_a_stage_s_reach_changes_pixels() -> None:
    """The halos are needed, not merely generous: with none, pixels near the tile borders
    see the tile's mirror padding instead of their neighbours."""
    pair = normalised_pair(quantised=True)
    whole, tiled = FeedForward(pair, CPU, 1), FeedForward(pair, CPU, 1, tile_pixels=1)
    content, style = photo(720, 540), photo(64, 64, seed=1)
    options = StyleOptions(width=720, height=540)
    expected = np.asarray(whole.picture(content, [style], options))
    staged = tiled._staged_transform()
    assert staged is not None and staged.halo > 0
    for stage in staged._stages:
        stage.halo = 0
    assert not np.array_equal(np.asarray(tiled.picture(content, [style], options)), expected)


def test_regions_colour_preservation_and_odd_sizes_paint_the_same_in_tiles() -> None:
    """Every pass of a job (one per region's style) is tiled alike; sizes off the network's
    multiple are padded and cropped as in the whole pass."""
    pair = normalised_pair(quantised=True)
    whole, tiled = FeedForward(pair, CPU, 1), FeedForward(pair, CPU, 1, tile_pixels=1)
    width, height = 701, 523
    content = photo(width, height)
    styles = [photo(64, 64, seed=1), photo(64, 64, seed=2)]
    left = np.zeros((height, width), bool)
    left[:, : width // 2] = True
    options = StyleOptions(width=width, height=height, preserve_color=True, style_strength=0.7)
    expected = whole.picture(content, styles, options, regions=[left, ~left])
    assert len(tiled.tiles(width, height)) > 1
    result = tiled.picture(content, styles, options, regions=[left, ~left])
    assert result.size == (width, height)
    assert np.array_equal(np.asarray(result), np.asarray(expected))


def test_the_tiny_pair_tiles_too_and_small_budgets_are_raised() -> None:
    """The test servers' pair has no normalisation: one stage, no halo. A budget below
    MIN_INSTANT_TILE_PIXELS is raised to it rather than cutting the picture into slivers."""
    whole, tiled = FeedForward(tiny_pair(), CPU, 1), FeedForward(tiny_pair(), CPU, 1, tile_pixels=1)
    content, style = photo(800, 600), photo(64, 64, seed=1)
    options = StyleOptions(width=800, height=600)
    tiles = tiled.tiles(800, 600)
    assert 1 < len(tiles) <= -(-800 * 600 // MIN_INSTANT_TILE_PIXELS) + 1
    expected = np.asarray(whole.picture(content, [style], options))
    assert np.array_equal(np.asarray(tiled.picture(content, [style], options)), expected)


def test_a_cancelled_picture_stops_between_its_tiles() -> None:
    tiled = FeedForward(tiny_pair(), CPU, 1, tile_pixels=1)
    content, style = photo(800, 600), photo(64, 64, seed=1)
    options = StyleOptions(width=800, height=600)
    tiles = len(tiled.tiles(800, 600))
    assert tiles > 3
    cancel = SetAfter(checks=3)
    with pytest.raises(JobCancelled):
        tiled.picture(content, [style], options, cancel=cancel)
    # One look before the painting, then one before each tile: it stopped at the second tile.
    assert cancel.looks == 3
    # Unset, the same picture runs to its end.
    assert tiled.picture(content, [style], options, cancel=threading.Event()).size == (800, 600)


# --- memory ------------------------------------------------------------------------------------


def test_the_memory_prediction_follows_the_way_a_picture_is_painted() -> None:
    """Whole pictures grow by the whole pass's cost, tiled ones by the kept tensors' only; a
    picture over the plane limit is tiled (in INSTANT_TILE_PIXELS) even without a budget; region
    styles add their pictures and the blend."""
    mib = 1 << 20
    whole_4k, whole_12 = instant_peak_bytes(3840, 2160), instant_peak_bytes(4000, 3000)
    assert 1.5 * 2**30 < whole_12 < 2.5 * 2**30 and whole_12 > whole_4k
    tiled_12 = instant_peak_bytes(4000, 3000, tile_pixels=mib)
    assert tiled_12 < whole_12 / 2
    assert instant_peak_bytes(4000, 3000, tile_pixels=mib // 4) < tiled_12
    # 8K: in tiles either way, the budget's default standing in for None.
    eight_k = instant_peak_bytes(7680, 4320)
    assert 7680 * 4320 >= PLANE_LIMIT
    assert eight_k == instant_peak_bytes(7680, 4320, tile_pixels=INSTANT_TILE_PIXELS) < 2**30
    assert instant_peak_bytes(7680, 4320, styles=2) > eight_k
    # A picture within the budget runs (and is predicted) whole.
    assert instant_peak_bytes(1000, 800, tile_pixels=mib) == instant_peak_bytes(1000, 800)
    network = FeedForward(tiny_pair(), CPU, 1, tile_pixels=mib)
    assert network.peak_bytes(4000, 3000) == tiled_12


# --- the real networks -------------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_networks_tile_without_seams(feed_forward_cache: Path) -> None:
    """Magenta's int8 transform at 2048x1536 in tiles of MIN_INSTANT_TILE_PIXELS: the whole pass's
    pixels, and a seam measure within 5% of 1.0 over the 7 borders (1.02; on fewer borders the
    measure reads the picture's own lines, 0.95 to 1.07 at one border each way); tiles with
    their own statistics read about 3."""
    artifact = load_feed_forward("magenta-arbitrary", cache_dir=feed_forward_cache)
    whole = FeedForward(artifact, CPU, 2)
    tiled = FeedForward(artifact, CPU, 2, tile_pixels=MIN_INSTANT_TILE_PIXELS)
    width, height = 2048, 1536
    content, style = photo(width, height), Image.open(STARRY_NIGHT)
    options = StyleOptions(width=width, height=height)
    tiles = tiled.tiles(width, height)
    columns, rows = borders(tiles, width, height)
    assert len(columns) + len(rows) >= 6
    expected = whole.picture(content, [style], options)
    result = tiled.picture(content, [style], options)
    assert np.array_equal(np.asarray(result), np.asarray(expected))
    assert seam_ratio(result, columns, rows) == pytest.approx(1.0, abs=0.05)
    naive = own_statistics(whole, content, style, tiles)
    assert seam_ratio(naive, columns, rows) > 2
