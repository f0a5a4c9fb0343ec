"""The instant tier's transform network run in tiles that share one normalisation.

Why this exists: in onnxruntime a whole-picture pass of Magenta's transform costs about 0.15 GiB
per megapixel, and on the CPU it stops below 2**24 pixels, where MLAS's fused
QLinearGlobalAveragePool refuses the plane ("ImageSize too large"), so an 8K picture cannot be
made in one pass. Tiles with halos are the usual answer, but the network normalises every
channel over the whole picture (conditional instance normalisation, Ghiasi et al. 2017): tiles
normalised by their own statistics disagree at their borders, and statistics taken from a
smaller copy of the picture, or re-estimated from the tiles, change the result (measured: a
mean of 12/255 off, and the re-estimation diverges).

So the graph is cut at its picture-wide reductions (the GlobalAveragePool of each normalisation's
mean and variance). Between two cuts every operation reaches only a few pixels, so a stage runs
tile by tile with a halo that covers its reach; the tensors that cross a cut are kept for the
whole picture (int8 where the graph quantises them: a few bytes a pixel), and each reduction is
computed from them as the whole pass computes it (MLAS's integer arithmetic included). The
tiles therefore share the whole picture's statistics, and the stitched result is the whole
pass's: bit for bit where the graph quantises its statistics, as Magenta's int8 graph does
(float statistics are summed in another order than onnxruntime's: a pixel may round to the next
level). It costs no more time (the tiles' working set stays in cache) and about 20 bytes a
pixel besides the tile's working set (``feed_forward.instant_peak_bytes``).

Generic over graphs whose only picture-wide operations are GlobalAveragePools; one with any
other (``_GLOBAL_OPS``) raises ``Unsupported`` at build, and the caller runs it whole.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from styleserve_server.engine.records import stop_if_cancelled

__all__ = [
    "PLANE_LIMIT",
    "Box",
    "StagedTransform",
    "Unsupported",
    "plan_tiles",
    "to_rgb",
]

# MLAS's QLinearGlobalAveragePool, which onnxruntime's CPU provider fuses each quantised
# normalisation's mean into, refuses planes of this many pixels or more.
PLANE_LIMIT = 1 << 24

# Operations that mix positions across the picture without being a reduction this module
# reproduces: a graph that applies one to a picture-sized tensor runs whole only.
_GLOBAL_OPS = frozenset(
    {
        "ArgMax",
        "ArgMin",
        "ConvTranspose",
        "CumSum",
        "DepthToSpace",
        "Gather",
        "GatherElements",
        "GatherND",
        "GroupNormalization",
        "Hardmax",
        "InstanceNormalization",
        "LayerNormalization",
        "LogSoftmax",
        "LpNormalization",
        "MeanVarianceNormalization",
        "Slice",
        "Softmax",
        "SpaceToDepth",
        "Split",
        "Tile",
        "TopK",
    }
)
_WINDOWED_OPS = frozenset({"AveragePool", "Conv", "LpPool", "MaxPool"})
_UPSAMPLING_OPS = frozenset({"Resize", "Upsample"})
# How many rows a padding may add for its tensor still to count as picture-sized (padding is
# covered by the halo: windows add their whole span).
_SLACK = 16

Box = tuple[int, int, int, int]  # top, left, bottom, right, in pixels of the full-size picture


class Unsupported(Exception):
    """The graph has a shape this module cannot cut into tiles (it then runs whole)."""


def to_rgb(out: np.ndarray) -> np.ndarray:
    """The network's (H, W, 3) output in 0..1 as uint8 pixels."""
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def plan_tiles(height: int, width: int, tile_pixels: int, halo: int, multiple: int) -> list[Box]:
    """The tiles, aligned to ``multiple``, that cover a ``height`` x ``width`` picture with the
    least work (tile pixels including halos) while no tile with its ``halo`` on each inner side
    has more than ``tile_pixels`` pixels."""
    if height % multiple or width % multiple:
        raise ValueError(f"{height}x{width} is not a multiple of {multiple}")

    def side(length: int, parts: int) -> int:
        return math.ceil(length / parts / multiple) * multiple

    def extent(length: int, parts: int) -> int:
        # The largest tile with its halos: edge tiles have one, inner tiles two.
        return side(length, parts) + halo * min(parts - 1, 2)

    best: tuple[tuple[int, int], int, int] | None = None
    for rows in range(1, height // multiple + 1):
        tall = extent(height, rows)
        cols = next((c for c in (1, 2) if tall * extent(width, c) <= tile_pixels), None)
        if cols is None:
            narrow = (tile_pixels // tall - 2 * halo) // multiple * multiple
            if narrow < multiple:
                continue
            cols = max(3, math.ceil(width / narrow))
        work = (height + 2 * halo * (rows - 1)) * (width + 2 * halo * (cols - 1))
        if best is None or (work, rows * cols) < best[0]:
            best = ((work, rows * cols), rows, cols)
        elif (height + 2 * halo * (rows - 1)) * width > best[0][0]:
            break  # more rows only add halo work
    if best is None:
        raise ValueError(
            f"a tile budget of {tile_pixels} pixels cannot hold a {multiple}x{multiple} tile "
            f"with its {halo}-pixel halos: give at least {(multiple + 2 * halo) ** 2}"
        )
    _, rows, cols = best
    tall, wide = side(height, rows), side(width, cols)
    ys = sorted({min(r * tall, height) for r in range(rows + 1)})
    xs = sorted({min(c * wide, width) for c in range(cols + 1)})
    return [
        (top, left, bottom, right)
        for top, bottom in itertools.pairwise(ys)
        for left, right in itertools.pairwise(xs)
    ]


@dataclass(frozen=True)
class _Spatial:
    """Where a picture-sized tensor keeps its rows and columns, and at what scale."""

    factor: int  # full-size pixels per pixel of this tensor, along each side
    axis: int  # of its rows; its columns follow
    grown: int  # rows (and columns) added by padding, only inside a stage
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    def crop(self, value: np.ndarray, box: Box) -> np.ndarray:
        top, left, bottom, right = (v // self.factor for v in box)
        index = [slice(None)] * value.ndim
        index[self.axis] = slice(top, bottom)
        index[self.axis + 1] = slice(left, right)
        return value[tuple(index)]

    def empty(self, height: int, width: int) -> np.ndarray:
        shape = list(self.shape)
        shape[self.axis], shape[self.axis + 1] = height // self.factor, width // self.factor
        return np.empty(shape, self.dtype)


@dataclass(frozen=True)
class _Reduction:
    """A GlobalAveragePool over the picture, summed tile by tile; quantised as MLAS does when
    the graph wraps it in DequantizeLinear/QuantizeLinear (onnxruntime then runs one fused
    kernel on the int8 tensor, which is what the whole pass computes)."""

    source: str
    output: str
    quantised: tuple[float, int, float, int] | None  # input scale and zero point, output's

    def add(self, total: np.ndarray | None, part: np.ndarray) -> np.ndarray:
        """``total`` with the sums of a tile's own (N, C, h, w) ``part`` added, exactly (int64
        for integers, float64 otherwise)."""
        kind = np.int64 if self.quantised is not None else np.float64
        sums = part.sum(axis=(2, 3), keepdims=True, dtype=kind)
        return sums if total is None else total + sums

    def finish(self, total: np.ndarray, size: int, dtype: np.dtype[Any]) -> np.ndarray:
        """The average of ``size`` pixels summing to ``total``, as the graph's ``dtype``."""
        if self.quantised is None:
            return (total / size).astype(dtype)
        in_scale, in_zero, out_scale, out_zero = self.quantised
        # MLAS: float32 throughout, clamped, rounded half to even, offset by the zero point.
        scale = np.float32(in_scale) / (np.float32(out_scale) * np.float32(size))
        shifted = (total - in_zero * size).astype(np.float32)
        info = np.iinfo(dtype)
        scaled = np.clip(shifted * scale, info.min - out_zero, info.max - out_zero)
        return (np.rint(scaled) + out_zero).astype(dtype)


@dataclass
class _Stage:
    session: ort.InferenceSession
    inputs: list[str]
    outputs: list[str]
    halo: int  # full-size pixels each tile reads beyond its own on every inner side
    tiled: bool  # False: no picture-sized input, run once
    reductions: list[_Reduction]  # of tensors this stage makes
    keep: list[str]  # picture-sized outputs that later stages read
    release: list[str]  # kept tensors that no later stage reads


def _grown(box: Box, halo: int, height: int, width: int) -> Box:
    """``box`` with ``halo`` pixels more on each side that is inside the picture."""
    top, left, bottom, right = box
    return (
        max(top - halo, 0),
        max(left - halo, 0),
        min(bottom + halo, height),
        min(right + halo, width),
    )


def _attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _constant(
    initializers: dict[str, onnx.TensorProto], node: onnx.NodeProto, index: int
) -> float | None:
    """A (De)QuantizeLinear's scale (1) or zero point (2) where it is one constant number; a
    missing zero point is 0."""
    if index >= len(node.input) or not node.input[index]:
        return 0.0 if index == 2 else None
    if node.input[index] not in initializers:
        return None
    value = numpy_helper.to_array(initializers[node.input[index]])
    return float(value.item()) if value.size == 1 else None


class StagedTransform:
    """The transform graph cut at its reductions into stages that run tile by tile.

    Built once per process (a few dozen small sessions); ``run`` is thread-safe like
    onnxruntime's ``run``.
    """

    def __init__(
        self,
        transform: bytes,
        *,
        content: str,
        vector: str,
        multiple: int,
        options: ort.SessionOptions,
        providers: Sequence[str | tuple[str, dict[str, str]]],
    ) -> None:
        self._content, self._vector, self.multiple = content, vector, multiple
        model = onnx.load_from_string(transform)
        graph = model.graph
        if len(graph.output) != 1:
            raise Unsupported("the transform graph has more than one output")
        self._output = graph.output[0].name
        nodes = list(graph.node)
        initializers = {i.name: i for i in graph.initializer}
        producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
        consumers: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            for name in node.input:
                consumers.setdefault(name, []).append(i)

        picture = {content}  # tensors that depend on the content picture
        for node in nodes:
            if picture.intersection(node.input):
                picture.update(node.output)

        reductions, skipped = self._reductions(nodes, picture, producer, consumers, initializers)
        by_output = {r.output: r for r in reductions}
        # A tensor's level: how many reductions stand between it and the content picture.
        level: dict[str, int] = {content: 0}
        node_level: dict[int, int] = {}
        for i, node in enumerate(nodes):
            if i in skipped:
                for out in node.output:
                    if out in by_output:
                        level[out] = level[by_output[out].source] + 1
                continue
            levels = [level[name] for name in node.input if name in level]
            if levels:
                node_level[i] = max(levels)
                level.update(dict.fromkeys((o for o in node.output if o), node_level[i]))
        if self._output not in level:
            raise Unsupported("the transform's output does not depend on the content picture")

        members = self._members(nodes, node_level, picture, producer, initializers)
        # Backwards, so that each stage makes only what later stages and reductions read.
        plans: dict[int, tuple[list[int], list[str], list[str]]] = {}
        read_later = {self._output}
        for stage in sorted(members, reverse=True):
            indices = sorted(members[stage])
            made = {out for i in indices for out in nodes[i].output if out}
            sources = {r.source for r in reductions if level[r.source] == stage}
            targets = (read_later | sources) & made
            kept, need = [], set(targets)
            for i in reversed(indices):
                if need.intersection(nodes[i].output):
                    kept.append(i)
                    need.update(n for n in nodes[i].input if n)
            kept.reverse()
            made = {out for i in kept for out in nodes[i].output if out}
            inputs = list(
                dict.fromkeys(
                    name
                    for i in kept
                    for name in nodes[i].input
                    if name and name not in made and name not in initializers
                )
            )
            plans[stage] = (kept, inputs, sorted(targets))
            read_later.update(inputs)

        graph_inputs = {content, vector}
        seen = {n for kept, inputs, _ in plans.values() for i in kept for n in nodes[i].output}
        seen.update(n for _, inputs, _ in plans.values() for n in inputs)
        self._spatial, dtypes = self._discover(model, seen - graph_inputs - {""})
        for _, inputs, outputs in plans.values():
            for name in inputs + outputs:
                if name in self._spatial and self._spatial[name].grown:
                    raise Unsupported(f"{name!r} crosses a reduction padded")
                crossing = name in picture and name not in self._spatial
                if crossing and not self._only_reductions(name, nodes, producer, by_output):
                    raise Unsupported(f"{name!r} crosses a reduction but is not picture-sized")

        last_read: dict[str, int] = {}
        for stage, (_, inputs, _) in plans.items():
            for name in inputs:
                last_read[name] = max(last_read.get(name, -1), stage)
        self._dtypes = {
            r.output: helper.tensor_dtype_to_np_dtype(dtypes[r.output]) for r in reductions
        }
        self._stages: list[_Stage] = []
        for stage in sorted(plans):
            kept, inputs, outputs = plans[stage]
            stage_nodes = [nodes[i] for i in kept]
            data = self._stage_model(model, stage_nodes, inputs, outputs, initializers, dtypes)
            self._stages.append(
                _Stage(
                    session=ort.InferenceSession(data, options, providers=list(providers)),
                    inputs=inputs,
                    outputs=outputs,
                    halo=self._halo(nodes, kept, initializers),
                    tiled=any(name in self._spatial for name in inputs),
                    reductions=[r for r in reductions if level[r.source] == stage],
                    keep=[n for n in outputs if last_read.get(n, stage) > stage],
                    release=sorted(
                        n for n, last in last_read.items() if last == stage and n in self._spatial
                    ),
                )
            )
        self.halo = max(s.halo for s in self._stages)

    # --- building -------------------------------------------------------------------------

    @staticmethod
    def _reductions(
        nodes: list[onnx.NodeProto],
        picture: set[str],
        producer: dict[str, int],
        consumers: dict[str, list[int]],
        initializers: dict[str, onnx.TensorProto],
    ) -> tuple[list[_Reduction], set[int]]:
        """Every GlobalAveragePool over the picture, and the nodes it replaces."""
        reductions: list[_Reduction] = []
        skipped: set[int] = set()
        for i, node in enumerate(nodes):
            if node.op_type != "GlobalAveragePool" or node.input[0] not in picture:
                continue
            skipped.add(i)
            before = nodes[producer[node.input[0]]] if node.input[0] in producer else None
            after = [nodes[c] for c in consumers.get(node.output[0], [])]
            if (
                before is not None
                and before.op_type == "DequantizeLinear"
                and len(after) == 1
                and after[0].op_type == "QuantizeLinear"
            ):
                q = after[0]
                values = [_constant(initializers, n, k) for n in (before, q) for k in (1, 2)]
                if None not in values:
                    in_scale, in_zero, out_scale, out_zero = (float(v or 0) for v in values)
                    quantised = (in_scale, int(in_zero), out_scale, int(out_zero))
                    skipped.add(consumers[node.output[0]][0])
                    reductions.append(_Reduction(before.input[0], q.output[0], quantised))
                    continue
            reductions.append(_Reduction(node.input[0], node.output[0], None))
        return reductions, skipped

    @staticmethod
    def _members(
        nodes: list[onnx.NodeProto],
        node_level: dict[int, int],
        picture: set[str],
        producer: dict[str, int],
        initializers: dict[str, onnx.TensorProto],
    ) -> dict[int, set[int]]:
        """Each stage's nodes: those of its level, the constant and style-vector nodes they
        need (cheap, recomputed per tile), and the dequantisations of earlier stages' int8
        tensors (so that what is kept for the whole picture stays int8, and onnxruntime fuses
        the same quantised kernels as in the whole graph)."""
        members: dict[int, set[int]] = {}
        for i, stage in node_level.items():
            members.setdefault(stage, set()).add(i)
        for stage, indices in members.items():
            pending = list(indices)
            while pending:
                for name in nodes[pending.pop()].input:
                    if not name or name in initializers or name not in producer:
                        continue
                    source = producer[name]
                    if source in indices or (source not in node_level and name in picture):
                        continue  # made here, or a reduction's output
                    earlier_dq = (
                        nodes[source].op_type == "DequantizeLinear"
                        and node_level.get(source, stage) < stage
                    )
                    if name not in picture or earlier_dq:
                        indices.add(source)
                        pending.append(source)
        return members

    @staticmethod
    def _only_reductions(
        name: str,
        nodes: list[onnx.NodeProto],
        producer: dict[str, int],
        by_output: dict[str, _Reduction],
    ) -> bool:
        """Whether ``name`` reaches the picture only through reductions (the same in every
        tile, so any tile's copy will do)."""
        pending, seen = [name], set()
        while pending:
            current = pending.pop()
            if current in by_output or current in seen:
                continue
            seen.add(current)
            if current not in producer:
                return False  # the content picture itself
            pending.extend(n for n in nodes[producer[current]].input if n)
        return True

    def _discover(
        self, model: onnx.ModelProto, names: Iterable[str]
    ) -> tuple[dict[str, _Spatial], dict[str, int]]:
        """Every tensor's type, and for picture-sized ones their layout and scale, from one run
        on a small picture whose sides no channel count can be mistaken for."""
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        known = {o.name for o in probe.graph.output}
        for name in sorted(set(names) - known):
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        # Prime sides, far from each other, so that no padded side is mistaken for another.
        height, width = 37 * self.multiple, 61 * self.multiple
        rng = np.random.default_rng(0)
        (vector,) = (i for i in model.graph.input if i.name == self._vector)
        shape = [d.dim_value or 1 for d in vector.type.tensor_type.shape.dim]
        feeds = {
            self._content: rng.random((1, height, width, 3), dtype=np.float32),
            self._vector: rng.standard_normal(shape).astype(np.float32),
        }
        outputs = [o.name for o in session.get_outputs()]
        values = dict(zip(outputs, session.run(None, feeds), strict=True))
        values[self._content] = feeds[self._content]
        factors = [f for f in range(1, self.multiple + 1) if self.multiple % f == 0]
        spatial: dict[str, _Spatial] = {}
        dtypes: dict[str, int] = {}
        for name, value in values.items():
            value = np.asarray(value)
            dtypes[name] = helper.np_dtype_to_tensor_dtype(value.dtype)
            # Rows and columns grown by the same padding on both (a mirror pad before a conv).
            found = [
                (abs(grown), factor, axis, grown)
                for factor in factors
                for axis in range(value.ndim - 1)
                for grown in [value.shape[axis] - height // factor]
                if value.shape[axis + 1] - width // factor == grown and abs(grown) <= _SLACK
            ]
            if found:
                _, factor, axis, grown = min(found)
                spatial[name] = _Spatial(factor, axis, grown, value.shape, value.dtype)
        return spatial, dtypes

    def _halo(
        self,
        nodes: list[onnx.NodeProto],
        indices: list[int],
        initializers: dict[str, onnx.TensorProto],
    ) -> int:
        """How far (full-size pixels) a stage's outputs reach into its inputs: windows add
        their whole span (which covers padding on either side) and one output pixel for stride
        alignment; nearest/linear upsampling adds one input pixel."""
        reach: dict[str, int] = {}
        spatial = self._spatial
        for i in indices:
            node = nodes[i]
            inputs = [n for n in node.input if n in spatial]
            if not inputs:
                continue
            far = max(reach.get(n, 0) for n in inputs)
            if node.op_type in _GLOBAL_OPS:
                raise Unsupported(f"{node.op_type} {node.name!r} mixes the whole picture")
            if node.op_type in _WINDOWED_OPS:
                kernel = _attribute(node, "kernel_shape", None)
                if kernel is None and node.input[1] in initializers:
                    kernel = list(initializers[node.input[1]].dims[2:])
                if kernel is None:
                    raise Unsupported(f"{node.op_type} {node.name!r} has no known kernel size")
                dilation = max(_attribute(node, "dilations", [1]))
                factor_out = spatial[node.output[0]].factor if node.output[0] in spatial else 1
                far += (max(kernel) - 1) * dilation * spatial[node.input[0]].factor + factor_out
            elif node.op_type in _UPSAMPLING_OPS:
                far += spatial[node.input[0]].factor
            for out in node.output:
                if out in spatial:
                    reach[out] = far
                elif out and node.op_type != "Shape":
                    raise Unsupported(f"{node.op_type} {node.name!r} folds the picture's rows")
        far = max(reach.values(), default=0)
        return math.ceil(far / self.multiple) * self.multiple

    @staticmethod
    def _stage_model(
        model: onnx.ModelProto,
        nodes: list[onnx.NodeProto],
        inputs: list[str],
        outputs: list[str],
        initializers: dict[str, onnx.TensorProto],
        dtypes: dict[str, int],
    ) -> bytes:
        used = {name for node in nodes for name in node.input}
        graph = helper.make_graph(
            nodes,
            "stage",
            [helper.make_tensor_value_info(n, dtypes.get(n, onnx.TensorProto.FLOAT), None)
             for n in inputs],
            [helper.make_tensor_value_info(n, dtypes[n], None) for n in outputs],
            [initializers[n] for n in sorted(used & initializers.keys())],
        )  # fmt: skip
        stage = helper.make_model(
            graph, opset_imports=list(model.opset_import), ir_version=model.ir_version
        )
        return stage.SerializeToString()

    # --- running ----------------------------------------------------------------------------

    def run(
        self,
        pixels: np.ndarray,
        vector: np.ndarray,
        tile_pixels: int,
        cancel: threading.Event | None = None,
    ) -> np.ndarray:
        """The (H, W, 3) uint8 ``pixels`` (sides a multiple of ``multiple``) rendered with
        ``vector`` in tiles of at most ``tile_pixels`` pixels, halos included. Raises
        JobCancelled before the next tile's pass once ``cancel`` is set: an 8K picture takes
        some twenty seconds, which a cancelled call should not hold its slot for."""
        height, width = pixels.shape[:2]
        tiles = plan_tiles(height, width, tile_pixels, self.halo, self.multiple)
        kept: dict[str, np.ndarray] = {}  # picture-sized tensors that later stages read
        small: dict[str, np.ndarray] = {}  # reductions, and what only they derive
        result = np.empty((height, width, 3), np.uint8)
        whole: Box = (0, 0, height, width)
        for stage in self._stages:
            totals: dict[str, np.ndarray | None] = dict.fromkeys(r.output for r in stage.reductions)
            for box in tiles if stage.tiled else [whole]:
                top, left, bottom, right = box
                region = _grown(box, stage.halo, height, width)
                inner = (top - region[0], left - region[1], bottom - region[0], right - region[1])
                stop_if_cancelled(cancel)
                made = self._run_tile(stage, region, pixels, vector, kept, small)
                values = dict(zip(stage.outputs, made, strict=True))
                for name, value in values.items():
                    if name == self._output:
                        rgb = to_rgb(self._spatial[name].crop(value, inner)[0])
                        result[top:bottom, left:right] = rgb
                    elif name in stage.keep and name in self._spatial:
                        meta = self._spatial[name]
                        if name not in kept:
                            kept[name] = meta.empty(height, width)
                        meta.crop(kept[name], box)[...] = meta.crop(value, inner)
                    elif name in stage.keep:
                        small.setdefault(name, value)
                for reduction in stage.reductions:
                    part = self._spatial[reduction.source].crop(values[reduction.source], inner)
                    totals[reduction.output] = reduction.add(totals[reduction.output], part)
            for reduction in stage.reductions:
                total = totals[reduction.output]
                assert total is not None
                factor = self._spatial[reduction.source].factor
                size = (height // factor) * (width // factor)
                small[reduction.output] = reduction.finish(
                    total, size, self._dtypes[reduction.output]
                )
            for name in stage.release:
                kept.pop(name, None)
        return result

    def _run_tile(
        self,
        stage: _Stage,
        region: Box,
        pixels: np.ndarray,
        vector: np.ndarray,
        kept: dict[str, np.ndarray],
        small: dict[str, np.ndarray],
    ) -> list[np.ndarray]:
        """One stage on ``region`` (a tile with its halos)."""
        feeds = {}
        for name in stage.inputs:
            if name == self._content:
                y0, x0, y1, x1 = region
                content = pixels[np.newaxis, y0:y1, x0:x1].astype(np.float32)
                content /= 255.0
                feeds[name] = content
            elif name == self._vector:
                feeds[name] = vector
            elif name in kept:
                feeds[name] = np.ascontiguousarray(self._spatial[name].crop(kept[name], region))
            else:
                feeds[name] = small[name]
        return list(stage.session.run(stage.outputs, feeds))
