"""HEIC/HEIF (libheif through pi-heif) and AVIF (Pillow's libavif) as phones and the web write them,
and hostile files of both. No server: tests/test_heif_paths.py runs the same files through SQL."""

from __future__ import annotations

import io
import resource
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from pg_imgembed.errors import ImageTooLarge, UndecodableImage
from pg_imgembed.image.decode import decode_image, decoders, image_container, sniff_format
from tests import heif_images as hi
from tests.images import encode, photo_like, png

LIMIT = 50_000_000


def decode(data: bytes, **kwargs) -> Image.Image:
    return decode_image(data, max_pixels=kwargs.pop("max_pixels", LIMIT), **kwargs)


def as_png_decoded(img: Image.Image, orientation: int = 1) -> np.ndarray:
    """What decode gives for the same stored pixels and orientation in a PNG (the JPEG path's rules)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return np.asarray(decode(encode(img, "PNG", exif=exif)))


@pytest.fixture(scope="module")
def phone_heic() -> bytes:
    """Shaped like an iPhone photo: 12 MP (4032x3024) in 512-pixel tiles, stored landscape with
    irot and EXIF orientation 6, a thumbnail and a second, non-primary image."""
    stored = photo_like(504, 378, seed=11).resize((4032, 3024), Image.Resampling.BICUBIC)
    return hi.heic(stored, quality=60, tile_size=512, orientation=6, thumbnails=(320,),
                   extra=(photo_like(640, 480, seed=12),))


# ---------------------------------------------------------------- formats


def test_lossless_heic_decodes_to_the_exact_pixels_of_the_png():
    img = photo_like(96, 64, seed=3)
    np.testing.assert_array_equal(np.asarray(decode(hi.heic(img, lossless=True))), np.asarray(img))


def test_lossy_heic_decodes_to_libheifs_own_pixels():
    data = hi.heic(photo_like(96, 64, seed=3), quality=50)
    out = decode(data)
    assert (out.mode, out.size, out.format) == ("RGB", (96, 64), "HEIF")
    np.testing.assert_array_equal(np.asarray(out), np.asarray(hi.heif_info(data)["image"].convert("RGB")))


def test_avif_decodes_through_pillows_own_decoder():
    img = photo_like(96, 64, seed=3)
    data = hi.avif(img, quality=90)
    out = decode(data)
    assert (out.mode, out.size, out.format) == ("RGB", (96, 64), "AVIF")
    np.testing.assert_array_equal(np.asarray(out), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert np.abs(np.asarray(out).astype(int) - np.asarray(img)).mean() < 12  # lossy, 4:2:0 (another image: ~29)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_heic_orientation_is_applied_exactly_once_like_jpeg(orientation):
    """Phones write the turn twice, as irot (which readers apply) and as EXIF (which HEIF readers
    must ignore): the result is what a JPEG of the stored pixels with that EXIF orientation gives."""
    stored = photo_like(96, 64, seed=5)
    data = hi.heic(stored, lossless=True, orientation=orientation)
    assert hi.stored_size(data) == (96, 64)
    assert hi.heif_info(data)["orientation"] == orientation  # the EXIF says it too
    np.testing.assert_array_equal(np.asarray(decode(data)), as_png_decoded(stored, orientation))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_avif_orientation_is_applied_exactly_once_like_jpeg(orientation):
    stored = Image.new("RGB", (96, 64), (128, 128, 128))
    stored.paste((255, 0, 0), (0, 0, 16, 16))
    out = np.asarray(decode(hi.avif(stored, quality=95, orientation=orientation))).astype(int)
    expected = as_png_decoded(stored, orientation).astype(int)
    assert out.shape == expected.shape
    assert np.abs(out - expected).mean() < 2  # lossy at the block's edges; the block elsewhere: ~20


def test_phone_heic_decodes_its_primary_image_upright(phone_heic):
    info = hi.heif_info(phone_heic)
    assert (info["images"], info["thumbnails"], info["orientation"]) == (2, [320], 6)
    assert hi.stored_size(phone_heic) == (4032, 3024)
    out = decode(phone_heic)
    assert out.size == (3024, 4032)  # turned once: stored landscape, shown portrait
    np.testing.assert_array_equal(np.asarray(out), np.asarray(info["image"].convert("RGB")))


def test_ten_bit_heic_is_scaled_to_eight_bits():
    img = photo_like(64, 48, seed=6)
    data = hi.heic(img, lossless=True, bit_depth=10)
    assert pytest.importorskip("pillow_heif").open_heif(io.BytesIO(data)).info["bit_depth"] == 10
    out = np.asarray(decode(data)).astype(int)
    assert np.abs(out - np.asarray(img)).max() <= 1


def test_heic_and_avif_alpha_is_dropped_or_composited_like_png():
    rgb = photo_like(64, 48, seed=7)
    rgba = rgb.copy()
    rgba.putalpha(0)
    np.testing.assert_array_equal(np.asarray(decode(hi.heic(rgba, lossless=True))), np.asarray(rgb))
    white = np.asarray(decode(hi.heic(rgba, lossless=True), background=(255, 255, 255)))
    assert (white == 255).all()
    assert (np.asarray(decode(hi.avif(rgba), background=(255, 255, 255))) >= 250).all()


def test_lossless_heic_gives_the_vector_of_the_same_pixels_as_png():
    from pg_imgembed.image.model_config import parse_config
    from pg_imgembed.image.tower import ImageTower
    from tests import onnx_models

    model = ImageTower(onnx_models.conv_net(), parse_config({"preprocess": {"resample": "bilinear"}}))
    img = photo_like(80, 60, seed=8)
    for data in (hi.heic(img, lossless=True), hi.heic(img, lossless=True, tile_size=64)):
        np.testing.assert_array_equal(model.embed(data, max_pixels=LIMIT), model.embed(png(img), max_pixels=LIMIT))
    lossy = hi.avif(img)
    reference = png(Image.open(io.BytesIO(lossy)).convert("RGB"))  # libavif's own pixels
    np.testing.assert_array_equal(model.embed(lossy, max_pixels=LIMIT), model.embed(reference, max_pixels=LIMIT))


# ---------------------------------------------------------------- brands and routing


@pytest.mark.parametrize("brands, container", [
    (b"heic" + b"\0\0\0\0" + b"mif1heic", "HEIF"),
    (b"mif1" + b"\0\0\0\0" + b"mif1heic", "HEIF"),  # generic major brand: the compatible ones decide
    (b"msf1" + b"\0\0\0\0" + b"msf1hevc", "HEIF"),
    (b"avif" + b"\0\0\0\0" + b"avifmif1", "AVIF"),
    (b"mif1" + b"\0\0\0\0" + b"mif1avif", "AVIF"),
    (b"mif1" + b"\0\0\0\0" + b"mif1miaf", None),  # neither codec named
    (b"isom" + b"\0\0\0\0" + b"isommp41", None),  # a video
])
def test_the_container_is_read_from_the_ftyp_brands(brands, container):
    data = (8 + len(brands)).to_bytes(4, "big") + b"ftyp" + brands + b"\0" * 16
    assert image_container(data) == container


def test_generic_image_files_of_unknown_codec_are_refused_as_not_an_image_format():
    data = b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1miaf" + b"\0" * 64
    assert sniff_format(data) == "HEIF/AVIF"
    with pytest.raises(UndecodableImage) as info:
        decode(data)
    assert info.value.message == "cannot decode image (88 bytes, looks like HEIF/AVIF): not a known image format"


def test_pi_heif_is_imported_only_when_a_heif_image_arrives():
    script = ("import sys\nfrom pg_imgembed.image.decode import decode_image\nfrom tests.images import jpeg, photo_like\n"
              "decode_image(jpeg(photo_like()), max_pixels=10**6)\nfrom tests.images import encode\n"
              "decode_image(encode(photo_like(), 'AVIF'), max_pixels=10**6)\n"
              "print(sorted(m for m in sys.modules if 'heif' in m and not m.startswith('tests')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_decoders_lists_every_format_with_its_library():
    found = decoders()
    assert list(found) == ["JPEG", "PNG", "WebP", "GIF", "BMP", "TIFF", "AVIF", "HEIC/HEIF"]
    assert found["AVIF"].startswith("libavif 1.")
    assert found["HEIC/HEIF"].startswith("libheif 1.") and "libde265" in found["HEIC/HEIF"]
    assert "x265" not in found["HEIC/HEIF"]


# ---------------------------------------------------------------- limits


def test_heic_over_the_limit_is_refused_from_its_declared_size_not_its_cropped_one():
    """The file crops (clap) to 64x48, but libheif would decode the declared (ispe) 20000x20000 first."""
    data = hi.with_ispe(hi.heic(photo_like(64, 48)), 20_000, 20_000)
    assert hi.box_offsets(data, b"clap")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLarge) as info:
        decode(data, max_pixels=100_000_000)
    assert info.value.message == ("image of 20000x20000 pixels (400000000 pixels) exceeds "
                                  "imgembed.max_image_pixels (100000000)")
    assert info.value.detail == f"HEIF image, {len(data)} bytes"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing large allocated


def test_a_tiled_heic_is_limited_by_its_grid_size():
    data = hi.heic(photo_like(256, 192), quality=50, tile_size=64)
    assert decode(data, max_pixels=256 * 192).size == (256, 192)
    with pytest.raises(ImageTooLarge, match=r"256x192 pixels \(49152 pixels\)"):
        decode(data, max_pixels=256 * 192 - 1)


def test_avif_over_the_limit_is_refused_from_its_header():
    data = hi.with_ispe(hi.avif(photo_like(64, 48)), 12_000, 12_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLarge) as info:
        decode(data, max_pixels=100_000_000)
    assert info.value.message.startswith("image of 12000x12000 pixels (144000000 pixels) exceeds")
    assert info.value.detail == f"AVIF image, {len(data)} bytes"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000


# ---------------------------------------------------------------- hostile files


@pytest.fixture(scope="module")
def grid_heic() -> bytes:
    return hi.heic(photo_like(512, 384, seed=9), quality=50, tile_size=128, thumbnails=(96,))


@pytest.mark.parametrize("name", hi.HOSTILE)
def test_hostile_files_are_refused_with_a_clear_error(grid_heic, name):
    data, sqlstate, message = hi.hostile_cases(grid_heic, hi.avif(photo_like(256, 192, seed=9)))[name]
    with pytest.raises((UndecodableImage, ImageTooLarge)) as info:
        decode(data, max_pixels=100_000_000)
    assert (info.value.sqlstate, info.value.message[:len(message)]) == (sqlstate, message)


def test_a_grid_whose_primary_cannot_be_read_is_refused_not_replaced_by_another_image():
    """libheif drops a top-level image it cannot read; the file's other picture must not stand in."""
    data = hi.heic(photo_like(512, 384, seed=9), quality=50, tile_size=128, extra=(photo_like(64, 48, seed=1),))
    with pytest.raises(UndecodableImage) as info:
        decode(hi.with_grid(data, 256, 256))
    assert info.value.message == (f"cannot decode image ({len(data)} bytes, looks like HEIF): "
                                  "HEIF header is corrupt or truncated: libheif cannot read the primary image")


def test_more_items_than_libheifs_security_limit_is_a_limit_error():
    data = hi.thousand_tiles()
    with pytest.raises(ImageTooLarge) as info:
        decode(data)
    assert info.value.sqlstate == "54000"
    assert info.value.message == ("HEIF image exceeds a libheif security limit: Memory allocation error: Security limit "
                                  "exceeded: iloc box contains 1025 items, which exceeds the security limit of 1000 items.")


def test_corrupted_heic_and_avif_never_escape_as_other_exceptions(grid_heic):
    rng = np.random.default_rng(3)
    failures = 0
    for source in (grid_heic, hi.avif(photo_like(128, 96, seed=2))):
        for _ in range(30):
            data = bytearray(source)
            for _ in range(4):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
            try:
                decode(bytes(data[: rng.integers(1, len(data) + 1)]))
            except (UndecodableImage, ImageTooLarge):
                failures += 1
    assert failures > 0


def test_exif_transpose_is_not_applied_twice_to_heic(monkeypatch):
    calls = []
    monkeypatch.setattr(ImageOps, "exif_transpose", lambda img, **kw: calls.append(img) or img)
    decode(hi.heic(photo_like(32, 16), lossless=True, orientation=6))
    assert calls == []  # libheif turned it; the EXIF orientation it reports is 1


@pytest.mark.parametrize("sizes", [0x00, 0x10, 0x44])
def test_a_hostile_item_location_table_is_walked_in_bounded_time(grid_heic, sizes):
    """Field sizes of 0 and counts of 65535 must not make the truncation check loop for long."""
    import time

    at = hi.box_offsets(grid_heic, b"iloc")[0]
    data = bytearray(grid_heic)
    data[at + 12] = sizes  # offset_size, length_size
    data[at + 14:at + 16] = b"\xff\xff"  # item count (version 0/1)
    start = time.perf_counter()
    with pytest.raises((UndecodableImage, ImageTooLarge)):
        decode(bytes(data))
    assert time.perf_counter() - start < 2
