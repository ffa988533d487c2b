"""An architecture-exact ResNet-50 feature extractor as ONNX, with random weights (for benchmarks).

torchvision's ResNet-50 (v1.5: the stride sits on the 3x3 convolution) up to the pooled features,
as an eval-mode export gives it: every BatchNormalization folded into its convolution's weights
and bias. Conv 7x7/2 -> max pool 3x3/2 -> bottleneck stages [3, 4, 6, 3] of widths 64/128/256/512
(x4 expansion, a 1x1 projection shortcut on each stage's first block) -> global average pool ->
flatten: ``pixel_values`` [N, 3, 224, 224] float -> ``embedding`` [N, 2048]. 23.5 M parameters,
~94 MB, the same FLOPs and memory traffic as the real network.

Weights are He-initialised from a fixed seed. Each block's last convolution is scaled down so the
residual sum keeps activations of order one through all 16 blocks. No torch, no hub: onnx.helper.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride of the first block)
EXPANSION = 4
RESIDUAL_SCALE = 0.2  # last conv of each block: keeps the residual stream's variance bounded
CACHE_DIR = Path("/tmp/pg_imgembed-bench")


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.weights: list = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, relu: bool = True,
             scale: float = 1.0) -> str:
        """Conv with its BatchNorm folded in (weights and bias), then optionally ReLU."""
        name = self._name("conv")
        fan_in = c_in * k * k
        w = self.rng.standard_normal((c_out, c_in, k, k), dtype=np.float32) * np.float32(scale * np.sqrt(2.0 / fan_in))
        b = self.rng.normal(0.0, 0.01, c_out).astype(np.float32)
        self.weights += [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]
        pad = k // 2
        self.nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=name,
                                           kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
        return self.relu(name) if relu else name

    def relu(self, x: str) -> str:
        out = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [out], name=out))
        return out

    def bottleneck(self, x: str, c_in: int, width: int, stride: int) -> str:
        c_out = width * EXPANSION
        y = self.conv(x, c_in, width, 1)
        y = self.conv(y, width, width, 3, stride)
        y = self.conv(y, width, c_out, 1, relu=False, scale=RESIDUAL_SCALE)
        shortcut = x if stride == 1 and c_in == c_out else self.conv(x, c_in, c_out, 1, stride, relu=False)
        out = self._name("add")
        self.nodes.append(helper.make_node("Add", [y, shortcut], [out], name=out))
        return self.relu(out)


def build(seed: int = 0) -> bytes:
    """Serialized ONNX model (IR 8, opset 17)."""
    b = _Builder(seed)
    x = b.conv("pixel_values", 3, 64, 7, 2)
    b.nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1]))
    x, c_in = "pool", 64
    for width, blocks, stride in STAGES:
        for i in range(blocks):
            x = b.bottleneck(x, c_in, width, stride if i == 0 else 1)
            c_in = width * EXPANSION
    b.nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
                helper.make_node("Flatten", ["gap"], ["embedding"], name="flatten", axis=1)]
    graph = helper.make_graph(
        b.nodes, "resnet50",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 2048])],
        initializer=b.weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pg_imgembed-bench")
    model.ir_version = 8
    return model.SerializeToString()


def cached(seed: int = 0) -> Path:
    """The model file under /tmp, built once per seed (and per version of this file)."""
    tag = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    path = CACHE_DIR / f"resnet50-seed{seed}-{tag}.onnx"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(build(seed))
        tmp.replace(path)
    return path


if __name__ == "__main__":
    import onnx
    import onnxruntime as ort

    path = cached()
    onnx.checker.check_model(str(path))
    params = sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224), dtype=np.float32)
    (out,) = session.run(None, {"pixel_values": x})
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB, {params / 1e6:.2f} M parameters, output {out.shape}, "
          f"mean {out.mean():.3f} std {out.std():.3f} max {out.max():.3f}, finite {np.isfinite(out).all()}")
