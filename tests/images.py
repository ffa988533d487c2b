"""Real image files in every supported format, made with Pillow's own encoders."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo_like(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: compresses and resizes like a photo, not like flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1),
                     127 + 100 * np.sin((x + y) / 7 + seed)], axis=-1)
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def jpeg(img: Image.Image | None = None, quality: int = 95, **params) -> bytes:
    return encode(img if img is not None else photo_like(), "JPEG", quality=quality, **params)


def png(img: Image.Image | None = None) -> bytes:
    return encode(img if img is not None else photo_like(), "PNG")
