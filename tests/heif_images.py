"""HEIC and AVIF files for tests: AVIF from Pillow's own encoder, HEIC from pillow-heif's (libheif +
x265, GPL: a test-time tool in requirements-dev.txt, never in the runtime), and hostile variants
made by editing the boxes of real files."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from tests.images import encode

pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC fixtures need pillow-heif's encoder (requirements-dev.txt)")


def heic(img: Image.Image, *, quality: int = 80, lossless: bool = False, tile_size: int = 0, orientation: int = 1,
         thumbnails: tuple[int, ...] = (), extra: tuple[Image.Image, ...] = (), bit_depth: int = 8) -> bytes:
    """``img`` as the *stored* pixels of the primary image. ``orientation`` (1, 3, 6 or 8) is written
    as phones write it: an irot box (applied by readers) and the same EXIF orientation (which HEIF
    readers must ignore). ``extra``: further, non-primary images (a burst, a second picture)."""
    if bit_depth != 8:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint16) * 257  # 16-bit input, stored as 10-bit
        heif = pillow_heif.from_bytes("RGB;16", img.size, arr.tobytes())
    else:
        heif = pillow_heif.from_pillow(img)
    for other in extra:
        heif.add_from_pillow(other)
    params: dict = {"quality": -1 if lossless else quality, "tile_size": tile_size, "primary_index": 0}
    if lossless:  # RGB kept as is (matrix 0: identity), no chroma subsampling
        params.update(chroma=444, matrix_coefficients=0)
    if thumbnails:
        params["thumbnails"] = list(thumbnails)
    if orientation != 1:
        # pillow-heif's own handling of an orientation differs between values and byte orders:
        # a big-endian EXIF orientation 3 is written as irot 2 over the pixels as given, then
        # _oriented sets both to the orientation asked for (stored_size checks the pixels' size).
        exif = Image.Exif()
        exif[0x0112] = 3
        params["exif"] = exif.tobytes()
    buf = io.BytesIO()
    heif.save(buf, **params)
    data = buf.getvalue()
    if orientation != 1:
        data = _oriented(data, orientation)
    return data


_IROT = {3: 2, 6: 3, 8: 1}  # EXIF orientation -> irot angle (x 90 degrees anticlockwise)


def _oriented(data: bytes, orientation: int) -> bytes:
    """The file's irot angle and EXIF orientation (pillow-heif writes EXIF 1 next to an irot) set."""
    (irot,) = box_offsets(data, b"irot")
    out = bytearray(data)
    out[irot + 8] = _IROT[orientation]
    tag = b"\x01\x12\x00\x03\x00\x00\x00\x01\x00"  # big-endian EXIF: Orientation, SHORT, count 1
    at = data.index(tag) + len(tag)
    out[at] = orientation
    return bytes(out)


def avif(img: Image.Image, *, quality: int = 90, orientation: int = 1, **params) -> bytes:
    """Pillow's AVIF encoder writes ``orientation`` as irot/imir (its reader turns them back into EXIF)."""
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif
    return encode(img, "AVIF", quality=quality, **params)


def heif_info(data: bytes) -> dict:
    """What pillow-heif (libheif 1.23.6, a second build of the library) reads from the file: the
    reference for lossy files, and the EXIF orientation it found."""
    opened = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
    primary = opened[opened.primary_index]
    exif = Image.Exif()
    if primary.info.get("exif"):
        exif.load(primary.info["exif"])
    return {"image": primary.to_pillow(), "orientation": exif.get(0x0112),
            "thumbnails": primary.info.get("thumbnails"), "images": len(opened)}


# ---------------------------------------------------------------- boxes


def box_offsets(data: bytes, kind: bytes) -> list[int]:
    """Offsets of every ``kind`` box's size field (a byte search: the fixtures are known files)."""
    found, start = [], 0
    while (at := data.find(kind, start)) >= 0:
        found.append(at - 4)
        start = at + 4
    return found


def stored_size(data: bytes) -> tuple[int, int]:
    """The largest declared size (``ispe``): the primary image's or its grid's, before irot."""
    sizes = [struct.unpack(">II", data[at + 12:at + 20]) for at in box_offsets(data, b"ispe")]
    return max(sizes, key=lambda size: size[0] * size[1])


def with_ispe(data: bytes, width: int, height: int) -> bytes:
    """Every declared image size replaced: the header claims a huge image, the bitstream is small."""
    out = bytearray(data)
    for at in box_offsets(data, b"ispe"):
        out[at + 12:at + 20] = struct.pack(">II", width, height)
    return bytes(out)


def with_grid(data: bytes, rows: int, columns: int) -> bytes:
    """The grid descriptor (in idat) declares rows x columns tiles; the file holds the old ones."""
    at = box_offsets(data, b"idat")[0] + 8
    out = bytearray(data)
    assert out[at] == 0, "grid descriptor version"
    out[at + 2], out[at + 3] = rows - 1, columns - 1
    return bytes(out)


def with_self_reference(data: bytes) -> bytes:
    """The grid's first tile reference (iref dimg) made to point at the grid itself: an item loop."""
    at = box_offsets(data, b"dimg")[0]
    out = bytearray(data)
    grid_id = out[at + 8:at + 10]
    out[at + 12:at + 14] = grid_id  # from_item_ID, reference_count, first to_item_ID (16-bit ids)
    return bytes(out)


def with_box_size(data: bytes, kind: bytes, size: int) -> bytes:
    """A box that claims ``size`` bytes (far more than the file has)."""
    at = box_offsets(data, kind)[0]
    return data[:at] + struct.pack(">I", size) + data[at + 4:]


class _Uncounted(int):
    """pillow-heif refuses to write over 1000 items (libheif's reading limit): this counter never exceeds it."""

    def __iadd__(self, other: int) -> _Uncounted:
        return self

    def __gt__(self, other: object) -> bool:
        return False


def thousand_tiles() -> bytes:
    """A real 2048x2048 grid of 1024 tiles of 64 pixels: more items than libheif's limit of 1000."""
    from pillow_heif import misc

    original = misc.CtxEncode.__init__

    def uncounted(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._items_count = _Uncounted(0)

    misc.CtxEncode.__init__ = uncounted
    try:
        buf = io.BytesIO()
        pillow_heif.from_pillow(Image.new("RGB", (2048, 2048), (100, 120, 140))).save(buf, quality=30, tile_size=64)
        return buf.getvalue()
    finally:
        misc.CtxEncode.__init__ = original


# ---------------------------------------------------------------- hostile files


def hostile_cases(grid: bytes, avif: bytes) -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, SQLSTATE, start of the message): every path must give exactly these."""
    n = len(grid)
    return {
        "heic cut in half": (grid[:n // 2], "22P03",
                             f"cannot decode image ({n // 2} bytes, looks like HEIF): HEIF data is truncated: item "),
        "heic cut in its header": (grid[:200], "22P03",
                                   "cannot decode image (200 bytes, looks like HEIF): HEIF data is truncated: item "),
        "heic declaring 100000x100000": (with_ispe(grid, 100_000, 100_000), "54000",
                                         "image of 100000x100000 pixels (10000000000 pixels) exceeds imgembed.max_image_pixels"),
        "heic grid declaring 256x256 tiles": (with_grid(grid, 256, 256), "22P03",
                                              f"cannot decode image ({n} bytes, looks like HEIF): HEIF "),
        "heic grid referring to itself": (with_self_reference(grid), "22P03",
                                          f"cannot decode image ({n} bytes, looks like HEIF): HEIF header is corrupt "
                                          "or truncated: Invalid input: Image reference cycle"),
        "heic meta box of 2 GB": (with_box_size(grid, b"meta", 0x7FFFFFF0), "22P03",
                                  f"cannot decode image ({n} bytes, looks like HEIF): HEIF header is corrupt or truncated: "),
        "heic iloc box of 2 GB": (with_box_size(grid, b"iloc", 0x7FFFFFF0), "22P03",
                                  f"cannot decode image ({n} bytes, looks like HEIF): HEIF header is corrupt or truncated: "),
        "avif cut in half": (avif[:len(avif) // 2], "22P03",
                             f"cannot decode image ({len(avif) // 2} bytes, looks like AVIF): AVIF header is corrupt or truncated"),
        "avif declaring 60000x60000": (with_ispe(avif, 60_000, 60_000), "22P03",
                                       f"cannot decode image ({len(avif)} bytes, looks like AVIF): AVIF header is corrupt"),
        "avif declaring 12000x12000": (with_ispe(avif, 12_000, 12_000), "54000",
                                       "image of 12000x12000 pixels (144000000 pixels) exceeds imgembed.max_image_pixels"),
    }


HOSTILE = ["heic cut in half", "heic cut in its header", "heic declaring 100000x100000", "heic grid declaring 256x256 tiles",
           "heic grid referring to itself", "heic meta box of 2 GB", "heic iloc box of 2 GB", "avif cut in half",
           "avif declaring 60000x60000", "avif declaring 12000x12000"]
