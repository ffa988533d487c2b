"""Small pure image transforms, composed into a preprocessing pipeline.

Each transform is a frozen dataclass with ``__call__``: PIL transforms come first (resize, crop),
then ``ToFloatArray`` switches to an ``HxWxC`` float32 array for the arithmetic ones. Their
arithmetic follows the reference implementations (Hugging Face image processors, torchvision),
because a stored vector is only useful if it equals the one the model's own pipeline gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class ResizeShortestEdge:
    """Shortest side to ``size``; the long side follows as ``int(size * long / short)``
    (the formula of torchvision's ``Resize(int)`` and HF ``get_resize_output_image_size``)."""

    size: int
    resample: str

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.size * long / short)
        new_size = (self.size, new_long) if width <= height else (new_long, self.size)
        return _resize(img, new_size, self.resample)


@dataclass(frozen=True)
class ResizeExact:
    """Warp to exactly ``height`` x ``width`` (aspect ratio not kept), like Keras ``load_img``."""

    height: int
    width: int
    resample: str

    def __call__(self, img: Image.Image) -> Image.Image:
        return _resize(img, (self.width, self.height), self.resample)


def _resize(img: Image.Image, size: tuple[int, int], resample: str) -> Image.Image:
    if img.size == size:
        return img
    # reducing_gap=None: exact resampling, as the reference pipelines call it.
    return img.resize(size, resample=RESAMPLE[resample], reducing_gap=None)


@dataclass(frozen=True)
class CenterCrop:
    """Crop the centre; pads with black where the image is smaller than the crop.

    ``rounding`` picks how an odd margin splits: ``floor`` as HF image processors, ``round`` as
    torchvision (``int(round(margin / 2))``). The two differ by one pixel for odd margins.
    """

    height: int
    width: int
    rounding: str = "floor"

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        if (width, height) == (self.width, self.height):
            return img
        top = self._offset(height - self.height)
        left = self._offset(width - self.width)
        return img.crop((left, top, left + self.width, top + self.height))

    def _offset(self, margin: int) -> int:
        if self.rounding != "round":
            return margin // 2
        if margin < 0:
            # torchvision pads an image smaller than the crop by floor(-margin / 2) at the
            # top/left, then crops at 0; round(-1.5) == -2 would shift it one pixel too far.
            return -(-margin // 2)
        return int(round(margin / 2.0))


@dataclass(frozen=True)
class ToFloatArray:
    def __call__(self, img: Image.Image) -> np.ndarray:
        return np.asarray(img, dtype=np.float32)


@dataclass(frozen=True)
class Rescale:
    factor: float

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        # float64 product, as HF ``rescale`` computes it, then back to float32.
        return (arr.astype(np.float64) * self.factor).astype(np.float32)


@dataclass(frozen=True)
class Normalize:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return (arr - mean) / std


@dataclass(frozen=True)
class ReverseChannels:
    """RGB -> BGR, for models trained on OpenCV/Caffe-ordered input."""

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        return arr[..., ::-1]


@dataclass(frozen=True)
class ChannelsFirst:
    def __call__(self, arr: np.ndarray) -> np.ndarray:
        return arr.transpose(2, 0, 1)


@dataclass(frozen=True)
class Compose:
    transforms: tuple[Callable[[Any], Any], ...]

    def __call__(self, img: Image.Image) -> np.ndarray:
        out: Any = img
        for transform in self.transforms:
            out = transform(out)
        return np.ascontiguousarray(out)

    def __iter__(self):
        return iter(self.transforms)


def compose(transforms: Sequence[Callable[[Any], Any]]) -> Compose:
    return Compose(tuple(transforms))
