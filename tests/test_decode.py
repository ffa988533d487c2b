"""decode_image / to_rgb / sniff_format on real files written by Pillow's encoders. No server."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from pg_imgembed.errors import ImageError, ImageTooLarge, UndecodableImage
from pg_imgembed.image.decode import decode_image, keep_buffers, sniff_format, to_rgb
from tests.images import encode, jpeg, photo_like, png

LIMIT = 50_000_000
SUPPORTED_HINT = "Supported formats: JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, HEIC/HEIF."


def decode(data: bytes, **kwargs) -> Image.Image:
    return decode_image(data, max_pixels=kwargs.pop("max_pixels", LIMIT), **kwargs)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int16)


def marked(width: int, height: int) -> Image.Image:
    """Grey image with a solid red 16x16 block in the top-left corner (survives JPEG)."""
    img = Image.new("RGB", (width, height), (128, 128, 128))
    img.paste((255, 0, 0), (0, 0, 16, 16))
    return img


def is_red(pixel: np.ndarray) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r > 200 and g < 60 and b < 60


def with_orientation(img: Image.Image, orientation: int) -> Image.Exif:
    exif = img.getexif()
    exif[0x0112] = orientation
    return exif


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt, params", [
    ("PNG", {}),
    ("BMP", {}),
    ("TIFF", {}),
    ("TIFF", {"compression": "tiff_lzw"}),
    ("WEBP", {"lossless": True}),
])
def test_lossless_formats_decode_to_the_exact_rgb_pixels(fmt, params):
    img = photo_like(37, 23, seed=3)
    out = decode(encode(img, fmt, **params))
    assert out.mode == "RGB"
    assert out.size == (37, 23)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_lossy_formats_decode_close_to_the_original(fmt):
    img = photo_like(64, 48, seed=1)
    out = decode(encode(img, fmt, quality=95))
    assert (out.mode, out.size) == ("RGB", (64, 48))
    # noisy source: lossy error is a few levels; another image of the kind is ~29 away
    assert np.abs(pixels(out) - pixels(img)).mean() < 10
    assert np.abs(pixels(out) - pixels(photo_like(64, 48, seed=2))).mean() > 20


def test_gif_decodes_through_its_palette():
    img = Image.new("RGB", (10, 6), (0, 0, 255))
    img.paste((255, 255, 0), (0, 0, 5, 6))
    out = decode(encode(img, "GIF"))
    assert out.mode == "RGB"
    assert tuple(out.getpixel((0, 0))) == (255, 255, 0)
    assert tuple(out.getpixel((9, 5))) == (0, 0, 255)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (20, 10), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3  # really animated
    out = decode(data)
    assert out.size == (20, 10)
    assert np.all(np.asarray(out) == (255, 0, 0))


def test_output_is_always_8_bit_rgb_array_compatible():
    out = decode(jpeg())
    arr = np.asarray(out)
    assert out.mode == "RGB"
    assert arr.dtype == np.uint8
    assert arr.shape == (48, 64, 3)


# ---------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation, corner", [
    (1, (0, 0)),  # upright already: the mark stays top-left
    (3, (-1, -1)),  # rotated 180: bottom-right
    (6, (0, -1)),  # stored rotated 90 CCW: shown rotated 90 CW, so the mark goes top-right
    (8, (-1, 0)),  # stored rotated 90 CW: shown rotated 90 CCW, so the mark goes bottom-left
])
def test_jpeg_exif_orientation_is_applied(orientation, corner):
    img = marked(80, 48)
    data = jpeg(img, exif=with_orientation(img, orientation))
    out = decode(data)
    expected_size = (48, 80) if orientation in (6, 8) else (80, 48)
    assert out.size == expected_size
    arr = np.asarray(out)
    row = 4 if corner[0] == 0 else arr.shape[0] - 5
    col = 4 if corner[1] == 0 else arr.shape[1] - 5
    assert is_red(arr[row, col]), f"mark not at {corner} for orientation {orientation}"
    # the other corners are grey
    for r, c in [(4, 4), (4, arr.shape[1] - 5), (arr.shape[0] - 5, 4), (arr.shape[0] - 5, arr.shape[1] - 5)]:
        if (r, c) != (row, col):
            assert not is_red(arr[r, c])


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_matches_pillow_transpose(orientation):
    img = photo_like(40, 24, seed=5)
    out = decode(encode(img, "PNG", exif=with_orientation(img, orientation)))
    method = Image.Transpose.ROTATE_270 if orientation == 6 else Image.Transpose.ROTATE_90
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img.transpose(method)))


def test_mirrored_orientation_flips_left_right():
    img = marked(40, 30)
    out = decode(encode(img, "PNG", exif=with_orientation(img, 2)))
    assert out.size == (40, 30)
    assert is_red(np.asarray(out)[4, 35])
    assert not is_red(np.asarray(out)[4, 4])


# ---------------------------------------------------------------- modes


def test_greyscale_l_becomes_three_equal_channels():
    grey = Image.fromarray(np.arange(60, dtype=np.uint8).reshape(6, 10) * 4, "L")
    out = np.asarray(decode(png(grey)))
    assert out.shape == (6, 10, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], np.asarray(grey))


def test_one_bit_image_becomes_black_and_white():
    bits = Image.fromarray(np.array([[0, 255, 0], [255, 255, 0]], dtype=np.uint8), "L").convert("1")
    assert bits.mode == "1"
    out = np.asarray(decode(png(bits)))
    np.testing.assert_array_equal(out[..., 0], [[0, 255, 0], [255, 255, 0]])
    assert np.array_equal(out[..., 0], out[..., 2])


def _rgba() -> Image.Image:
    """Left column opaque red, middle fully transparent (blue underneath), right half-transparent green."""
    arr = np.zeros((4, 3, 4), dtype=np.uint8)
    arr[:, 0] = (255, 0, 0, 255)
    arr[:, 1] = (0, 0, 255, 0)
    arr[:, 2] = (0, 255, 0, 128)
    return Image.fromarray(arr, "RGBA")


def test_rgba_alpha_is_dropped_by_default():
    out = np.asarray(decode(png(_rgba())))
    assert out.shape == (4, 3, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (0, 0, 255)  # the colour under the transparent pixel
    assert tuple(out[0, 2]) == (0, 255, 0)


def test_rgba_composited_onto_white_background():
    out = np.asarray(decode(png(_rgba()), background=(255, 255, 255))).astype(int)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)  # transparent -> white
    half = 128 / 255
    expected = [round(255 * (1 - half)), 255, round(255 * (1 - half))]
    assert np.abs(out[0, 2] - expected).max() <= 1


def test_la_alpha_dropped_or_composited():
    arr = np.array([[[10, 255], [200, 0]]], dtype=np.uint8)
    data = png(Image.fromarray(arr, "LA"))
    assert Image.open(io.BytesIO(data)).mode == "LA"
    assert np.asarray(decode(data))[0].tolist() == [[10, 10, 10], [200, 200, 200]]
    assert np.asarray(decode(data, background=(0, 64, 255)))[0].tolist() == [[10, 10, 10], [0, 64, 255]]


def _palette(transparent: bool) -> bytes:
    img = Image.new("P", (4, 2))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1, 1, 0, 2, 2])
    return encode(img, "PNG", **({"transparency": 2} if transparent else {}))


def test_palette_without_transparency_maps_to_palette_colours():
    data = _palette(transparent=False)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "P" and "transparency" not in opened.info
    out = np.asarray(decode(data))
    assert out[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 255, 0]]


def test_palette_with_transparency_drops_or_composites_alpha():
    data = _palette(transparent=True)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    dropped = np.asarray(decode(data))
    assert dropped[0, 2].tolist() == [0, 0, 255]  # palette colour of the transparent index
    white = np.asarray(decode(data, background=(255, 255, 255)))
    assert white[0, 2].tolist() == [255, 255, 255]
    assert white[0, 0].tolist() == [255, 0, 0]  # opaque pixels unchanged


def test_cmyk_jpeg_decodes_to_matching_rgb():
    img = photo_like(48, 32, seed=2)
    data = jpeg(img.convert("CMYK"))
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode(data)
    assert out.mode == "RGB"
    assert np.abs(pixels(out) - pixels(img)).mean() < 6


def test_sixteen_bit_greyscale_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 1000, 32768, 65535]], dtype=np.uint16)
    data = png(Image.fromarray(values))
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    out = np.asarray(decode(data))
    assert out[0, :, 0].tolist() == [0, 1, 4, 128, 255]
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])


def test_sixteen_bit_gradient_stays_monotonic_and_spans_the_range():
    values = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    out = np.asarray(decode(png(Image.fromarray(values))))[..., 0].reshape(-1)
    assert out[0] == 0 and out[-1] == 255
    assert np.all(np.diff(out.astype(int)) >= 0)
    assert len(np.unique(out)) > 200  # not collapsed to a few levels by clipping


def test_to_rgb_scales_32_bit_integer_above_16_bit_range_by_its_maximum():
    img = Image.fromarray(np.array([[0, 100_000, 200_000]], dtype=np.int32), "I")
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 128, 255]


def test_to_rgb_scales_float_image_by_its_maximum():
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 128, 255]


def test_to_rgb_leaves_rgb_pixels_alone():
    img = photo_like(8, 8)
    np.testing.assert_array_equal(np.asarray(to_rgb(img)), np.asarray(img))
    np.testing.assert_array_equal(np.asarray(to_rgb(img, (255, 255, 255))), np.asarray(img))


def test_to_rgb_composites_pa_onto_background():
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30] * 256)
    pa = img.convert("PA")
    pa.putalpha(0)
    assert np.asarray(to_rgb(pa))[0, 0].tolist() == [10, 20, 30]
    assert np.asarray(to_rgb(pa, (1, 2, 3)))[0, 0].tolist() == [1, 2, 3]


# ---------------------------------------------------------------- max_pixels guard


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def huge_blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG, compressed row by row so its pixels never exist in memory here."""
    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def test_oversized_image_is_rejected_before_pixels_are_decoded(monkeypatch):
    data = huge_blank_png(20000, 20000)
    assert Image.open(io.BytesIO(data)).size == (20000, 20000)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageTooLarge) as info:
        decode(data, max_pixels=100_000_000)
    err = info.value
    assert err.message == (
        "image of 20000x20000 pixels (400000000 pixels) exceeds imgembed.max_image_pixels (100000000)"
    )
    assert err.sqlstate == "54000"
    assert isinstance(err, ImageError)
    assert err.detail == f"PNG image, {len(data)} bytes"
    assert "imgembed.max_image_pixels" in err.hint


def test_image_exactly_at_the_limit_decodes_and_one_over_does_not():
    data = png(photo_like(30, 20))
    assert decode(data, max_pixels=600).size == (30, 20)
    with pytest.raises(ImageTooLarge, match=r"30x20 pixels \(600 pixels\).*\(599\)"):
        decode(data, max_pixels=599)


def test_limit_applies_to_stored_size_of_rotated_jpeg():
    img = photo_like(40, 10)
    data = jpeg(img, exif=with_orientation(img, 6))
    with pytest.raises(ImageTooLarge, match="40x10"):
        decode(data, max_pixels=399)


# ---------------------------------------------------------------- undecodable data


def test_empty_bytes_are_undecodable_with_exact_message():
    with pytest.raises(UndecodableImage) as info:
        decode(b"")
    assert info.value.message == "cannot decode image (0 bytes): not a known image format"
    assert info.value.hint == SUPPORTED_HINT
    assert info.value.sqlstate == "22P03"


def test_json_blob_is_undecodable_and_reported_as_text():
    blob = b'{"url": "https://example.com/cat.jpg"}'
    with pytest.raises(UndecodableImage) as info:
        decode(blob)
    assert info.value.message == (
        f"cannot decode image ({len(blob)} bytes, looks like text): not a known image format"
    )
    assert "JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, HEIC/HEIF" in info.value.hint


def test_random_bytes_are_undecodable():
    data = b"\x00" + np.random.default_rng(42).integers(0, 256, 999, dtype=np.uint8).tobytes()
    with pytest.raises(UndecodableImage) as info:
        decode(data)
    assert info.value.message == "cannot decode image (1000 bytes): not a known image format"
    assert isinstance(info.value, ImageError)


def test_truncated_jpeg_names_its_length_and_format():
    full = jpeg(photo_like(64, 48))
    data = full[: len(full) // 2]
    with pytest.raises(UndecodableImage) as info:
        decode(data)
    assert info.value.message.startswith(
        f"cannot decode image ({len(data)} bytes, looks like JPEG): JPEG data is corrupt or truncated: "
    )
    assert info.value.hint == SUPPORTED_HINT
    assert info.value.__cause__ is not None  # the Pillow error is chained for debugging


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_truncated_files_of_every_format_raise_undecodable(fmt):
    full = encode(photo_like(64, 48), fmt)
    data = full[: len(full) * 2 // 3]
    with pytest.raises(UndecodableImage) as info:
        decode(data)
    assert f"({len(data)} bytes, looks like {sniff_format(full)})" in info.value.message


def test_corrupted_bytes_never_escape_as_other_exceptions():
    rng = np.random.default_rng(7)
    sources = [encode(photo_like(24, 16), fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")]
    failures = 0
    for source in sources:
        for _ in range(40):
            data = bytearray(source)
            for _ in range(3):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
            try:
                decode(bytes(data[: rng.integers(1, len(data) + 1)]))
            except ImageError:
                failures += 1
    assert failures > 0  # the corruption did hit the decoders


# ---------------------------------------------------------------- draft (fast JPEG decode)


def test_jpeg_draft_decodes_smaller_but_not_below_the_requested_size():
    data = jpeg(photo_like(1600, 1200))
    assert decode(data).size == (1600, 1200)
    out = decode(data, draft_size=(200, 200))
    assert out.mode == "RGB"
    assert out.size[0] < 1600 and out.size[1] < 1200
    assert out.size[0] >= 200 and out.size[1] >= 200
    assert out.size == (400, 300)  # DCT scaling by 1/4: 1/8 would give 150 rows


def test_jpeg_draft_keeps_the_picture():
    img = photo_like(800, 600, seed=4)
    out = decode(jpeg(img), draft_size=(200, 150))
    reference = img.resize(out.size, Image.Resampling.BOX)
    assert np.abs(pixels(out) - pixels(reference)).mean() < 8


def test_jpeg_draft_never_scales_up():
    out = decode(jpeg(photo_like(120, 90)), draft_size=(224, 224))
    assert out.size == (120, 90)


def test_draft_size_is_ignored_for_non_jpeg():
    out = decode(png(photo_like(800, 600)), draft_size=(100, 100))
    assert out.size == (800, 600)


def test_draft_of_rotated_jpeg_is_not_below_the_requested_upright_size():
    # Stored 1600x400, shown 400x1600. A draft for 300 wide x 50 tall must scale the stored
    # image by its height (300) side, not its width.
    img = photo_like(1600, 400)
    data = jpeg(img, exif=with_orientation(img, 6))
    out = decode(data, draft_size=(300, 50))
    assert out.size[0] >= 300 and out.size[1] >= 50
    assert out.size[1] > out.size[0]  # still upright


def test_draft_applies_to_mpo_multi_picture_jpeg():
    data = encode(photo_like(1600, 1200), "MPO", save_all=True, append_images=[photo_like(1600, 1200, 1)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert decode(data).size == (1600, 1200)
    assert decode(data, draft_size=(200, 200)).size == (400, 300)


# ---------------------------------------------------------------- sniff_format


@pytest.mark.parametrize("fmt, name", [
    ("JPEG", "JPEG"), ("PNG", "PNG"), ("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("WEBP", "WebP"),
])
def test_sniff_format_recognises_real_files(fmt, name):
    assert sniff_format(encode(photo_like(8, 8), fmt)) == name


@pytest.mark.parametrize("data, name", [
    (b"MM\x00*\x00\x00\x00\x08", "TIFF"),
    (b"%PDF-1.7\n", "PDF"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00", "HEIF"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00", "AVIF"),
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "HEIF"),
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1miaf", "HEIF/AVIF"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "text"),
    (b"[1, 2, 3]", "text"),
    (b"", "unknown"),
    (b"\x00\x01\x02", "unknown"),
    (b"RIFF\x00\x00\x00\x00WAVE", "unknown"),
])
def test_sniff_format_signatures(data, name):
    assert sniff_format(data) == name


def test_keep_buffers_reuses_the_memory_of_the_last_image_and_gives_it_back_when_lowered():
    data = jpeg(photo_like(2048, 2048), quality=80)  # 16 MB of pixels: one of Pillow's blocks or more
    before = Image.core.get_blocks_max()
    try:
        keep_buffers(64)
        assert Image.core.get_blocks_max() == 64 * 2**20 // Image.core.get_block_size()
        decode(data)
        reused = Image.core.get_stats()["reused_blocks"]
        decode(data)
        assert Image.core.get_stats()["reused_blocks"] > reused
        assert Image.core.get_stats()["blocks_cached"] > 0
        keep_buffers(0)
        assert Image.core.get_stats()["blocks_cached"] == 0
    finally:
        Image.core.set_blocks_max(before)


def test_fast_mode_decodes_a_jpeg_at_twice_the_resize_and_resamples_only_the_crop():
    from pg_imgembed.image.model_config import parse_config
    from pg_imgembed.image.tower import ImageTower
    from tests import onnx_models

    config = {"preprocess": {"resize": {"shortest_edge": 64}, "center_crop": {"height": 56, "width": 56},
                             "resample": "bilinear"}}
    exact = ImageTower(onnx_models.conv_net(56, 56), parse_config(config))
    fast = ImageTower(onnx_models.conv_net(56, 56), parse_config(
        {"preprocess": {**config["preprocess"], "decode": "fast"}}))
    data = jpeg(photo_like(1024, 768), quality=90)
    # 1/4 scale (256x192) is the smallest at least 128 (2 x 64) on both sides; 1/8 would be 96 tall.
    assert fast.decode(data, max_pixels=LIMIT).size == (256, 192)
    assert exact.decode(data, max_pixels=LIMIT).size == (1024, 768)
    exact_pixels = exact.preprocess(exact.decode(data, max_pixels=LIMIT))
    fast_pixels = fast.preprocess(fast.decode(data, max_pixels=LIMIT))
    assert fast_pixels.shape == exact_pixels.shape == (3, 56, 56)
    assert 0 < float(np.abs(fast_pixels - exact_pixels).mean()) < 2.0  # close, not the same pixels
    # force_exact_decode: the fast model then gives the exact pixels, crop resampling included.
    forced = fast.preprocess(fast.decode(data, max_pixels=LIMIT, exact=True), exact=True)
    np.testing.assert_array_equal(forced, exact_pixels)


# ---------------------------------------------------------------- hostile TIFFs

def float_tiff(values: np.ndarray) -> bytes:
    return encode(Image.fromarray(values.astype(np.float32), "F"), "TIFF")


def corrupt(data: bytes, every: int = 97) -> bytes:
    damaged = bytearray(data)
    for i in range(200, len(damaged) - 200, every):
        damaged[i] ^= 0x5A
    return bytes(damaged)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_images_with_non_finite_pixels_are_rejected(bad):
    values = np.ones((30, 40))
    values[3, 4] = bad
    with pytest.raises(UndecodableImage) as err:
        decode(float_tiff(values))
    assert err.value.sqlstate == "22P03"
    assert err.value.message == "image has 1 pixel value(s) that are NaN or infinite (40x30 float image)"


def test_finite_float_images_still_decode():
    assert decode(float_tiff(np.linspace(0, 4, 1200).reshape(30, 40))).size == (40, 30)


def test_corrupt_tiffs_write_nothing_to_stderr(tmp_path):
    """A backend's stderr is the server log: libtiff's per-strip complaints must not reach it."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    files = []
    for compression in ("tiff_lzw", "tiff_adobe_deflate", "packbits"):
        path = tmp_path / f"{compression}.tiff"
        path.write_bytes(corrupt(encode(img, "TIFF", compression=compression)))
        files.append(str(path))
    script = ("import sys\nfrom pg_imgembed.image.decode import decode_image\nfrom pg_imgembed.errors import ImageError\n"
              "for f in sys.argv[1:]:\n    try:\n        decode_image(open(f, 'rb').read(), max_pixels=10**8)\n"
              "    except ImageError:\n        pass\n")
    done = subprocess.run([sys.executable, "-c", script, *files], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("text", ["/tmp/cat.jpg", "photos/IMG_0001.JPG", "~/q.png", "file:///srv/a.webp"])
def test_a_file_name_passed_as_an_image_gets_a_hint(text):
    with pytest.raises(UndecodableImage) as info:
        decode(text.encode())
    assert info.value.message == f"cannot decode image ({len(text)} bytes): not a known image format"
    assert info.value.hint.startswith(f"These bytes are the text {text!r}, which looks like a file name: ")
