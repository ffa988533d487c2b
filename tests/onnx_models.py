"""Tiny ONNX image models with known weights, and numpy references for what they compute.

A 3x3 convolution (4 output channels, padding 1), ReLU, then global average pooling: small
enough to compute independently in numpy, real enough to exercise every part of the pipeline.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT_CHANNELS = 4
_rng = np.random.default_rng(1234)
WEIGHT = _rng.normal(0, 0.5, (OUT_CHANNELS, 3, 3, 3)).astype(np.float32)
BIAS = np.array([0.1, -0.05, 0.2, 0.0], dtype=np.float32)


def _finish(nodes, inputs, outputs, initializers, ir_version=8, opset=17) -> bytes:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version  # onnx writes an IR version newer than onnxruntime reads
    onnx.checker.check_model(model)
    return model.SerializeToString()


def conv_net(height: int | str = 16, width: int | str = 16, *, layout: str = "NCHW", output: str = "pooled",
             batch: int | str = "N", extra_dims: int = 0) -> bytes:
    """``output``: pooled (N, 4), feature_map (N, 4, H, W) or tokens (N, H*W, 4).
    ``extra_dims`` > 0 appends a MatMul to that many dimensions (for size limits)."""
    shape = [batch, 3, height, width] if layout == "NCHW" else [batch, height, width, 3]
    nodes, inits = [], [numpy_helper.from_array(WEIGHT, "w"), numpy_helper.from_array(BIAS, "b")]
    x = "pixel_values"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [helper.make_node("Conv", [x, "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["conv"], ["relu"])]
    if output == "pooled":
        nodes += [helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
                  helper.make_node("Flatten", ["gap"], ["embedding" if not extra_dims else "flat"])]
        out_shape: list = [batch, OUT_CHANNELS]
        if extra_dims:
            inits.append(numpy_helper.from_array(np.ones((OUT_CHANNELS, extra_dims), np.float32), "proj"))
            nodes.append(helper.make_node("MatMul", ["flat", "proj"], ["embedding"]))
            out_shape = [batch, extra_dims]
    elif output == "feature_map":
        nodes.append(helper.make_node("Identity", ["relu"], ["embedding"]))
        out_shape = [batch, OUT_CHANNELS, height, width]
    elif output == "tokens":
        inits.append(numpy_helper.from_array(np.array([0, OUT_CHANNELS, -1], np.int64), "tok_shape"))
        nodes += [helper.make_node("Reshape", ["relu", "tok_shape"], ["seq"]),
                  helper.make_node("Transpose", ["seq"], ["embedding"], perm=[0, 2, 1])]
        out_shape = [batch, "T", OUT_CHANNELS]
    else:
        raise ValueError(output)
    return _finish(nodes, [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, shape)],
                   [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, out_shape)], inits)


def two_input_model() -> bytes:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3, 8, 8])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3, 8, 8])
    out = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 3, 8, 8])
    return _finish([helper.make_node("Add", ["a", "b"], ["sum"])], [a, b], [out], [])


def grayscale_model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 1, 1])
    return _finish([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [x], [y], [])


def nan_model() -> bytes:
    """log(x - 10) of normalised pixels is NaN everywhere."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    inits = [numpy_helper.from_array(np.array(10.0, np.float32), "ten")]
    nodes = [helper.make_node("Sub", ["x", "ten"], ["s"]), helper.make_node("Log", ["s"], ["l"]),
             helper.make_node("GlobalAveragePool", ["l"], ["g"]), helper.make_node("Flatten", ["g"], ["y"])]
    return _finish(nodes, [x], [y], inits)


# ---------------------------------------------------------------- numpy references


def conv_features(chw: np.ndarray) -> np.ndarray:
    """ReLU(conv3x3(chw) + b), shape (4, H, W), computed directly in float64."""
    padded = np.pad(chw.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))  # (3, H, W, 3, 3)
    conv = np.einsum("chwij,ocij->ohw", windows, WEIGHT.astype(np.float64)) + BIAS[:, None, None]
    return np.maximum(conv, 0)


def l2(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def pooled_embedding(chw: np.ndarray) -> np.ndarray:
    return l2(conv_features(chw).mean(axis=(1, 2)))
