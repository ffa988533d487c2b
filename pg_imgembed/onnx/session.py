"""onnxruntime sessions: execution providers, session options, and the model's input geometry."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidModel, ProviderUnavailable
from .external_data import Malformed, external_tensors
from .optimized_graphs import GraphPlan

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(uint8)": np.uint8}


@dataclass(frozen=True)
class InputGeometry:
    name: str
    layout: str  # NCHW or NHWC
    height: int | None  # None where the model accepts any size
    width: int | None
    dtype: type
    batch: int | None  # fixed batch size, or None when dynamic


CUDA = "CUDAExecutionProvider"


def provider_list(wanted: str) -> list[str]:
    """onnxruntime providers for ``wanted`` (a ``Settings.execution_provider``), best first."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if wanted == "cpu" or (wanted == "auto" and CUDA not in available):
        return ["CPUExecutionProvider"]
    if CUDA not in available:
        raise ProviderUnavailable(
            f"execution provider cuda was asked for, but this onnxruntime {ort.__version__} has none "
            f"(it has {', '.join(available)})",
            hint='Install onnxruntime-gpu (for the server: make install ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]"), '
            "or ask for auto or cpu (imgembed.execution_provider, or the worker's --provider).",
        )
    _preload_cuda_libraries()
    return [CUDA, "CPUExecutionProvider"]  # CPU runs the nodes CUDA has no kernel for


@cache
def _preload_cuda_libraries() -> None:
    """Once per process. The wheel's CUDA and cuDNN come as pip packages (onnxruntime-gpu[cuda,cudnn]):
    load them first; where they are missing, the system's libraries are searched as usual."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


def make_session(source: bytes | Path | None, threads: int, provider: str = "cpu", graph: GraphPlan | None = None) -> Any:
    """A session of the model at ``source``; with a ``graph`` plan, loaded from a graph optimized
    before (``source`` unused), or optimized and saved there (optimized_graphs.py)."""
    import onnxruntime as ort

    providers = provider_list(provider)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle worker threads must not spin: other backends need those cores, and so do our decode
    # threads (spinning only during run() measured slower in the batch paths, no faster row by row).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if graph is not None and not graph.save:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # done when it was saved
        source = graph.path
    elif graph is not None:
        # Weights as external data, prepacked too: a later session maps them instead of copying.
        options.optimized_model_filepath = str(graph.path)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "graph.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        options.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    if source is None:
        raise ValueError("make_session needs the model or a graph to load")
    if graph is None or graph.save:  # the model itself (a saved graph is ours, made from a checked model)
        check_self_contained(source.read_bytes() if isinstance(source, Path) else source)
    try:
        model = str(source) if isinstance(source, Path) else source
        session = ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind types
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        raise InvalidModel(
            f"onnxruntime cannot load the model ({size} bytes): {first_line(exc)}",
            hint="Check that the bytes are an ONNX file (not a PyTorch .pt or TensorFlow file) "
            "with an IR version and opset this onnxruntime supports.",
        ) from exc
    # onnxruntime falls back to the CPU, with only a log line, when CUDA cannot start.
    if provider == "cuda" and session.get_providers()[0] != CUDA:
        raise ProviderUnavailable(
            "execution provider cuda was asked for, but onnxruntime could not start it: no usable GPU, "
            "or CUDA/cuDNN libraries missing (the server log or stderr has onnxruntime's reason)",
            hint="Check the GPU is visible to this process (nvidia-smi, CUDA_VISIBLE_DEVICES) and that "
            "onnxruntime-gpu's CUDA and cuDNN are installed, or ask for auto or cpu.",
        )
    return session


def check_self_contained(model: bytes) -> None:
    """Refuse a model that refers to external data, before onnxruntime sees it (why:
    external_data.py). Bytes that are not ONNX's wire format are left to onnxruntime's own error."""
    try:
        found = external_tensors(model)
    except Malformed:
        return
    if found:
        name, location = found[0]
        raise InvalidModel(
            f'the model refers to external data (tensor "{name}" in file "{location}"): models must be self-contained',
            hint="Save the model with its weights inside (onnx.save_model(model, path, save_as_external_data=False)) "
            "and load that file.")


TEXT_TOWER_HINT = "This is a text encoder (it takes input_ids): load it as a text tower with imgembed.load_text_model."


def read_input_geometry(session: Any, layout_hint: str | None) -> InputGeometry:
    inputs = session.get_inputs()
    text_tower = any(i.name == "input_ids" for i in inputs)
    if len(inputs) != 1:
        raise InvalidModel(
            f"model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
            "an image embedding model takes exactly one image tensor", hint=TEXT_TOWER_HINT if text_tower else None)
    (inp,) = inputs
    if inp.type not in _DTYPES:
        raise InvalidModel(f"model input {inp.name!r} has type {inp.type}; expected a float or uint8 tensor",
                           hint=TEXT_TOWER_HINT if text_tower else None)
    shape = list(inp.shape)
    if len(shape) != 4:
        raise InvalidModel(
            f"model input {inp.name!r} has shape {shape}; expected 4 dimensions (NCHW or NHWC)"
        )
    layout = layout_hint or _guess_layout(inp.name, shape)
    channels, height, width = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
    if isinstance(channels, int) and channels != 3:
        raise InvalidModel(
            f"model input {inp.name!r} has shape {shape}: {channels} channels at the {layout} channel "
            "axis; expected 3 (RGB)",
            hint="Set preprocess.layout if the model's channel axis is the other one.",
        )
    return InputGeometry(
        name=inp.name, layout=layout,
        height=height if isinstance(height, int) else None,
        width=width if isinstance(width, int) else None,
        dtype=_DTYPES[inp.type],
        batch=shape[0] if isinstance(shape[0], int) else None,
    )


def _guess_layout(name: str, shape: list) -> str:
    if shape[1] == 3:
        return "NCHW"
    if shape[3] == 3:
        return "NHWC"
    raise InvalidModel(
        f"model input {name!r} has shape {shape}: neither axis 1 (NCHW) nor axis 3 (NHWC) has 3 (RGB) channels",
        hint='Set "layout": "NCHW" or "NHWC" in the preprocess config.',
    )


def first_line(exc: BaseException) -> str:
    """onnxruntime's exceptions carry pages of text: the first line says what went wrong."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def runs_on(session: Any) -> str:
    """cuda, cpu, or the URL of the inference server that runs the session."""
    first = session.get_providers()[0]
    return "cuda" if first == CUDA else "cpu" if first == "CPUExecutionProvider" else first
