"""Stand-ins for real ONNX image models, for comparing pipelines on the same weights.

The real weights cannot be downloaded, so these are small nets with the real models' input name
and geometry (``pixel_values``, ``N x 3 x 224 x 224``) and output shape. Only the preprocessing is
under test, so what matters is that the output depends on every pixel *and on where it is*: a
patchify convolution (16 x 16 patches), ReLU, and a dense projection of the flattened patch grid.
Global average pooling would hide a one-pixel shift of the crop; this projection does not.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PATCH = 16
CHANNELS = 4


def patch_net(size: int = 224, dims: int = 512, *, output: str = "image_embeds", as_feature_map: bool = False,
              seed: int = 0) -> bytes:
    """``(N, 3, size, size)`` -> ``(N, dims)``, or ``(N, dims, 1, 1)`` with ``as_feature_map``.

    Deterministic weights (``seed``), opset 17, IR version 8 (what onnxruntime reads).
    """
    rng = np.random.default_rng(seed)
    grid = size // PATCH
    features = CHANNELS * grid * grid
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.2, (CHANNELS, 3, PATCH, PATCH)).astype(np.float32), "patch_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, CHANNELS).astype(np.float32), "patch_b"),
        numpy_helper.from_array((rng.normal(0, 1, (features, dims)) / np.sqrt(features)).astype(np.float32), "proj"),
    ]
    nodes = [
        helper.make_node("Conv", ["pixel_values", "patch_w", "patch_b"], ["patches"],
                         kernel_shape=[PATCH, PATCH], strides=[PATCH, PATCH]),
        helper.make_node("Relu", ["patches"], ["act"]),
        helper.make_node("Flatten", ["act"], ["flat"]),
        helper.make_node("MatMul", ["flat", "proj"], ["vec" if as_feature_map else output]),
    ]
    out_shape: list = ["batch_size", dims]
    if as_feature_map:
        inits.append(numpy_helper.from_array(np.array([0, dims, 1, 1], np.int64), "map_shape"))
        nodes.append(helper.make_node("Reshape", ["vec", "map_shape"], [output]))
        out_shape = ["batch_size", dims, 1, 1]
    graph = helper.make_graph(
        nodes, "patch_net",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch_size", 3, size, size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
