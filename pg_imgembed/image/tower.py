"""An ONNX image model ready to embed: decode -> preprocess -> onnxruntime -> pool -> normalise.

Built from the model bytes (or a verified cache file) and a ``ModelConfig``. What the config
leaves open (input size, layout) is read from the model's input shape (``onnx_session``), and the
resolved config (``preprocessing``) is what gets stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImgEmbedError, InferenceFailed, InvalidConfig, InvalidModel
from ..model_stats import Meter, timed
from ..onnx.optimized_graphs import GraphPlan
from ..onnx.session import first_line, make_session, read_input_geometry, runs_on
from ..vectors import MAX_DIMENSIONS, l2_normalize, pool
from .decode import decode_image
from .model_config import ModelConfig
from .pipeline_spec import built_config, outside_config, read_spec
from .preprocessing import build_transforms, resolve_config
from .transforms import resize_threads


class ImageTower:
    """Decode -> preprocess -> onnxruntime -> pool -> L2-normalise, for one stored model."""

    def __init__(self, source: bytes | Path | None, config: ModelConfig, *, threads: int = 1, provider: str = "cpu",
                 graph: GraphPlan | None = None, session: Any = None):
        """``session``: one made elsewhere (a ``RemoteSession``: an inference server runs the graph)."""
        self.session = session if session is not None else make_session(source, threads, provider, graph)
        self.threads = threads
        self.provider = runs_on(self.session)
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

    # The three steps time themselves into a meter, if given (imgembed.model_stats): every path
    # that embeds goes through them.

    def decode(self, data: bytes, *, max_pixels: int, exact: bool = False, meter: Meter | None = None) -> Image.Image:
        with timed(meter, "decode"):
            return decode_image(
                data, max_pixels=max_pixels,
                draft_size=None if exact else self.draft_size,
                background=self.config.preprocess.background,
            )

    def preprocess(self, img: Image.Image, *, exact: bool = False, meter: Meter | None = None) -> np.ndarray:
        with timed(meter, "preprocess"):
            return (self.transform if exact else self.fast_transform)(img)

    def run(self, tensors: Sequence[np.ndarray], meter: Meter | None = None) -> np.ndarray:
        """Batch of preprocessed tensors -> ``(N, D)`` float32 embeddings."""
        if self.geometry.batch == 1 and len(tensors) > 1:
            return np.concatenate([self.run([t], meter) for t in tensors])
        batch: np.ndarray = np.stack(tensors).astype(self.geometry.dtype, copy=False)
        try:
            with timed(meter, "inference", len(tensors)):
                (raw,) = self.session.run([self.output_name], {self.geometry.name: batch})
        except ImgEmbedError:  # an inference server's own errors say what failed
            raise
        except Exception as exc:
            raise InferenceFailed(f"onnxruntime failed: {first_line(exc)}") from exc
        vectors = pool(np.asarray(raw, dtype=np.float32), self.config.output.pooling, self.geometry.layout)
        if not np.isfinite(vectors).all():
            raise InferenceFailed("the model produced NaN or infinite values for this image")
        return l2_normalize(vectors) if self.config.output.normalize else vectors

    def embed(self, data: bytes, *, max_pixels: int, exact: bool = False, meter: Meter | None = None) -> np.ndarray:
        img = self.decode(data, max_pixels=max_pixels, exact=exact, meter=meter)
        with resize_threads(self._resize_pool, self.threads):
            tensor = self.preprocess(img, exact=exact, meter=meter)
        vector = self.run([tensor], meter)[0]
        if meter is not None:
            meter.images += 1
        return vector

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
