"""Reads a Keras VGG exported to ONNX (tf2onnx layout) and checks a torch network against it.

ONNX keeps convolution weights as (Cout, Cin, kH, kW), torch's own layout, so conversion is a
rename; the channel order stays BGR, as Keras trained it, and the artifact says so. The parity
check runs the source graph itself in onnxruntime, which catches any layout or padding mistake
that a weight-by-weight comparison could not.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from styleserve_export.artifact import KERAS_NORMALIZATION
from styleserve_export.errors import ExportError
from styleserve_export.vgg import VGGFeatures

__all__ = ["PARITY_LIMIT", "conv_state", "parity", "parse"]

# Max abs error over max abs activation of the deepest layer; float32 reorderings stay ~1e-6.
PARITY_LIMIT = 1e-4
_LAYER = re.compile(r"block\d+_conv\d+")
# Spatial size when the ONNX input does not fix one (the wheel's model fixes 240x240).
_DEFAULT_SIZE = 64


def parse(
    data: bytes, origin: str, fix: str = "give an intact Keras-layout VGG ONNX file"
) -> onnx.ModelProto:
    try:
        return onnx.load_from_string(data)
    except Exception as err:  # protobuf raises several unrelated types for garbage input
        raise ExportError(
            f"{origin} is not a readable ONNX model ({type(err).__name__}): {fix}"
        ) from err


def _convs(model: onnx.ModelProto) -> list[tuple[str, onnx.NodeProto]]:
    convs = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            match = _LAYER.search(node.name) or _LAYER.search(node.input[1])
            convs.append((match.group(0) if match else node.name, node))
    return convs


def conv_state(model: onnx.ModelProto, origin: str) -> dict[str, torch.Tensor]:
    """``{block{b}_conv{c}.weight/.bias: tensor}`` of every convolution, in graph order."""
    initializers = {init.name: init for init in model.graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for layer, node in _convs(model):
        inputs = list(node.input[1:3])
        if (
            not _LAYER.fullmatch(layer)
            or len(inputs) != 2
            or not set(inputs) <= initializers.keys()
        ):
            raise ExportError(
                f"{origin}: convolution {node.name!r} is not a Keras VGG layer with constant "
                "weight and bias: give a Keras-layout VGG ONNX file (tf2onnx export)"
            )
        for kind, name in zip(("weight", "bias"), inputs, strict=True):
            state[f"{layer}.{kind}"] = torch.from_numpy(
                numpy_helper.to_array(initializers[name]).copy()
            )
    return state


def parity(model: onnx.ModelProto, net: VGGFeatures, seed: int = 0) -> float:
    """Max abs error / max abs activation of ``net``'s deepest layer against the ONNX graph.

    The input is a seeded random image preprocessed as Keras does (BGR, minus the mean, 0-255);
    the ONNX graph takes it NHWC, the torch network NCHW.
    """
    deepest = net.layer_names[-1]
    conv = dict(_convs(model))[deepest]
    relu = next(
        (n for n in model.graph.node if n.op_type == "Relu" and n.input[0] == conv.output[0]), None
    )
    if relu is None:
        raise ExportError(
            f"{deepest} in the ONNX graph has no ReLU after it: the file is not a plain Keras VGG; "
            "give a Keras-layout VGG ONNX file"
        )
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]  # only the probed activation: the classifier head is not computed
    probe.graph.output.append(
        onnx.helper.make_tensor_value_info(relu.output[0], onnx.TensorProto.FLOAT, None)
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        graph_input = session.get_inputs()[0]
        _, height, width, _ = (
            d if isinstance(d, int) else _DEFAULT_SIZE for d in graph_input.shape
        )
        rng = np.random.default_rng(seed)
        pixels = rng.uniform(0.0, 255.0, size=(1, height, width, 3))
        x = (pixels - np.asarray(KERAS_NORMALIZATION.mean)).astype(np.float32)
        (reference,) = session.run([relu.output[0]], {graph_input.name: x})
    except Exception as err:  # onnxruntime's errors share no useful base class
        raise ExportError(
            f"onnxruntime cannot run the source ONNX graph ({str(err).splitlines()[0]}): "
            "re-export it with an older ONNX IR/opset, or use a .safetensors/.pth source"
        ) from err
    with torch.no_grad():
        ours = net(torch.from_numpy(x).permute(0, 3, 1, 2), [deepest])[deepest].numpy()
    if ours.shape != reference.shape:
        raise ExportError(
            f"the converted {deepest} has shape {ours.shape}, the ONNX graph {reference.shape}: "
            "the ONNX file is not a plain Keras VGG; give a Keras-layout VGG ONNX file"
        )
    return float(np.abs(ours - reference).max() / max(float(np.abs(reference).max()), 1e-12))
