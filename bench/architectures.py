"""Real architectures with random weights, built with onnx.helper (no torch, no hub): what the
benchmarks measure when a model's size and shape, not its weights, decide the cost.

- ``vit_b16()``: ViT-B/16 (patch 16, 12 layers, width 768, 12 heads, MLP 3072; 86 M parameters),
  ``pixel_values`` (N, 3, 224, 224) -> the CLS token (N, 768).
- ``mobilenet_v2()``: MobileNetV2 1.0 (inverted residual blocks of expansion 6, ReLU6, 3.5 M
  parameters with its classifier, 2.2 M without), batch norm folded as an export gives it:
  ``pixel_values`` (N, 3, 224, 224) -> the pooled features (N, 1280).
- ``clip_text_b32()``: CLIP ViT-B/32's text tower (vocabulary 49,408, context 77, 12 layers,
  width 512, 8 heads, MLP 2048, causal attention; 63 M parameters), exported as
  ``CLIPTextModelWithProjection`` is: ``input_ids``, ``attention_mask`` -> ``text_embeds`` (N, 512),
  pooled at the end-of-text token (the highest id) and projected.

Opset 17, IR 9. GELU is written out (erf form; QuickGELU for CLIP), as exporters do before opset 20.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...], std: float) -> str:
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)), name))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def linear(self, x: str, name: str, din: int, dout: int) -> str:
        y = self.node("MatMul", [x, self.weight(f"{name}.W", (din, dout), 1 / np.sqrt(din))], f"{name}.mm")
        return self.node("Add", [y, self.const(f"{name}.b", self.rng.normal(0, 0.01, dout).astype(np.float32))], f"{name}.out")

    def layernorm(self, x: str, name: str, d: int) -> str:
        return self.node("LayerNormalization", [x, self.const(f"{name}.g", np.ones(d, np.float32)),
                                                self.const(f"{name}.b", np.zeros(d, np.float32))], f"{name}.out", axis=-1, epsilon=1e-5)

    def encoder(self, x: str, *, layers: int, d: int, heads: int, mlp: int, mask: str | None, quick_gelu: bool) -> str:
        """Pre-norm transformer layers; ``mask`` is added to the attention scores (causal, padding)."""
        hd = d // heads
        heads_shape = self.const("shape.heads", np.array([0, -1, heads, hd], np.int64))
        flat_shape = self.const("shape.flat", np.array([0, -1, d], np.int64))
        scale = self.const("scale", np.array(1 / np.sqrt(hd), np.float32))
        for i in range(layers):
            p = f"l{i}"
            h = self.layernorm(x, f"{p}.ln1", d)
            q, k, v = (self.node("Reshape", [self.linear(h, f"{p}.{t}", d, d), heads_shape], f"{p}.{t}r") for t in "qkv")
            q = self.node("Transpose", [q], f"{p}.qt", perm=[0, 2, 1, 3])
            k = self.node("Transpose", [k], f"{p}.kt", perm=[0, 2, 3, 1])
            v = self.node("Transpose", [v], f"{p}.vt", perm=[0, 2, 1, 3])
            scores = self.node("Mul", [self.node("MatMul", [q, k], f"{p}.qk"), scale], f"{p}.scores")
            if mask is not None:
                scores = self.node("Add", [scores, mask], f"{p}.masked")
            attention = self.node("MatMul", [self.node("Softmax", [scores], f"{p}.attn", axis=-1), v], f"{p}.av")
            merged = self.node("Reshape", [self.node("Transpose", [attention], f"{p}.avt", perm=[0, 2, 1, 3]), flat_shape], f"{p}.avr")
            x = self.node("Add", [x, self.linear(merged, f"{p}.proj", d, d)], f"{p}.res1")
            h = self.linear(self.layernorm(x, f"{p}.ln2", d), f"{p}.fc1", d, mlp)
            if quick_gelu:  # x * sigmoid(1.702 x), CLIP's
                gate = self.node("Sigmoid", [self.node("Mul", [h, self.const(f"{p}.k", np.array(1.702, np.float32))], f"{p}.hk")], f"{p}.sig")
            else:  # 0.5 (1 + erf(x / sqrt 2))
                erf = self.node("Erf", [self.node("Div", [h, self.const(f"{p}.s2", np.array(np.sqrt(2), np.float32))], f"{p}.hd")], f"{p}.erf")
                gate = self.node("Mul", [self.node("Add", [erf, self.const(f"{p}.one", np.array(1, np.float32))], f"{p}.e1"),
                                         self.const(f"{p}.half", np.array(0.5, np.float32))], f"{p}.gate")
            x = self.node("Add", [x, self.linear(self.node("Mul", [h, gate], f"{p}.act"), f"{p}.fc2", mlp, d)], f"{p}.res2")
        return self.layernorm(x, "final_ln", d)

    def model(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> bytes:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        return model.SerializeToString()


def vit_b16(seed: int = 0) -> bytes:
    g, d, grid = _Graph(seed), 768, 14
    x = g.node("Conv", ["pixel_values", g.weight("patch.W", (d, 3, 16, 16), 1 / np.sqrt(3 * 256)),
                        g.const("patch.b", np.zeros(d, np.float32))], "patch.out", kernel_shape=[16, 16], strides=[16, 16])
    x = g.node("Transpose", [g.node("Reshape", [x, g.const("shape.patches", np.array([0, d, -1], np.int64))], "patch.flat")],
               "patch.tokens", perm=[0, 2, 1])
    batch = g.node("Shape", ["pixel_values"], "batch", start=0, end=1)
    cls_shape = g.node("Concat", [batch, g.const("cls.tail", np.array([1, d], np.int64))], "cls.shape", axis=0)
    cls = g.node("Expand", [g.weight("cls", (1, 1, d), 0.02), cls_shape], "cls.tokens")
    x = g.node("Add", [g.node("Concat", [cls, x], "tokens", axis=1), g.weight("pos", (1, grid * grid + 1, d), 0.02)], "embedded")
    x = g.encoder(x, layers=12, d=d, heads=12, mlp=3072, mask=None, quick_gelu=False)
    g.node("Gather", [x, g.const("cls.index", np.array(0, np.int64))], "embedding", axis=1)
    return g.model("vit_b16", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, 224, 224])],
                   [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", d])])


# (expansion, output channels, repeats, stride of the first block), as in the MobileNetV2 paper.
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(seed: int = 0) -> bytes:
    g = _Graph(seed)
    low, high = g.const("zero", np.array(0, np.float32)), g.const("six", np.array(6, np.float32))

    def conv(x: str, name: str, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, relu6: bool = True,
             scale: float = 1.0) -> str:
        w = g.weight(f"{name}.W", (cout, cin // groups, k, k), scale * np.sqrt(2 / (cin // groups * k * k)))
        b = g.const(f"{name}.B", np.zeros(cout, np.float32))
        y = g.node("Conv", [x, w, b], name, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=groups)
        return g.node("Clip", [y, low, high], f"{name}.relu6") if relu6 else y

    x, cin = conv("pixel_values", "stem", 3, 32, k=3, stride=2), 32
    for stage, (expand, cout, repeats, first_stride) in enumerate(MOBILENET_V2):
        for r in range(repeats):
            p, stride, hidden = f"b{stage}.{r}", first_stride if r == 0 else 1, cin * expand
            h = x if expand == 1 else conv(x, f"{p}.expand", cin, hidden)
            h = conv(h, f"{p}.dw", hidden, hidden, k=3, stride=stride, groups=hidden)
            h = conv(h, f"{p}.project", hidden, cout, relu6=False, scale=0.2)  # keeps the residual stream bounded
            x = g.node("Add", [x, h], f"{p}.residual") if stride == 1 and cin == cout else h
            cin = cout
    x = conv(x, "head", cin, 1280)
    g.node("Flatten", [g.node("GlobalAveragePool", [x], "pooled")], "embedding", axis=1)
    return g.model("mobilenet_v2", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, 224, 224])],
                   [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 1280])])


def clip_text_b32(seed: int = 0, dims: int = 512) -> bytes:
    g, d, context = _Graph(seed), 512, 77
    tokens = g.node("Gather", [g.weight("token_embedding", (49408, d), 0.02), "input_ids"], "tokens", axis=0)
    length = g.node("Shape", ["input_ids"], "length", start=1, end=2)
    zero, one = g.const("zero", np.array([0], np.int64)), g.const("one", np.array([1], np.int64))
    positions = g.node("Slice", [g.weight("position_embedding", (context, d), 0.01), zero, length, zero], "positions")
    x = g.node("Add", [tokens, positions], "embedded")
    # Causal mask (a token sees itself and what precedes it) plus the padding mask, added to the scores.
    causal = np.triu(np.full((context, context), -1e4, np.float32), 1)
    causal = g.node("Slice", [g.node("Slice", [g.const("causal", causal), zero, length, zero], "causal.rows"), zero, length, one],
                    "causal.cut")
    padding = g.node("Mul", [g.node("Sub", [g.const("f.one", np.array(1, np.float32)),
                                            g.node("Cast", ["attention_mask"], "mask.f", to=TensorProto.FLOAT)], "mask.inv"),
                             g.const("f.big", np.array(-1e4, np.float32))], "mask.add")
    padding = g.node("Unsqueeze", [padding, g.const("axes", np.array([1, 2], np.int64))], "mask.4d")
    mask = g.node("Add", [causal, padding], "mask")
    hidden = g.encoder(x, layers=12, d=d, heads=8, mlp=2048, mask=mask, quick_gelu=True)
    g.node("Identity", [hidden], "last_hidden_state")
    eos = g.node("ArgMax", ["input_ids"], "eos", axis=1, keepdims=1)
    pooled = g.node("GatherND", [hidden, eos], "pooled", batch_dims=1)
    g.node("MatMul", [pooled, g.weight("text_projection", (d, dims), 1 / np.sqrt(d))], "text_embeds")
    return g.model("clip_text_b32",
                   [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in ("input_ids", "attention_mask")],
                   [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", dims]),
                    helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", d])])
