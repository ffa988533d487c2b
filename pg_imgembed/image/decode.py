"""Image bytes -> an upright 8-bit RGB ``PIL.Image``, with a decompression-bomb guard.

Only the header is parsed before the pixel-count check, so an oversized image is rejected without
allocating its pixels. ``draft_size`` enables JPEG DCT scaling (the "fast" decode mode): the
decoder produces a smaller image directly, never below the requested size.

HEIC/HEIF (phones' photos) is decoded by libheif through ``pi_heif``, imported on the first HEIF
image only; AVIF by Pillow's own libavif decoder.
"""

from __future__ import annotations

import ctypes
import io
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps

from ..errors import ImageError, ImageTooLarge, UndecodableImage

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

# Only these of Pillow's decoders run: Pillow knows many more (EPS would start Ghostscript), and each
# one is attack surface inside a database server. (JPEG also opens MPO, the multi-picture JPEG of
# phones.) HEIF is not Pillow's: _open_heif hands those bytes to libheif directly.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
SUPPORTED = "JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, HEIC/HEIF"

# ISO base media file brands (the ftyp box). mif1/msf1/miaf only say "an image file": the
# compatible brands tell HEVC (HEIC) from AV1 (AVIF).
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_GENERIC_BRANDS = {b"mif1", b"msf1", b"mif2", b"miaf"}


def decoders() -> dict[str, str]:
    """Each format this runtime decodes and the library (and version) that decodes it."""
    from PIL import features

    heif = heif_decoder()
    libheif = heif.libheif_info()
    hevc = ", ".join(libheif.get("decoders", {}).values()) or "no HEVC decoder"
    turbo = features.check_feature("libjpeg_turbo")
    jpeg = f"libjpeg-turbo {features.version('libjpeg_turbo')}" if turbo else f"libjpeg {features.version('jpg')}"
    return {
        "JPEG": jpeg, "PNG": f"zlib {features.version('zlib')}",
        "WebP": f"libwebp {features.version('webp')}", "GIF": "Pillow", "BMP": "Pillow",
        "TIFF": f"libtiff {features.version('libtiff')}", "AVIF": f"libavif {features.version('avif')}",
        "HEIC/HEIF": f"libheif {libheif['libheif']} ({hevc}), pi-heif {heif.__version__}",
    }


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
    container = image_container(data)
    if container is not None:
        return container
    if data[4:8] == b"ftyp" and data[8:12] in _GENERIC_BRANDS:
        return "HEIF/AVIF"
    if data[:1] in (b"{", b"[", b"<"):
        return "text"
    return "unknown"


def image_container(data: bytes) -> str | None:
    """"HEIF" (HEVC-coded: HEIC) or "AVIF" from the ftyp box's brands, else None."""
    if data[4:8] != b"ftyp":
        return None
    size = min(int.from_bytes(data[:4], "big"), 4096)  # a hostile size reads no further than this
    major = data[8:12]
    brands = [data[i:i + 4] for i in range(16, size - 3, 4)]
    if major in _HEIF_BRANDS:
        return "HEIF"
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major in _GENERIC_BRANDS:
        if _HEIF_BRANDS.intersection(brands):
            return "HEIF"
        if _AVIF_BRANDS.intersection(brands):
            return "AVIF"
    return None


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
    if img.format == "HEIF":  # the size reported is after cropping (clap): libheif decodes the declared one
        width, height = max([(width, height), *_declared_heif_sizes(data)], key=lambda size: size[0] * size[1])
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
    except (OSError, ValueError, SyntaxError, RuntimeError, EOFError, Image.DecompressionBombError) as exc:
        if img.format == "HEIF":
            raise _heif_error(data, str(exc).strip(), header=False) from exc
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
    container = image_container(data)
    if container == "HEIF":
        return _open_heif(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(io.BytesIO(data), formats=("AVIF",) if container == "AVIF" else FORMATS)
    except Exception as exc:  # Pillow raises several types for unknown data
        sniffed = sniff_format(data)
        if sniffed in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WebP", "AVIF"):
            raise _undecodable(data, f"{sniffed} header is corrupt or truncated") from exc
        raise _undecodable(data, "not a known image format") from exc


def _open_heif(data: bytes) -> Image.Image:
    """The primary image of a HEIF file, its header parsed by libheif and nothing decoded yet.

    libheif applies the file's transformations (irot, imir, clap) when it decodes, and pi_heif
    resets the EXIF orientation (which HEIF readers must ignore; phones write both) to 1, so the
    rotation happens exactly once. Thumbnails, depth maps and auxiliary images (HDR gain maps,
    alpha of other items) are never decoded.
    """
    missing = _missing_heif_bytes(data)
    if missing is not None:
        raise _undecodable(data, f"HEIF data is truncated: {missing}")
    heif = heif_decoder()
    unreadable = "HEIF header is corrupt or truncated: libheif cannot read the primary image"
    try:
        img = heif.HeifImageFile(io.BytesIO(data))
    except IndexError as exc:  # no top-level image could be read
        raise _undecodable(data, unreadable) from exc
    except Exception as exc:  # pi_heif turns libheif's errors into SyntaxError
        raise _heif_error(data, str(exc).strip(), header=True) from exc
    # libheif skips a top-level image it cannot read; another (a burst frame) must not stand in.
    if not img.info.get("primary"):
        raise _undecodable(data, unreadable)
    return img


def _heif_error(data: bytes, message: str, *, header: bool) -> ImageError:
    """libheif's refusals: its security limits (items, tiles, sizes, box sizes) are a limit
    exceeded (54000) and say which; anything else is undecodable (22P03)."""
    if "security limit" in message.lower():
        return ImageTooLarge(
            f"HEIF image exceeds a libheif security limit: {message}",
            detail=f"HEIF image, {len(data)} bytes",
            hint="libheif refuses files beyond its limits on items, tiles, image size and box sizes; "
            "they stay on. Re-encode the image (for example as JPEG) before storing it.",
        )
    return _undecodable(data, f"HEIF {'header' if header else 'data'} is corrupt or truncated: {message}")


def _missing_heif_bytes(data: bytes) -> str | None:
    """What a truncated HEIF file lacks, from its item locations (``iloc``), else None.

    libheif decodes a grid whose last tiles are cut off as an image with black tiles, without an
    error: a truncated upload would embed as a different picture. Anything this walk does not
    understand is left to libheif.
    """
    try:
        meta = _child_box(data, 0, len(data), b"meta")
        iloc = _child_box(data, meta[0] + 4, meta[1], b"iloc") if meta else None  # meta is a full box
        if iloc is None:
            return None
        pos, end = iloc
        version = data[pos]
        pos += 4
        offset_size, length_size = data[pos] >> 4, data[pos] & 15
        base_size, index_size = data[pos + 1] >> 4, (data[pos + 1] & 15) if version in (1, 2) else 0
        pos += 2
        if offset_size + length_size == 0:  # nothing located in the file: nothing to check
            return None

        def read(size: int) -> int:
            nonlocal pos
            value = int.from_bytes(data[pos:pos + size], "big")
            pos += size
            return value

        items = read(2 if version < 2 else 4)
        for _ in range(items):
            item = read(2 if version < 2 else 4)
            method = read(2) & 15 if version in (1, 2) else 0
            read(2)  # data_reference_index
            base = read(base_size)
            for _ in range(read(2)):
                read(index_size)
                offset, length = read(offset_size), read(length_size)
                if method == 0 and base + offset + length > len(data):
                    return f"item {item} needs bytes up to {base + offset + length}"
                if pos > end:  # counts larger than the box: each extent reads a byte at least
                    return None
            if pos > end:
                return None
    except IndexError:
        return None
    return None


def _declared_heif_sizes(data: bytes) -> list[tuple[int, int]]:
    """Every image size the file declares (``ispe`` properties: images, grids, tiles, thumbnails)."""
    meta = _child_box(data, 0, len(data), b"meta")
    iprp = _child_box(data, meta[0] + 4, meta[1], b"iprp") if meta else None
    ipco = _child_box(data, *iprp, b"ipco") if iprp else None
    sizes, start = [], ipco
    while start is not None:
        ispe = _child_box(data, start[0], start[1], b"ispe")
        if ispe is None or ispe[1] - ispe[0] < 12:
            break
        sizes.append((int.from_bytes(data[ispe[0] + 4:ispe[0] + 8], "big"), int.from_bytes(data[ispe[0] + 8:ispe[0] + 12], "big")))
        start = (ispe[1], start[1])
    return sizes


def _child_box(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """(payload start, box end) of the first ``kind`` box among the boxes in data[start:end]."""
    while start + 8 <= end:
        size, found = int.from_bytes(data[start:start + 4], "big"), data[start + 4:start + 8]
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[start + 8:start + 16], "big"), 16
        elif size == 0:
            size = end - start
        if size < header:
            return None
        if found == kind:
            return start + header, min(start + size, end)
        start += size
    return None


_heif: Any = None


def heif_decoder() -> Any:
    """``pi_heif``, imported and configured on first use: the import costs 30-50 ms here and no other
    image needs it. Its Pillow plugin is not registered: HEIF bytes reach it only through
    ``_open_heif``."""
    global _heif
    if _heif is None:
        import pi_heif

        pi_heif.options.THUMBNAILS = False  # listed per image otherwise; never decoded here
        pi_heif.options.DEPTH_IMAGES = False
        pi_heif.options.AUX_IMAGES = False
        pi_heif.options.DISABLE_SECURITY_LIMITS = False
        _heif = pi_heif
    return _heif


def _undecodable(data: bytes, reason: str) -> UndecodableImage:
    kind = sniff_format(data)
    hint = f"Supported formats: {SUPPORTED}."
    path = _file_name(data)
    if path is not None:
        hint = (f"These bytes are the text {path!r}, which looks like a file name: pass the file's contents "
                "(read it in the client, or pg_read_binary_file() on the server). " + hint)
    return UndecodableImage(
        f"cannot decode image ({len(data)} bytes{'' if kind == 'unknown' else f', looks like {kind}'}): {reason}",
        hint=hint,
    )


_IMAGE_SUFFIX = re.compile(r"\.(jpe?g|png|webp|gif|bmp|tiff?|heic|heif|avif)$", re.I)


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
