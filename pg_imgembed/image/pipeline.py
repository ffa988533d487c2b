"""Pipeline models: one self-contained ONNX file that fully determines the embedding.

A plain vision model (float input, NCHW or NHWC; vector, feature-map or token output) plus a
preprocessing spec become one graph with ``onnx.compose``:

    image uint8 (N, H, W, 3) RGB -> cast -> rescale -> normalize -> channel order -> layout
        -> the model -> pooling -> L2 normalisation -> embedding float32 (N, D)

What must happen before batching (decode, resize, crop, alpha handling) cannot run in the graph;
it is written into the model's ``metadata_props`` under ``pg_imgembed.pipeline``, so the file alone
says how to turn image bytes into its input. Requires the ``onnx`` package (building only; running
a pipeline needs onnxruntime alone).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import ImgEmbedError, InvalidConfig, InvalidModel
from ..onnx.session import InputGeometry, check_self_contained
from .model_config import ModelConfig, OutputConfig, PreprocessConfig
from .pipeline_spec import FORMAT, INPUT_NAME, METADATA_KEY, OUTPUT_NAME, built_config
from .tower import ImageTower

_P = "pg_imgembed/"  # prefix of the tensors the wrapper adds, so they cannot clash with the model's
_MIN_OPSET = 9  # IsNaN/Where; the wrapper uses the model's own opset, as onnx.compose requires


def build_pipeline(plain_onnx: bytes, config: ModelConfig, plain: ImageTower | None = None) -> bytes:
    """Wrap a plain model with its preprocessing and pooling; returns the pipeline's bytes.
    ``plain``: the same bytes already loaded with ``config`` (saves loading them again)."""
    import onnx
    from onnx import compose

    plain = plain or ImageTower(plain_onnx, config, threads=1)
    if plain.pipeline_spec is not None:
        raise InvalidModel("the model is already a pg_imgembed pipeline model; load it without a config")
    geometry, resolved, output = plain.geometry, plain.config, plain.output_name
    rank = len(next(o for o in plain.session.get_outputs() if o.name == output).shape)

    model = onnx.load_from_string(plain_onnx)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_OPSET:
        raise InvalidModel(f"model uses ONNX opset {opset}; pipeline models need opset {_MIN_OPSET} or newer")
    height, width = resolved.preprocess.center_crop or resolved.preprocess.resize.exact  # type: ignore[union-attr,misc]

    pre = _wrap_graph(_pre_nodes(resolved.preprocess, geometry, width), "pre",
                      [(INPUT_NAME, onnx.TensorProto.UINT8, ["N", height, width, 3])],
                      [(_P + "pixels", _onnx_dtype(geometry.dtype), None)], model.ir_version, opset)
    out_type = next(o for o in model.graph.output if o.name == output).type.tensor_type.elem_type
    post = _wrap_graph(_post_nodes(resolved.output, rank, geometry.layout), "post",
                       [(_P + "raw_in", out_type, None)],
                       [(OUTPUT_NAME, onnx.TensorProto.FLOAT, ["N", "D"])], model.ir_version, opset)

    # The model's own names go under "model/": its output may well be called "embedding" too.
    inner = compose.add_prefix(model, "model/")
    merged = compose.merge_models(pre, inner, io_map=[(_P + "pixels", "model/" + geometry.name)],
                                  outputs=["model/" + output])
    merged = compose.merge_models(merged, post, io_map=[("model/" + output, _P + "raw_in")])
    one_opset_per_domain(merged)
    merged.metadata_props.extend(model.metadata_props)
    spec = {"format": FORMAT, "config": resolved.to_dict(), "model_input": geometry.name, "model_output": output}
    onnx.helper.set_model_props(merged, {**{p.key: p.value for p in merged.metadata_props}, METADATA_KEY: json.dumps(spec)})
    onnx.checker.check_model(merged)
    return merged.SerializeToString()


def one_opset_per_domain(model: Any) -> None:
    """merge_models lists each part's opsets again (and 0.1.0 stored such pipelines); tools such as
    onnxruntime's quantizer refuse a domain listed twice, so keep one entry per domain."""
    import onnx

    versions: dict[str, int] = {}
    for entry in model.opset_import:
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        versions[domain] = max(versions.get(domain, 0), entry.version)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in versions.items())


def _pre_nodes(pre: PreprocessConfig, geometry: InputGeometry, width: int) -> tuple[list, list]:
    """uint8 RGB NHWC pixels -> the model's input: ``x * scale + bias`` per channel, where scale =
    rescale / std and bias = -mean / std (computed in float64, rounded once).

    Ordered for onnxruntime's CPU kernels, which broadcast a (3,) constant over the last axis of an
    NHWC tensor element by element (Sub and Div took 1.4 ms per 224x224 image): channel moves
    (layout, BGR) run on uint8 before the Cast, and the per-channel constants are shaped
    (1, 3, 1, 1) for NCHW or tiled along a row, (1, 1, W, 3), for NHWC, so every broadcast has a
    long contiguous inner span (0.07-0.16 ms per image; bench/preprocessing_prefix.py)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x = INPUT_NAME

    def step(op: str, name: str, value: np.ndarray | None = None, **attrs: Any) -> None:
        nonlocal x
        inputs = [x]
        if value is not None:
            inits.append(numpy_helper.from_array(value, _P + name + "_c"))
            inputs.append(_P + name + "_c")
        nodes.append(helper.make_node(op, inputs, [_P + name], **attrs))
        x = _P + name

    rescale = 1.0 if pre.rescale is None else float(pre.rescale)
    mean = np.zeros(3) if pre.mean is None else np.array(pre.mean, np.float64)
    std = np.ones(3) if pre.std is None else np.array(pre.std, np.float64)
    scale, bias = rescale / std, -mean / std
    bgr = pre.channel_order == "BGR"
    if bgr:  # the config's mean and std are in RGB order; the swap now comes first
        scale, bias = scale[::-1], bias[::-1]
    if geometry.layout == "NCHW" or bgr:
        step("Transpose", "nchw_u8", perm=[0, 3, 1, 2])
    if bgr:
        step("Gather", "bgr_u8", np.array([2, 1, 0], np.int64), axis=1)
        if geometry.layout == "NHWC":
            step("Transpose", "nhwc_u8", perm=[0, 2, 3, 1])
    step("Cast", "f", to=TensorProto.FLOAT)
    shape = (1, 3, 1, 1) if geometry.layout == "NCHW" else (1, 1, width, 3)

    def channels(values: np.ndarray) -> np.ndarray:
        per_channel = values.astype(np.float32)
        return per_channel.reshape(shape) if geometry.layout == "NCHW" else np.ascontiguousarray(np.broadcast_to(per_channel, shape))

    if not np.all(scale == 1.0):
        step("Mul", "scaled", channels(scale))
    if not np.all(bias == 0.0):
        step("Add", "shifted", channels(bias))
    if geometry.dtype is np.float32:
        nodes[-1].output[0] = _P + "pixels"
    else:
        nodes.append(helper.make_node("Cast", [x], [_P + "pixels"], to=_onnx_dtype(geometry.dtype)))
    return nodes, inits


def _post_nodes(out: OutputConfig, rank: int, layout: str) -> tuple[list, list]:
    """Pooling with opset-independent ops (ReduceMean changed signature in opset 18)."""
    from onnx import TensorProto, helper, numpy_helper

    # The model's output may be float16 or double: embeddings are float32.
    nodes, inits = [helper.make_node("Cast", [_P + "raw_in"], [_P + "raw"], to=TensorProto.FLOAT)], []
    x = _P + "raw"
    pooling = out.pooling
    if rank == 4 and pooling in ("auto", "mean"):
        if layout == "NHWC":
            nodes.append(helper.make_node("Transpose", [x], [_P + "fm"], perm=[0, 3, 1, 2]))
            x = _P + "fm"
        nodes += [helper.make_node("GlobalAveragePool", [x], [_P + "gap"]),
                  helper.make_node("Flatten", [_P + "gap"], [_P + "pooled"])]
    elif rank == 3 and pooling in ("auto", "cls"):
        inits.append(numpy_helper.from_array(np.array(0, np.int64), _P + "cls_index"))
        nodes.append(helper.make_node("Gather", [x, _P + "cls_index"], [_P + "pooled"], axis=1))
    elif rank == 3 and pooling == "mean":
        nodes += [helper.make_node("Transpose", [x], [_P + "dt"], perm=[0, 2, 1]),
                  helper.make_node("GlobalAveragePool", [_P + "dt"], [_P + "gap"]),
                  helper.make_node("Flatten", [_P + "gap"], [_P + "pooled"])]
    elif rank == 2 and pooling in ("auto", "none"):
        nodes.append(helper.make_node("Identity", [x], [_P + "pooled"]))
    else:
        raise InvalidModel(f"model output of rank {rank} cannot be pooled with pooling {pooling!r}")
    if out.normalize:
        # LpNormalization turns an all-zero vector into NaN (0/0); keep it zero instead.
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), _P + "zero"))
        nodes += [helper.make_node("LpNormalization", [_P + "pooled"], [_P + "unit"], axis=1, p=2),
                  helper.make_node("IsNaN", [_P + "unit"], [_P + "nan"]),
                  helper.make_node("Where", [_P + "nan", _P + "zero", _P + "unit"], [OUTPUT_NAME])]
    else:
        nodes.append(helper.make_node("Identity", [_P + "pooled"], [OUTPUT_NAME]))
    return nodes, inits


def _wrap_graph(parts: tuple[list, list], name: str, inputs: list, outputs: list, ir_version: int, opset: int):
    from onnx import helper

    nodes, inits = parts
    graph = helper.make_graph(
        nodes, f"pg_imgembed_{name}",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def _onnx_dtype(dtype: type) -> int:
    from onnx import TensorProto

    types: dict[type, int] = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE}
    return types[dtype]


def prepare_pipeline(onnx: bytes, config: ModelConfig | None, threads: int) -> tuple[bytes, ImageTower, int]:
    """The bytes to store, a ready model and its dimensions (from embedding a probe image): a
    pipeline model as given (so an exported file comes back with the same sha256), or a plain
    model built into one, checked against itself."""
    given = ImageTower(onnx, config or ModelConfig(), threads=threads)
    if given.pipeline_spec is not None:
        if config is not None:
            raise InvalidConfig(
                "this is a pipeline model: its preprocessing is inside the file",
                hint="Load it with config NULL, or rebuild it from the plain model to change the preprocessing.",
            )
        return onnx, given, given.probe().size
    expected = given.probe()  # validates the plain model before building on it
    try:
        pipeline = build_pipeline(onnx, config or ModelConfig(), given)
    except ImgEmbedError:
        raise
    except Exception as exc:  # onnx's checker and compose raise plain exceptions
        raise InvalidModel(f"cannot build a pipeline model from this model: {str(exc).splitlines()[0]}") from exc
    built = ImageTower(pipeline, ModelConfig(), threads=threads)
    got = built.probe()
    cosine = float(np.dot(expected, got) / (np.linalg.norm(expected) * np.linalg.norm(got) or 1.0))
    if expected.shape != got.shape or cosine < 0.99999:
        raise InvalidModel(
            f"the pipeline built from this model disagrees with it on the probe image (cosine {cosine:.6f})",
            hint="Report this with the model: the in-graph preprocessing should match the reference exactly.",
        )
    return pipeline, built, got.size


def rebuild_prefix(pipeline_onnx: bytes) -> bytes | None:
    """A stored pipeline re-emitted with this version's preprocessing prefix, everything else as
    it was (weights, pooling, an INT8 copy's quantized nodes); None if it has that prefix already."""
    import onnx

    check_self_contained(pipeline_onnx)  # stored before 0.4.0 checked it: no session may read a server file
    model = onnx.load_from_string(pipeline_onnx)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise InvalidModel("the model is not a pg_imgembed pipeline model")
    spec = json.loads(props[METADATA_KEY])
    if spec.get("format", 1) >= FORMAT:
        return None
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    prefix: dict[int, Any] = {}  # id -> node: every node between the uint8 input and the model's input
    pending = [_P + "pixels"]
    while pending:
        node = producers.get(pending.pop())
        if node is not None and id(node) not in prefix:
            prefix[id(node)] = node
            pending.extend(node.input)
    if not prefix or any(not out.startswith(_P) for node in prefix.values() for out in node.output):
        raise InvalidModel("the pipeline's preprocessing is not the one pg_imgembed builds; rebuild it from the plain model")
    pre = built_config(spec).preprocess
    height, width = pre.center_crop or pre.resize.exact  # type: ignore[union-attr,misc]
    dtypes: dict[int, type] = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
                               onnx.TensorProto.DOUBLE: np.float64}
    cast = next(a.i for a in producers[_P + "pixels"].attribute if a.name == "to")
    geometry = InputGeometry(spec["model_input"], pre.layout or "NCHW", height, width, dtypes[cast], None)  # resolved: set
    nodes, inits = _pre_nodes(pre, geometry, width)

    kept_nodes = [node for node in graph.node if id(node) not in prefix]
    dropped = {name for node in prefix.values() for name in node.input} - {name for node in kept_nodes for name in node.input}
    kept_inits = [init for init in graph.initializer if init.name not in dropped]
    del graph.initializer[:], graph.node[:]
    graph.initializer.extend([*inits, *kept_inits])
    graph.node.extend([*nodes, *kept_nodes])
    one_opset_per_domain(model)
    onnx.helper.set_model_props(model, {**props, METADATA_KEY: json.dumps({**spec, "format": FORMAT})})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def compare_pipelines(old: bytes, new: bytes) -> tuple[float, float]:
    """Largest difference between two pipelines' vectors relative to the vector's norm, and the
    lowest cosine, over synthetic images that reach the extremes of every channel."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(b, options, providers=["CPUExecutionProvider"]) for b in (old, new)]
    _, height, width, _ = sessions[0].get_inputs()[0].shape
    rng = np.random.default_rng(7)
    gradient = np.linspace(0, 255, height * width * 3).reshape(height, width, 3)
    images = np.stack([
        np.clip(gradient + rng.normal(0, 20, gradient.shape), 0, 255), rng.integers(0, 256, (height, width, 3)),
        np.zeros((height, width, 3)), np.full((height, width, 3), 255), *(np.eye(3)[c] * 255 * np.ones((height, width, 1)) for c in range(3)),
    ]).astype(np.uint8)
    # One image per run: some models fix their batch size at 1.
    a, b = (np.concatenate([s.run([OUTPUT_NAME], {INPUT_NAME: image[None]})[0] for image in images]).astype(np.float64)
            for s in sessions)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    zero = (norm_a == 0) & (norm_b == 0)  # normalisation keeps an all-zero vector zero
    relative = float(np.where(zero, 0.0, np.abs(a - b).max(axis=1) / np.maximum(norm_a, 1e-30)).max())
    cosine = float(np.where(zero, 1.0, (a * b).sum(axis=1) / np.maximum(norm_a * norm_b, 1e-30)).min())
    return relative, cosine
