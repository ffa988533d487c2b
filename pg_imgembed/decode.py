"""Image bytes -> an upright 8-bit RGB ``PIL.Image``, with a decompression-bomb guard.

Only the header is parsed before the pixel-count check, so an oversized image is rejected without
allocating its pixels. ``draft_size`` enables JPEG DCT scaling (the "fast" decode mode): the
decoder produces a smaller image directly, never below the requested size.
"""

from __future__ import annotations

import ctypes
import io
import re
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import ExifTags, Image, ImageOps

from .errors import ImageTooLarge, UndecodableImage

# Our own guard replaces Pillow's global one (which warns, then fails at a fixed size).
Image.MAX_IMAGE_PIXELS = None


def _silence_libraries() -> None:
    """Keep decoder chatter out of the server log (a backend's stderr): a hostile TIFF makes
    libtiff print a line per bad strip or tag, thousands per image. Decoding errors still surface
    as exceptions; Pillow's own warnings about odd files say nothing a user can act on."""
    warnings.filterwarnings("ignore", module=r"PIL\.")
    try:
        with open("/proc/self/maps") as maps:  # Pillow's own copy of libtiff, or the system's
            fields = [line.split(maxsplit=5) for line in maps if "libtiff" in line]
    except OSError:
        return
    for path in {f[5].strip() for f in fields if len(f) == 6 and f[5].startswith("/")}:
        try:
            libtiff = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("TIFFSetErrorHandler", "TIFFSetWarningHandler"):
            setter = getattr(libtiff, name, None)
            if setter is not None:
                setter.restype = ctypes.c_void_p
                setter.argtypes = (ctypes.c_void_p,)
                setter(None)


_silence_libraries()

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}

# Only these decoders run: Pillow knows many more (EPS would start Ghostscript), and each one is
# attack surface inside a database server. (JPEG also opens MPO, the multi-picture JPEG of phones.)
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def keep_buffers(megabytes: int) -> None:
    """Let Pillow keep up to ``megabytes`` of freed image memory for the next image.

    A 12 MP photo takes 48 MB of pixels. Given back after each image, that memory is mapped and
    zeroed again by the kernel for the next one: in a backend here, decoding a 12 MP JPEG took
    51 ms that way and 35 ms reusing it. Pillow frees what exceeds a lowered limit.
    """
    blocks = megabytes * 2**20 // Image.core.get_block_size()
    if Image.core.get_blocks_max() != blocks:
        Image.core.set_blocks_max(blocks)


def sniff_format(data: bytes) -> str:
    """A short name for what the bytes look like, for error messages."""
    signatures = (
        (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"),
        (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"%PDF", "PDF"),
    )
    for magic, name in signatures:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIF/AVIF"
    if data[:1] in (b"{", b"[", b"<"):
        return "text"
    return "unknown"


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    draft_size: tuple[int, int] | None = None,
    background: Sequence[int] | None = None,
) -> Image.Image:
    """Decode, apply EXIF orientation and convert to RGB; raise ``ImageError`` subclasses."""
    img = _open(data)
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image of {width}x{height} pixels ({width * height} pixels) exceeds "
            f"imgembed.max_image_pixels ({max_pixels})",
            detail=f"{img.format} image, {len(data)} bytes",
            hint="Downscale the image before storing it, or have a superuser raise imgembed.max_image_pixels "
            "if images this large are expected.",
        )
    # MPO (multi-picture JPEG, as many cameras and phones write) is a JPEG too: same DCT scaling.
    if draft_size is not None and img.format in ("JPEG", "MPO"):
        img.draft("RGB", _stored_draft_size(img, draft_size))
    try:
        img.load()
        # exif_transpose copies the whole image even when nothing needs turning (36 MB at 12 MP).
        if _orientation(img) not in (None, 1):
            img = ImageOps.exif_transpose(img)
        return to_rgb(img, background)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise _undecodable(data, f"{img.format} data is corrupt or truncated: {exc}") from exc


def _stored_draft_size(img: Image.Image, draft_size: tuple[int, int]) -> tuple[int, int]:
    """``draft_size`` is for the upright image, but the decoder scales the stored one: EXIF
    orientations 5-8 transpose it, so swap the sides, or a non-square request could decode
    below the requested size (a stored 1600x400 asked for 300x50 upright would decode at 1/4,
    400x100, i.e. 100x400 upright)."""
    return (draft_size[1], draft_size[0]) if _orientation(img) in (5, 6, 7, 8) else draft_size


def _orientation(img: Image.Image) -> int | None:
    try:
        return img.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # unreadable EXIF: exif_transpose would fail on it or ignore it the same way
        return None


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(io.BytesIO(data), formats=FORMATS)
    except Exception as exc:  # Pillow raises several types for unknown data
        sniffed = sniff_format(data)
        if sniffed in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WebP"):
            raise _undecodable(data, f"{sniffed} header is corrupt or truncated") from exc
        raise _undecodable(data, "not a known image format") from exc


def _undecodable(data: bytes, reason: str) -> UndecodableImage:
    kind = sniff_format(data)
    hint = "Supported formats: JPEG, PNG, WebP, GIF, BMP, TIFF."
    path = _file_name(data)
    if path is not None:
        hint = (f"These bytes are the text {path!r}, which looks like a file name: pass the file's contents "
                "(read it in the client, or pg_read_binary_file() on the server). " + hint)
    return UndecodableImage(
        f"cannot decode image ({len(data)} bytes{'' if kind == 'unknown' else f', looks like {kind}'}): {reason}",
        hint=hint,
    )


_IMAGE_SUFFIX = re.compile(r"\.(jpe?g|png|webp|gif|bmp|tiff?|heic|avif)$", re.I)


def _file_name(data: bytes) -> str | None:
    """The text, if the bytes are a short line that looks like a path or an image file name."""
    if len(data) > 4096:
        return None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    if not text.isprintable() or not (text.startswith(("/", "~/", "./", "../", "file:")) or _IMAGE_SUFFIX.search(text)):
        return None
    return text


def to_rgb(img: Image.Image, background: Sequence[int] | None = None) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB.

    Alpha is dropped (as ``convert("RGB")`` does in the reference pipelines) unless a
    ``background`` colour is given to composite onto. 16-bit and 32-bit greyscale are scaled
    down, not clipped, which is what ``convert`` would do to them.
    """
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        img = _scale_to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha and background is not None:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode == "P" and has_alpha:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F" and not np.isfinite(arr).all():
        bad = int(arr.size - np.isfinite(arr).sum())
        raise UndecodableImage(
            f"image has {bad} pixel value(s) that are NaN or infinite ({img.width}x{img.height} float image)",
            hint="Float images must hold finite values; convert it to an 8- or 16-bit format first.")
    top = 65535.0 if img.mode != "F" else max(float(arr.max()), 1.0)
    if img.mode == "I" and arr.max() > 65535:
        top = float(arr.max())
    return Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")
