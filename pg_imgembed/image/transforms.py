"""Small pure image transforms, composed into a preprocessing pipeline.

Each transform is a frozen dataclass with ``__call__``: PIL transforms come first (resize, crop),
then ``ToFloatArray`` switches to an ``HxWxC`` float32 array for the arithmetic ones. Their
arithmetic follows the reference implementations (Hugging Face image processors, torchvision),
because a stored vector is only useful if it equals the one the model's own pipeline gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

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
        return _resize(img, self.output_size(img.size), self.resample)

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        width, height = size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.size * long / short)
        return (self.size, new_long) if width <= height else (new_long, self.size)


@dataclass(frozen=True)
class ResizeExact:
    """Warp to exactly ``height`` x ``width`` (aspect ratio not kept), like Keras ``load_img``."""

    height: int
    width: int
    resample: str

    def __call__(self, img: Image.Image) -> Image.Image:
        return _resize(img, self.output_size(img.size), self.resample)

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return (self.width, self.height)


# Threads a resize may split into row bands (see resize_threads); unset, it runs in one piece.
_band_threads: ContextVar[tuple[Executor, int] | None] = ContextVar("pg_imgembed_band_threads", default=None)
# Smaller images gain little from bands: 640x480 resized 1.5 -> 1.3 ms, 1080p 7.0 -> 4.9, 12 MP 32 -> 20.
MIN_BANDED_PIXELS = 1_000_000


@contextmanager
def resize_threads(pool: Executor, threads: int) -> Iterator[None]:
    """Within the block, large resizes in this thread run in ``threads`` row bands on ``pool``.

    For one image at a time (a row-by-row call), whose resize would otherwise leave the
    inference threads' cores idle. Threads of a batch's decode pool do not inherit it: there,
    other images already keep the cores busy.
    """
    token = _band_threads.set((pool, threads) if threads > 1 else None)
    try:
        yield
    finally:
        _band_threads.reset(token)


def _resize(img: Image.Image, size: tuple[int, int], resample: str) -> Image.Image:
    if img.size == size:
        return img
    banding = _band_threads.get()
    if banding is not None and img.width * img.height >= MIN_BANDED_PIXELS:
        pool, threads = banding
        bounds = band_bounds(img.height, size[1], threads)
        if bounds is not None:
            return _resize_in_bands(img, size, resample, bounds, pool)
    # reducing_gap=None: exact resampling, as the reference pipelines call it.
    return img.resize(size, resample=RESAMPLE[resample], reducing_gap=None)


def band_bounds(height: int, new_height: int, bands: int) -> list[int] | None:
    """Output rows where bands may split a resize from ``height`` to ``new_height`` without
    changing a pixel, or None.

    A band is Pillow's resize of a box of source rows (whole rows: the horizontal pass is the
    same). It computes the same filter positions and weights as the whole resize only if the box
    edges survive Pillow's 32-bit floats and the per-row scale is exact in binary: a dyadic scale
    (height / new_height with a power-of-two denominator: any resize to 256 rows, 2x, 4x, ...).
    Otherwise the last bit of a weight can differ, so the resize stays in one piece.
    """
    scale = Fraction(height, new_height)
    bands = min(bands, new_height)
    if bands < 2 or scale.denominator & (scale.denominator - 1):
        return None
    bounds = [new_height * i // bands for i in range(bands + 1)]
    if any(Fraction(float(np.float32(b * scale))) != b * scale for b in bounds):
        return None
    return bounds


def _resize_in_bands(img: Image.Image, size: tuple[int, int], resample: str, bounds: list[int],
                     pool: Executor) -> Image.Image:
    width, height = img.size
    scale = Fraction(height, size[1])

    def band(top: int, bottom: int) -> Image.Image:  # Pillow releases the GIL while resampling
        return img.resize((size[0], bottom - top), resample=RESAMPLE[resample], reducing_gap=None,
                          box=(0, float(top * scale), width, float(bottom * scale)))

    out = Image.new(img.mode, size)
    for top, part in zip(bounds, pool.map(band, bounds[:-1], bounds[1:])):
        out.paste(part, (0, top))
    return out


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
        if img.size == (self.width, self.height):
            return img
        return img.crop(self.box(img.size))

    def box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the crop in an image of ``size``; may reach outside it."""
        left = self._offset(size[0] - self.width)
        top = self._offset(size[1] - self.height)
        return (left, top, left + self.width, top + self.height)

    def _offset(self, margin: int) -> int:
        if self.rounding != "round":
            return margin // 2
        if margin < 0:
            # torchvision pads an image smaller than the crop by floor(-margin / 2) at the
            # top/left, then crops at 0; round(-1.5) == -2 would shift it one pixel too far.
            return -(-margin // 2)
        return int(round(margin / 2.0))


_CONTINUOUS = {"bilinear", "bicubic", "lanczos", "hamming"}  # filters without steps; see ResizeThenCrop


@dataclass(frozen=True)
class ResizeThenCrop:
    """``resize`` then ``crop``, resampling only the columns the crop keeps (about half of a 16:9
    photo's), then only its rows.

    Pillow resamples a box of the source straight to the crop width: the same filter positions,
    but Pillow takes the box as 32-bit floats and picks its fixed-point precision from the
    coefficients it computes, so values can differ. Measured: when shrinking at least 2x with a
    continuous filter, by at most one 8-bit level (on under 1% of values for a shortest-edge
    resize, tested); for milder factors or upscaling, by several levels on a quarter of them, and
    with filters that have steps (nearest, box) a shift can pick another pixel: those run as two
    steps. So only decode "fast" uses it, whose DCT-scaled decode leaves at least 2x to shrink;
    "exact" keeps the reference pipelines' pixels. On full-size photos it would save 3 of 7 ms
    at 1080p and 10 of 30 ms at 12 MP.
    """

    resize: ResizeShortestEdge | ResizeExact
    crop: CenterCrop

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        new_width, new_height = self.resize.output_size(img.size)
        left, top, right, bottom = self.crop.box((new_width, new_height))
        inside = left >= 0 and top >= 0 and right <= new_width and bottom <= new_height
        shrinks_2x = width >= 2 * new_width and height >= 2 * new_height
        if not (inside and shrinks_2x and self.resize.resample in _CONTINUOUS):
            return self.crop(self.resize(img))
        resample = RESAMPLE[self.resize.resample]
        scale_x, scale_y = width / new_width, height / new_height
        # Columns, then rows, in two calls: one call with both boxes differs more (2 levels, 18% of values).
        columns = img.resize((right - left, height), resample=resample,
                             box=(left * scale_x, 0, right * scale_x, height), reducing_gap=None)
        return columns.resize((right - left, bottom - top), resample=resample,
                              box=(0, top * scale_y, right - left, bottom * scale_y), reducing_gap=None)


@dataclass(frozen=True)
class ToFloatArray:
    def __call__(self, img: Image.Image) -> np.ndarray:
        return np.asarray(img, dtype=np.float32)


@dataclass(frozen=True)
class ToUint8Array:
    """Pipeline models take the pixels as they are; the graph does the arithmetic."""

    def __call__(self, img: Image.Image) -> np.ndarray:
        return np.asarray(img, dtype=np.uint8)


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


def compose(transforms: Sequence[Callable[[Any], Any]]) -> Compose:
    return Compose(tuple(transforms))
