"""The preprocessing transforms, one at a time and composed. No server."""

from __future__ import annotations

import dataclasses
import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pg_imgembed.image.transforms import (
    MIN_BANDED_PIXELS,
    RESAMPLE,
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
    band_bounds,
    compose,
    resize_threads,
)
from tests.images import photo_like


def coordinates(width: int, height: int) -> Image.Image:
    """R = x, G = y, B = 7: a pixel says where it came from (for sizes up to 256)."""
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x, y, np.full_like(x, 7)], axis=-1).astype(np.uint8), "RGB")


def origin(img: Image.Image) -> tuple[int, int]:
    """(left, top) of the source pixel now at (0, 0)."""
    r, g, _ = img.getpixel((0, 0))
    return r, g


# ---------------------------------------------------------------- ResizeShortestEdge


@pytest.mark.parametrize("size_in, edge, size_out", [
    ((640, 480), 224, (298, 224)),  # landscape: int(224 * 640 / 480) = 298
    ((480, 640), 224, (224, 298)),  # portrait
    ((300, 300), 224, (224, 224)),  # square
    ((1000, 333), 224, (672, 224)),  # int(672.67...) truncates, not rounds
    ((50, 40), 256, (320, 256)),  # upscaling
])
def test_resize_shortest_edge_output_size(size_in, edge, size_out):
    width, height = size_in
    short, long = min(size_in), max(size_in)
    assert max(size_out) == int(edge * long / short)
    out = ResizeShortestEdge(edge, "bilinear")(photo_like(width, height))
    assert out.size == size_out


def test_resize_shortest_edge_pixels_match_pillow_exact_resize():
    img = photo_like(640, 480, seed=1)
    out = ResizeShortestEdge(224, "bicubic")(img)
    expected = img.resize((298, 224), Image.Resampling.BICUBIC, reducing_gap=None)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


def test_resize_honours_the_resample_filter():
    img = photo_like(97, 61, seed=2)
    nearest = np.asarray(ResizeShortestEdge(32, "nearest")(img))
    bilinear = np.asarray(ResizeShortestEdge(32, "bilinear")(img))
    assert not np.array_equal(nearest, bilinear)
    np.testing.assert_array_equal(nearest, np.asarray(img.resize(nearest.shape[1::-1], Image.Resampling.NEAREST)))


def test_resize_to_the_current_size_keeps_the_image_unchanged():
    img = photo_like(224, 300)
    assert ResizeShortestEdge(224, "bicubic")(img) is img
    assert ResizeExact(300, 224, "bicubic")(img) is img


class CountingPool(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(3)
        self.tasks = 0

    def submit(self, *args, **kwargs):
        self.tasks += 1
        return super().submit(*args, **kwargs)


@pytest.mark.parametrize("resample", sorted(RESAMPLE))
@pytest.mark.parametrize("threads", [2, 3])
def test_a_resize_in_row_bands_gives_the_same_pixels(resample, threads):
    img = photo_like(1536, 1024, seed=5)
    with CountingPool() as pool, resize_threads(pool, threads):
        for resize in (ResizeShortestEdge(256, resample), ResizeExact(512, 300, resample)):
            expected = img.resize(resize.output_size(img.size), RESAMPLE[resample], reducing_gap=None)
            np.testing.assert_array_equal(np.asarray(resize(img)), np.asarray(expected))
    assert pool.tasks == 2 * threads


def test_resizes_whose_bands_could_differ_run_in_one_piece():
    img = photo_like(1536, 1024, seed=6)
    with CountingPool() as pool, resize_threads(pool, 2):
        # 1024 -> 224 rows: the scale 32/7 is not exact in binary.
        expected = img.resize((336, 224), Image.Resampling.BICUBIC, reducing_gap=None)
        np.testing.assert_array_equal(np.asarray(ResizeShortestEdge(224, "bicubic")(img)), np.asarray(expected))
        small = photo_like(800, 600, seed=6)
        assert small.width * small.height < MIN_BANDED_PIXELS
        ResizeShortestEdge(256, "bilinear")(small)
    assert pool.tasks == 0
    with CountingPool() as pool, resize_threads(pool, 1):
        ResizeShortestEdge(256, "bilinear")(img)
    assert pool.tasks == 0


@pytest.mark.parametrize("height, new_height, bands, expected", [
    (3000, 256, 2, [0, 128, 256]),
    (1080, 256, 3, [0, 85, 170, 256]),
    (1024, 512, 2, [0, 256, 512]),
    (2, 1, 2, None),  # one output row cannot be split
    (1024, 224, 2, None),
    (3000, 256, 1, None),
])
def test_band_bounds_only_where_pillow_computes_the_same_weights(height, new_height, bands, expected):
    assert band_bounds(height, new_height, bands) == expected


def test_resample_names_map_to_pillow_filters():
    assert RESAMPLE["bilinear"] == Image.Resampling.BILINEAR
    assert RESAMPLE["bicubic"] == Image.Resampling.BICUBIC
    assert RESAMPLE["nearest"] == Image.Resampling.NEAREST
    assert RESAMPLE["lanczos"] == Image.Resampling.LANCZOS


# ---------------------------------------------------------------- ResizeExact


def test_resize_exact_takes_height_then_width_and_ignores_aspect():
    out = ResizeExact(height=30, width=50, resample="bilinear")(photo_like(64, 64))
    assert out.size == (50, 30)  # PIL's size is (width, height)


def test_resize_exact_pixels_match_pillow():
    img = photo_like(120, 80, seed=3)
    out = ResizeExact(16, 16, "bilinear")(img)
    expected = img.resize((16, 16), Image.Resampling.BILINEAR, reducing_gap=None)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


# ---------------------------------------------------------------- CenterCrop


def test_center_crop_odd_margin_floor_and_round_differ_by_one():
    img = coordinates(227, 227)  # margin 3 on both axes
    floor = CenterCrop(224, 224, "floor")(img)
    rnd = CenterCrop(224, 224, "round")(img)
    assert floor.size == rnd.size == (224, 224)
    assert origin(floor) == (1, 1)  # 3 // 2
    assert origin(rnd) == (2, 2)  # round(1.5) == 2


def test_center_crop_even_margin_is_the_same_for_both_roundings():
    img = coordinates(226, 230)
    floor = CenterCrop(224, 224, "floor")(img)
    rnd = CenterCrop(224, 224, "round")(img)
    assert origin(floor) == origin(rnd) == (1, 3)
    np.testing.assert_array_equal(np.asarray(floor), np.asarray(rnd))


def test_center_crop_round_uses_bankers_rounding_like_torchvision():
    # margin 5: round(2.5) == 2 in Python (and so in torchvision), the same as floor
    img = coordinates(229, 224)
    assert origin(CenterCrop(224, 224, "round")(img)) == (2, 0)
    assert origin(CenterCrop(224, 224, "floor")(img)) == (2, 0)


def test_center_crop_default_rounding_is_floor():
    assert CenterCrop(4, 4).rounding == "floor"
    assert origin(CenterCrop(4, 4)(coordinates(7, 7))) == (1, 1)


def test_center_crop_keeps_the_exact_pixels():
    img = photo_like(40, 30)
    out = CenterCrop(10, 20)(img)
    assert out.size == (20, 10)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img)[10:20, 10:30])


def test_center_crop_of_matching_size_is_a_no_op():
    img = photo_like(24, 24)
    assert CenterCrop(24, 24)(img) is img


def test_center_crop_larger_than_image_pads_with_black():
    img = Image.new("RGB", (10, 10), (255, 255, 255))
    out = np.asarray(CenterCrop(14, 14)(img))
    assert out.shape == (14, 14, 3)
    assert np.all(out[2:12, 2:12] == 255)
    assert np.all(out[:2] == 0) and np.all(out[12:] == 0)
    assert np.all(out[:, :2] == 0) and np.all(out[:, 12:] == 0)


@pytest.mark.parametrize("rounding, pad_before", [
    ("floor", 2),  # HF: ceil(3 / 2) before the image
    ("round", 1),  # torchvision: floor(3 / 2) before the image
])
def test_center_crop_odd_padding_matches_the_reference_pipelines(rounding, pad_before):
    img = Image.new("RGB", (10, 10), (255, 255, 255))
    out = np.asarray(CenterCrop(13, 13, rounding)(img))[..., 0]
    white_rows = np.flatnonzero(out[:, 6] == 255)
    white_cols = np.flatnonzero(out[6] == 255)
    assert white_rows[0] == pad_before and len(white_rows) == 10
    assert white_cols[0] == pad_before and len(white_cols) == 10


def test_center_crop_pads_one_axis_and_crops_the_other():
    img = coordinates(20, 6)
    out = np.asarray(CenterCrop(10, 10)(img))
    assert out.shape == (10, 10, 3)
    assert np.all(out[:2] == 0) and np.all(out[8:] == 0)  # 4 rows of padding, 2 + 2
    assert out[2, 0].tolist() == [5, 0, 7]  # left = (20 - 10) // 2, first source row


def test_transforms_are_frozen_and_comparable():
    crop = CenterCrop(224, 224, "round")
    with pytest.raises(dataclasses.FrozenInstanceError):
        crop.height = 100  # type: ignore[misc]
    assert crop == CenterCrop(224, 224, "round")
    assert crop != CenterCrop(224, 224, "floor")


# ---------------------------------------------------------------- ResizeThenCrop


@functools.cache
def cached_photo(width: int, height: int) -> Image.Image:
    return photo_like(width, height, seed=width + height)


def two_steps(resize, crop, img: Image.Image) -> np.ndarray:
    return np.asarray(crop(resize(img))).astype(int)


@pytest.mark.parametrize("resample", ["bilinear", "bicubic", "lanczos", "hamming"])
@pytest.mark.parametrize("size", [(1920, 1080), (1080, 1920), (1023, 767), (3000, 2000), (800, 520)])
@pytest.mark.parametrize("rounding", ["floor", "round"])
def test_resize_then_crop_shrinking_2x_is_within_one_level_of_two_steps(resample, size, rounding):
    img = cached_photo(*size)
    for resize, crop in ((ResizeShortestEdge(256, resample), CenterCrop(224, 224, rounding)),
                         (ResizeShortestEdge(248, resample), CenterCrop(200, 240, rounding)),
                         (ResizeExact(300, 400, resample), CenterCrop(224, 384, rounding))):
        fused = np.asarray(ResizeThenCrop(resize, crop)(img)).astype(int)
        expected = two_steps(resize, crop, img)
        assert fused.shape == expected.shape == (crop.height, crop.width, 3)
        diff = np.abs(fused - expected)
        assert diff.max() <= 1
        assert (diff > 0).mean() < (0.01 if isinstance(resize, ResizeShortestEdge) else 0.2)


@pytest.mark.parametrize("resample, size, resize_to, crop", [
    ("bilinear", (640, 480), 256, 224),  # shrinks less than 2x
    ("bicubic", (300, 200), 384, 384),  # enlarges
    ("nearest", (1920, 1080), 256, 224),  # a filter with steps
    ("box", (1920, 1080), 256, 224),
    ("bicubic", (1920, 1080), 256, 300),  # the crop pads
    ("bicubic", (1000, 256), 256, 224),  # no resize at all
])
def test_resize_then_crop_elsewhere_is_exactly_two_steps(resample, size, resize_to, crop):
    img = photo_like(*size, seed=5)
    resize, center = ResizeShortestEdge(resize_to, resample), CenterCrop(crop, crop, "round")
    np.testing.assert_array_equal(np.asarray(ResizeThenCrop(resize, center)(img)).astype(int),
                                  two_steps(resize, center, img))


def test_resize_then_crop_keeps_the_centre_of_a_coordinate_image():
    """The crop's box is where the two-step crop would be: a wide image's left margin is cut."""
    y, x = np.mgrid[0:512, 0:2048]
    img = Image.fromarray(np.stack([x // 8, y // 2, np.zeros_like(x)], axis=-1).astype(np.uint8), "RGB")
    out = np.asarray(ResizeThenCrop(ResizeShortestEdge(128, "bilinear"), CenterCrop(64, 64))(img)).astype(int)
    # 2048x512 -> 512x128, crop x 224..288, y 32..96 -> source x 896..1152, y 128..384
    assert abs(out[0, 0, 0] - 896 // 8) <= 1 and abs(out[-1, -1, 0] - 1151 // 8) <= 1
    assert abs(out[0, 0, 1] - 128 // 2) <= 1 and abs(out[-1, -1, 1] - 383 // 2) <= 1


# ---------------------------------------------------------------- array transforms


def test_to_float_array_is_hwc_float32_with_the_pixel_values():
    img = coordinates(5, 3)
    arr = ToFloatArray()(img)
    assert arr.dtype == np.float32
    assert arr.shape == (3, 5, 3)
    assert arr[2, 4].tolist() == [4.0, 2.0, 7.0]


def test_rescale_multiplies_in_float64_and_returns_float32():
    arr = np.array([[[0, 128, 255]]], dtype=np.float32)
    out = Rescale(1 / 255)(arr)
    assert out.dtype == np.float32
    expected = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0, 2] == np.float32(1.0)
    assert out[0, 0, 1] == np.float32(128 / 255)


def test_normalize_is_per_channel_mean_and_std():
    arr = np.ones((2, 2, 3), dtype=np.float32)
    out = Normalize(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))(arr)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[1, 1], [1.0, 3.0, 0.5])
    assert np.all(out == out[0, 0])


def test_normalize_matches_float32_reference_arithmetic():
    arr = np.random.default_rng(0).random((4, 4, 3)).astype(np.float32)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = (arr - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    np.testing.assert_array_equal(Normalize(mean, std)(arr), expected)


def test_reverse_channels_turns_rgb_into_bgr():
    arr = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]], dtype=np.float32)
    assert ReverseChannels()(arr).tolist() == [[[3.0, 2.0, 1.0], [6.0, 5.0, 4.0]]]


def test_channels_first_moves_channels_to_the_front():
    arr = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    out = ChannelsFirst()(arr)
    assert out.shape == (3, 2, 4)
    assert out[2, 1, 3] == arr[1, 3, 2]
    np.testing.assert_array_equal(out[0], arr[..., 0])


# ---------------------------------------------------------------- Compose


def test_compose_applies_transforms_in_order():
    calls: list[str] = []

    def step(name):
        def run(value):
            calls.append(name)
            return value + [name]
        return run

    pipeline = Compose((step("a"), step("b"), step("c")))
    assert pipeline([]).tolist() == ["a", "b", "c"]
    assert calls == ["a", "b", "c"]


def test_compose_order_changes_the_result():
    img = Image.new("RGB", (2, 2), (10, 20, 30))
    rescale_then_normalize = compose([ToFloatArray(), Rescale(0.5), Normalize((1.0,) * 3, (2.0,) * 3)])
    normalize_then_rescale = compose([ToFloatArray(), Normalize((1.0,) * 3, (2.0,) * 3), Rescale(0.5)])
    assert rescale_then_normalize(img)[0, 0].tolist() == [2.0, 4.5, 7.0]  # (x / 2 - 1) / 2
    assert normalize_then_rescale(img)[0, 0].tolist() == [2.25, 4.75, 7.25]  # (x - 1) / 2 / 2


def test_compose_returns_a_contiguous_array_even_after_transpose_and_reversal():
    pipeline = compose([ToFloatArray(), ReverseChannels(), ChannelsFirst()])
    out = pipeline(coordinates(6, 4))
    assert out.flags["C_CONTIGUOUS"]
    assert out.shape == (3, 4, 6)
    assert out[0, 3, 5] == 7.0 and out[2, 3, 5] == 5.0  # B first, R last


def test_compose_is_built_from_any_sequence():
    steps = [ResizeExact(8, 8, "bilinear"), ToFloatArray()]
    pipeline = compose(steps)
    assert pipeline.transforms == tuple(steps)


def test_clip_style_pipeline_matches_an_independent_computation():
    img = photo_like(320, 240, seed=9)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    pipeline = compose([
        ResizeShortestEdge(224, "bicubic"), CenterCrop(224, 224), ToFloatArray(),
        Rescale(1 / 255), Normalize(mean, std), ChannelsFirst(),
    ])
    out = pipeline(img)

    resized = np.asarray(img.resize((298, 224), Image.Resampling.BICUBIC, reducing_gap=None))
    cropped = resized[:, 37:261].astype(np.float64)  # (298 - 224) // 2 = 37
    scaled = (cropped * (1 / 255)).astype(np.float32)
    expected = ((scaled - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
