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

from .embedding_model import EmbeddingModel
from .errors import ImgEmbedError, InvalidConfig, InvalidModel
from .model_config import ModelConfig, OutputConfig, PreprocessConfig
from .onnx_session import InputGeometry
from .pipeline_spec import FORMAT, INPUT_NAME, METADATA_KEY, OUTPUT_NAME

_P = "pg_imgembed/"  # prefix of the tensors the wrapper adds, so they cannot clash with the model's
_MIN_OPSET = 9  # IsNaN/Where; the wrapper uses the model's own opset, as onnx.compose requires


def build_pipeline(plain_onnx: bytes, config: ModelConfig, plain: EmbeddingModel | None = None) -> bytes:
    """Wrap a plain model with its preprocessing and pooling; returns the pipeline's bytes.
    ``plain``: the same bytes already loaded with ``config`` (saves loading them again)."""
    import onnx
    from onnx import compose

    plain = plain or EmbeddingModel(plain_onnx, config, threads=1)
    if plain.pipeline_spec is not None:
        raise InvalidModel("the model is already a pg_imgembed pipeline model; load it without a config")
    geometry, resolved, output = plain.geometry, plain.config, plain.output_name
    rank = len(next(o for o in plain.session.get_outputs() if o.name == output).shape)

    model = onnx.load_from_string(plain_onnx)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_OPSET:
        raise InvalidModel(f"model uses ONNX opset {opset}; pipeline models need opset {_MIN_OPSET} or newer")
    height, width = resolved.preprocess.center_crop or resolved.preprocess.resize.exact  # type: ignore[union-attr,misc]

    pre = _wrap_graph(_pre_nodes(resolved.preprocess, geometry), "pre",
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


def _pre_nodes(pre: PreprocessConfig, geometry: InputGeometry) -> tuple[list, list]:
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", [INPUT_NAME], [_P + "f"], to=TensorProto.FLOAT)]
    inits = []
    x = _P + "f"

    def step(op: str, name: str, value: np.ndarray | None = None, **attrs: Any) -> None:
        nonlocal x
        inputs = [x]
        if value is not None:
            inits.append(numpy_helper.from_array(value, _P + name + "_c"))
            inputs.append(_P + name + "_c")
        nodes.append(helper.make_node(op, inputs, [_P + name], **attrs))
        x = _P + name

    if pre.rescale is not None:
        step("Mul", "rescaled", np.array(pre.rescale, np.float32))
    if pre.mean is not None:
        step("Sub", "centred", np.array(pre.mean, np.float32).reshape(1, 1, 1, 3))
    if pre.std is not None:
        step("Div", "scaled", np.array(pre.std, np.float32).reshape(1, 1, 1, 3))
    if pre.channel_order == "BGR":
        step("Gather", "bgr", np.array([2, 1, 0], np.int64), axis=3)
    if geometry.layout == "NCHW":
        step("Transpose", "nchw", perm=[0, 3, 1, 2])
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


def prepare_pipeline(onnx: bytes, config: ModelConfig | None, threads: int) -> tuple[bytes, EmbeddingModel, int]:
    """The bytes to store, a ready model and its dimensions (from embedding a probe image): a
    pipeline model as given (so an exported file comes back with the same sha256), or a plain
    model built into one, checked against itself."""
    given = EmbeddingModel(onnx, config or ModelConfig(), threads=threads)
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
    built = EmbeddingModel(pipeline, ModelConfig(), threads=threads)
    got = built.probe()
    cosine = float(np.dot(expected, got) / (np.linalg.norm(expected) * np.linalg.norm(got) or 1.0))
    if expected.shape != got.shape or cosine < 0.99999:
        raise InvalidModel(
            f"the pipeline built from this model disagrees with it on the probe image (cosine {cosine:.6f})",
            hint="Report this with the model: the in-graph preprocessing should match the reference exactly.",
        )
    return pipeline, built, got.size
