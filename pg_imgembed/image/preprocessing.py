"""Preprocessing assembled from a config: what the model's input fixes is filled in, then the
config becomes a ``Compose`` of the small transforms in ``transforms``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import InvalidConfig
from ..onnx.session import InputGeometry
from .model_config import ModelConfig, Resize
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
    ToUint8Array,
    compose,
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
