"""An ONNX image model ready to embed: session, input geometry, preprocessing and pooling.

Built from the model bytes and a ``ModelConfig``. What the config leaves open (input size,
layout) is read from the model's input shape, and the resolved config is what gets stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache, cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from .decode import decode_image
from .errors import InferenceFailed, InvalidConfig, InvalidModel, ProviderUnavailable
from .model_config import ModelConfig, Resize
from .pipeline_spec import built_config, outside_config, read_spec
from .transforms import (
    CenterCrop,
    ChannelsFirst,
    Compose,
    Normalize,
    Rescale,
    ResizeExact,
    ResizeShortestEdge,
    ResizeThenCrop,
    ReverseChannels,
    ToFloatArray,
    compose,
    resize_threads,
)

MAX_DIMENSIONS = 16000  # pgvector's limit for the vector type

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


def make_session(source: bytes | Path, threads: int, provider: str = "cpu"):
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
    try:
        model = str(source) if isinstance(source, Path) else source
        session = ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind types
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        raise InvalidModel(
            f"onnxruntime cannot load the model ({size} bytes): {_first_line(exc)}",
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


def read_input_geometry(session, layout_hint: str | None) -> InputGeometry:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise InvalidModel(
            f"model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
            "an image embedding model takes exactly one image tensor"
        )
    (inp,) = inputs
    if inp.type not in _DTYPES:
        raise InvalidModel(f"model input {inp.name!r} has type {inp.type}; expected a float or uint8 tensor")
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


def resolve_config(config: ModelConfig, geometry: InputGeometry) -> ModelConfig:
    """Fill in what the model's fixed input shape determines; reject contradictions."""
    pre = config.preprocess
    final = pre.center_crop or (pre.resize.exact if pre.resize else None)
    fixed = (geometry.height, geometry.width) if geometry.height is not None and geometry.width is not None else None
    if pre.resize is None:
        if fixed is None:
            raise InvalidConfig(
                "the model accepts any image size, so the config must say how to resize",
                hint='Add "resize": {"shortest_edge": 256} or {"height": 224, "width": 224} to preprocess.',
            )
        pre = replace(pre, resize=Resize(height=fixed[0], width=fixed[1]))
        final = pre.center_crop or fixed
    if final is None and fixed is not None:
        pre = replace(pre, center_crop=fixed)  # shortest-edge resize alone: crop to the model's size
        final = fixed
    if final is None:
        raise InvalidConfig(
            "a shortest_edge resize without center_crop gives images of varying size",
            hint="Add center_crop so every image reaches the model at one size.",
        )
    if fixed is not None and tuple(final) != fixed:
        raise InvalidConfig(
            f"preprocessing produces {final[0]}x{final[1]} images but the model input "
            f"{geometry.name!r} is {fixed[0]}x{fixed[1]}"
        )
    return replace(config, preprocess=replace(pre, layout=geometry.layout))


@dataclass(frozen=True)
class ToUint8Array:
    """Pipeline models take the pixels as they are; the graph does the arithmetic."""

    def __call__(self, img: Image.Image) -> np.ndarray:
        return np.asarray(img, dtype=np.uint8)


def build_transforms(config: ModelConfig, dtype: type = np.float32, *, fast: bool = False) -> Compose:
    """The config's transforms; ``fast`` resamples only what the crop keeps (see ResizeThenCrop)."""
    pre = config.preprocess
    steps: list = []
    resize_step: ResizeShortestEdge | ResizeExact | None = None
    resize = pre.resize
    if resize is not None and resize.shortest_edge is not None:
        resize_step = ResizeShortestEdge(resize.shortest_edge, pre.resample)
    elif resize is not None and resize.exact is not None:
        resize_step = ResizeExact(resize.exact[0], resize.exact[1], pre.resample)
    crop = CenterCrop(*pre.center_crop, pre.crop_rounding) if pre.center_crop is not None else None
    if fast and resize_step is not None and crop is not None:
        steps.append(ResizeThenCrop(resize_step, crop))
    else:
        steps.extend(step for step in (resize_step, crop) if step is not None)
    if dtype is np.uint8:
        if pre.rescale is not None or pre.mean is not None or pre.std is not None or pre.channel_order != "RGB":
            raise InvalidConfig("a model with uint8 input takes raw RGB pixels: rescale, mean, std and BGR do not apply")
        steps.append(ToUint8Array())
        return compose(steps + ([ChannelsFirst()] if pre.layout == "NCHW" else []))
    steps.append(ToFloatArray())
    if pre.rescale is not None:
        steps.append(Rescale(pre.rescale))
    if pre.mean is not None or pre.std is not None:
        steps.append(Normalize(pre.mean or (0.0, 0.0, 0.0), pre.std or (1.0, 1.0, 1.0)))
    if pre.channel_order == "BGR":
        steps.append(ReverseChannels())
    if pre.layout == "NCHW":
        steps.append(ChannelsFirst())
    return compose(steps)


class EmbeddingModel:
    """Decode -> preprocess -> onnxruntime -> pool -> L2-normalise, for one stored model."""

    def __init__(self, source: bytes | Path, config: ModelConfig, *, threads: int = 1, provider: str = "cpu"):
        self.session = make_session(source, threads, provider)
        self.threads = threads
        self.provider = "cuda" if self.session.get_providers()[0] == CUDA else "cpu"  # the one that runs
        self.pipeline_spec = read_spec(self.session)
        if self.pipeline_spec is not None:  # a pipeline model carries its own config
            config = outside_config(self.pipeline_spec)
        self.geometry = read_input_geometry(self.session, config.preprocess.layout)
        self.config = resolve_config(config, self.geometry)
        self.transform = build_transforms(self.config, self.geometry.dtype)
        self.fast_transform = (build_transforms(self.config, self.geometry.dtype, fast=True)
                               if self.config.preprocess.decode == "fast" else self.transform)
        self.output_name = self._pick_output(self.config.output.name)

    @property
    def full_config(self) -> ModelConfig:
        """Everything that determines the embedding, in or outside the graph."""
        return built_config(self.pipeline_spec) if self.pipeline_spec is not None else self.config

    def _pick_output(self, wanted: str | None) -> str:
        names = [o.name for o in self.session.get_outputs()]
        if wanted is None:
            return names[0]
        if wanted not in names:
            raise InvalidConfig(f"model has no output {wanted!r}; outputs: {', '.join(names)}")
        return wanted

    @property
    def draft_size(self) -> tuple[int, int] | None:
        """Smallest decode size for JPEG DCT scaling: twice what the resize needs (the reducing
        gap of Pillow's thumbnails), so the resize still averages over the DCT-scaled pixels."""
        resize = self.config.preprocess.resize
        if self.config.preprocess.decode != "fast" or resize is None or resize.native:
            return None
        if resize.shortest_edge is not None:
            return (2 * resize.shortest_edge, 2 * resize.shortest_edge)
        return (2 * resize.width, 2 * resize.height)  # type: ignore[operator]

    def decode(self, data: bytes, *, max_pixels: int, exact: bool = False) -> Image.Image:
        return decode_image(
            data, max_pixels=max_pixels,
            draft_size=None if exact else self.draft_size,
            background=self.config.preprocess.background,
        )

    def preprocess(self, img: Image.Image, *, exact: bool = False) -> np.ndarray:
        return (self.transform if exact else self.fast_transform)(img)

    def run(self, tensors: Sequence[np.ndarray]) -> np.ndarray:
        """Batch of preprocessed tensors -> ``(N, D)`` float32 embeddings."""
        if self.geometry.batch == 1 and len(tensors) > 1:
            return np.concatenate([self.run([t]) for t in tensors])
        batch: np.ndarray = np.stack(tensors).astype(self.geometry.dtype, copy=False)
        try:
            (raw,) = self.session.run([self.output_name], {self.geometry.name: batch})
        except Exception as exc:
            raise InferenceFailed(f"onnxruntime failed: {_first_line(exc)}") from exc
        vectors = pool(np.asarray(raw, dtype=np.float32), self.config.output.pooling, self.geometry.layout)
        if not np.isfinite(vectors).all():
            raise InferenceFailed("the model produced NaN or infinite values for this image")
        return l2_normalize(vectors) if self.config.output.normalize else vectors

    def embed(self, data: bytes, *, max_pixels: int, exact: bool = False) -> np.ndarray:
        img = self.decode(data, max_pixels=max_pixels, exact=exact)
        with resize_threads(self._resize_pool, self.threads):
            tensor = self.preprocess(img, exact=exact)
        return self.run([tensor])[0]

    @cached_property
    def _resize_pool(self) -> ThreadPoolExecutor:
        # One image at a time: the session's threads sleep while it is resized, so the resize may
        # take their cores. (Threads start on first use: none with threads=1 or small images.)
        return ThreadPoolExecutor(self.threads, thread_name_prefix="imgembed-resize")

    def probe(self) -> np.ndarray:
        """Embed a synthetic photo-sized image (validates the model); returns its vector."""
        rng = np.random.default_rng(7)
        gradient = np.linspace(0, 255, 480 * 640 * 3).reshape(480, 640, 3)
        pixels = np.clip(gradient + rng.normal(0, 20, gradient.shape), 0, 255).astype(np.uint8)
        tensor = self.preprocess(Image.fromarray(pixels, "RGB"))
        vector = self.run([tensor])[0]
        if vector.size > MAX_DIMENSIONS:
            raise InvalidModel(
                f"the model's output has {vector.size} dimensions; pgvector's vector holds at most {MAX_DIMENSIONS}"
            )
        return vector


def pool(raw: np.ndarray, pooling: str, layout: str) -> np.ndarray:
    """Model output -> one vector per image. ``auto``: vectors as they are, feature maps averaged
    over their spatial axes, token sequences (``N x T x D``) take the first (CLS) token."""
    if raw.ndim == 2 and pooling in ("auto", "none"):
        return raw
    if raw.ndim == 4 and pooling in ("auto", "mean"):
        return raw.mean(axis=(2, 3) if layout == "NCHW" else (1, 2))
    if raw.ndim == 3 and pooling in ("auto", "cls"):
        return raw[:, 0, :]
    if raw.ndim == 3 and pooling == "mean":
        return raw.mean(axis=1)
    raise InvalidModel(
        f"model output has shape {list(raw.shape)}, which pooling {pooling!r} cannot turn into one vector per image",
        hint="Expected (N, D) vectors, an (N, C, H, W) feature map or (N, T, D) tokens; "
        'set output.name to pick another output or output.pooling ("mean", "cls").',
    )


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # An all-zero output stays zero rather than becoming NaN.
    return vectors / np.where(norms == 0, 1, norms)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
