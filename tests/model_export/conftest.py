"""Small real weight files in every format the exporter reads, built fresh for each test.

The networks are VGG-shaped with 1/16 of the channels, so every file is tiny and every
export runs in a fraction of a second; the code paths are the ones real weights take.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file
from styleserve_export.vgg import VGGFeatures

DIVISOR = 16
# torchvision's ``cfgs["D"]`` (VGG16): channel counts, "M" for a max-pool.
TORCHVISION_CFG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
TORCHVISION_CFG_D += [512, 512, 512, "M"]


@pytest.fixture
def torchvision_net() -> torch.nn.Sequential:
    """torchvision's ``vgg16().features`` (1/16 channels), written out here: no torchvision."""
    torch.manual_seed(1)
    layers: list[torch.nn.Module] = []
    c_in = 3
    for v in TORCHVISION_CFG_D:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(c_in, int(v) // DIVISOR, 3, padding=1), torch.nn.ReLU()]
            c_in = int(v) // DIVISOR
    return torch.nn.Sequential(*layers).eval()


def keras_onnx_model(net: VGGFeatures) -> onnx.ModelProto:
    """A Keras-layout (tf2onnx-style) ONNX graph of ``net``: NHWC input, NCHW convolutions."""
    nodes = [helper.make_node("Transpose", ["input"], ["x0"], perm=[0, 3, 1, 2])]
    inits, x, block = [], "x0", "block1"
    for layer in net.layer_names:
        scope = f"functional_1/{layer}_1"
        if not layer.startswith(block + "_"):
            nodes.append(
                helper.make_node("MaxPool", [x], [f"{x}_pool"], kernel_shape=[2, 2], strides=[2, 2])
            )
            x, block = f"{x}_pool", layer.split("_")[0]
        conv = net.get_submodule(layer)
        weight, bias = f"{scope}/convolution/ReadVariableOp:0", f"{scope}/Squeeze:0"
        inits += [
            numpy_helper.from_array(conv.weight.detach().numpy(), weight),
            numpy_helper.from_array(conv.bias.detach().numpy(), bias),
        ]
        nodes += [
            helper.make_node(
                "Conv",
                [x, weight, bias],
                [f"{scope}/BiasAdd:0"],
                name=f"{scope}/BiasAdd",
                pads=[1, 1, 1, 1],
            ),
            helper.make_node(
                "Relu", [f"{scope}/BiasAdd:0"], [f"{scope}/Relu:0"], name=f"{scope}/Relu"
            ),
        ]
        x = f"{scope}/Relu:0"
    graph = helper.make_graph(
        nodes,
        "tiny_keras_vgg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 32, 32, 3])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        inits,
    )
    # IR version 8 (what tf2onnx writes): onnxruntime refuses IRs newer than it knows.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.fixture
def tiny_net() -> VGGFeatures:
    net = VGGFeatures("vgg16", channel_divisor=DIVISOR)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # non-zero biases, so a bias mix-up cannot go unnoticed
        for p in net.parameters():
            if p.ndim == 1:
                p.uniform_(-0.5, 0.5, generator=generator)
    return net.eval()


@pytest.fixture
def tiny_pth(tmp_path: Path, torchvision_net: torch.nn.Sequential) -> Path:
    """A torchvision-layout VGG16 state dict (features.N keys plus a classifier).

    Saved in torch's legacy (pre-zip) format, as torchvision's published VGG files are.
    """
    state = torchvision_net.state_dict()
    state = {f"features.{k}": v for k, v in state.items()}
    state["classifier.0.weight"] = torch.zeros(4, 8)  # real files carry the head too
    path = tmp_path / "tiny-vgg16.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture
def tiny_safetensors(tmp_path: Path, tiny_net: VGGFeatures) -> Path:
    path = tmp_path / "tiny-vgg16.safetensors"
    save_file(tiny_net.state_dict(), path)
    return path


@pytest.fixture
def tiny_onnx_model(tiny_net: VGGFeatures) -> onnx.ModelProto:
    return keras_onnx_model(tiny_net)


@pytest.fixture
def tiny_onnx(tmp_path: Path, tiny_onnx_model: onnx.ModelProto) -> Path:
    path = tmp_path / "tiny-vgg16.onnx"
    onnx.save(tiny_onnx_model, path)
    return path
