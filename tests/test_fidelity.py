"""Fidelity: our preprocessing and in-database embeddings against reference code we did not write.

Photos are scikit-image's bundled ones (astronaut, chelsea, coffee, rocket) at several sizes
(original, downscaled to 100x67, upscaled to 1000 px, a tall portrait crop, odd sides) and in
several modes (RGB, RGBA with a real alpha gradient, greyscale L, and a JPEG stored sideways with
EXIF Orientation 6). Every photo goes in as encoded bytes, as it would sit in a ``bytea`` column.

1. Hugging Face image processors (transformers' PIL backend, ``*ImageProcessorPil``: the slow,
   torch-free ones) built with ``from_dict`` from ``preprocessor_config.json`` contents, against
   ``ImageTower.preprocess`` after our own decode. Fair comparison: each side loads the bytes its
   own way. HF gets ``transformers.image_utils.load_image(Image.open(bytes))``, which is what its
   pipelines do (EXIF orientation applied, then ``convert("RGB")``, which drops alpha); we get
   ``decode_image``. So decoding, mode conversion, resize, crop, rescale and normalise are all
   compared, not only the arithmetic. Target: max abs difference <= 1e-4 (it is 0 in practice).
   Passing an RGBA image *directly* to a processor that converts itself (CLIP, BiT) composites it
   onto white in transformers 5; that equals our ``background: [255, 255, 255]`` and is tested apart.

2. fastembed's ``ImageEmbedding`` for two models it knows ("Qdrant/resnet50-onnx",
   "Qdrant/clip-ViT-B-32-vision"), loaded from a local directory laid out like their Hugging Face
   repos (``specific_model_path``: model.onnx + preprocessor_config.json; nothing is downloaded).
   The real weights cannot be had offline, so the ONNX files are stand-ins with the real input
   name, geometry and output dimensions (tests/fidelity_models.py); the preprocessor configs are
   those repos' content. The same ONNX bytes and the same JSON go into ``imgembed.load_model``, and
   ``img_embedding`` in the database must point the same way as fastembed's vector (cosine >=
   0.99999). fastembed reads the files itself; only for the EXIF photo it gets the upright image,
   because fastembed does not apply EXIF orientation (it calls ``Image.open`` and nothing else).
   Both sides L2-normalise. A control shows the threshold catches a near miss (bilinear for bicubic).

3. Keras ``preprocess_input(mode="caffe")`` (ResNet50/VGG16) after ``load_img(target_size=(224,
   224))``, written out from its definition (PIL nearest resize to exactly 224x224, RGB->BGR, minus
   the BGR ImageNet means, no scaling, NHWC), against our config ``KERAS_CAFFE``. The formula is
   applied to the upright image (``load_img`` itself ignores EXIF orientation; we apply it).
"""

from __future__ import annotations

import functools
import io
import json
from typing import Any

import numpy as np
import pytest
import skimage.data
import transformers
from fastembed import ImageEmbedding
from PIL import Image, ImageOps
from transformers import BitImageProcessorPil, CLIPImageProcessorPil, ConvNextImageProcessorPil, ViTImageProcessorPil
from transformers.image_utils import load_image

from pg_imgembed.image.model_config import parse_config
from pg_imgembed.image.tower import ImageTower
from tests import onnx_models
from tests.fidelity_models import patch_net
from tests.helpers import embed, load_model

transformers.logging.set_verbosity_error()  # no "falling back to the PIL backend" notices

MAX_PIXELS = 100_000_000
PIXEL_TOLERANCE = 1e-4
COSINE_TARGET = 0.99999

# ---------------------------------------------------------------- photos


def _sample(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)())


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _with_alpha(img: Image.Image) -> Image.Image:
    """A real alpha channel: opaque in the middle, fading to transparent at the corners."""
    height, width = img.height, img.width
    y, x = np.mgrid[0:height, 0:width]
    distance = np.hypot((x - width / 2) / (width / 2), (y - height / 2) / (height / 2))
    alpha = np.clip(255 * (1.4 - distance), 0, 255).astype(np.uint8)
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha, "L"))
    return rgba


def _exif_rotated_jpeg(upright: Image.Image) -> bytes:
    """Stored sideways with Orientation 6 ("rotate 90 degrees clockwise to view"), as phones write."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=92, exif=exif)
    return buf.getvalue()


PHOTO_BUILDERS = {
    "astronaut_512x512": lambda: _png(_sample("astronaut")),
    "chelsea_451x300": lambda: _png(_sample("chelsea")),
    "coffee_down_100x67": lambda: _png(_sample("coffee").resize((100, 67), Image.Resampling.LANCZOS)),
    "rocket_up_1000x667": lambda: _png(_sample("rocket").resize((1000, 667), Image.Resampling.LANCZOS)),
    "astronaut_tall_201x512": lambda: _png(_sample("astronaut").crop((150, 0, 351, 512))),
    "coffee_odd_301x199": lambda: _png(_sample("coffee").resize((301, 199), Image.Resampling.LANCZOS)),
    "chelsea_rgba": lambda: _png(_with_alpha(_sample("chelsea"))),
    "coffee_grey_l": lambda: _png(_sample("coffee").convert("L")),
    "rocket_exif6_jpeg": lambda: _exif_rotated_jpeg(_sample("rocket")),
}
PHOTOS = list(PHOTO_BUILDERS)


@functools.cache
def photo(name: str) -> bytes:
    return PHOTO_BUILDERS[name]()


def hf_loaded(data: bytes) -> Image.Image:
    """The bytes as transformers' own loader gives them (EXIF applied, ``convert("RGB")``)."""
    return load_image(Image.open(io.BytesIO(data)))


def upright(data: bytes) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_photos_are_what_the_cases_claim():
    """Guards the fixtures: real alpha, greyscale, a sideways JPEG, the sizes in the names."""
    assert Image.open(io.BytesIO(photo("chelsea_rgba"))).mode == "RGBA"
    alpha = np.asarray(Image.open(io.BytesIO(photo("chelsea_rgba"))).getchannel("A"))
    assert alpha.min() == 0 and alpha.max() == 255
    assert Image.open(io.BytesIO(photo("coffee_grey_l"))).mode == "L"
    sideways = Image.open(io.BytesIO(photo("rocket_exif6_jpeg")))
    assert sideways.getexif()[0x0112] == 6 and sideways.size == (427, 640)
    assert upright(photo("rocket_exif6_jpeg")).size == (640, 427)
    assert Image.open(io.BytesIO(photo("rocket_up_1000x667"))).size == (1000, 667)
    assert Image.open(io.BytesIO(photo("astronaut_tall_201x512"))).size == (201, 512)


# ---------------------------------------------------------------- 1. Hugging Face image processors

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
RESCALE = 0.00392156862745098

# preprocessor_config.json as the model repos have it (google/vit-base-patch16-224,
# facebook/convnext-tiny-224, a 384 px ConvNeXt, openai/clip-vit-base-patch32, facebook/dinov2-base).
HF_CONFIGS: dict[str, tuple[type, dict[str, Any], int]] = {
    "vit": (ViTImageProcessorPil, {
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 224, "width": 224},
        "resample": 2, "do_rescale": True, "rescale_factor": RESCALE, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }, 224),
    "convnext_224": (ConvNextImageProcessorPil, {
        "image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875, "do_resize": True,
        "size": {"shortest_edge": 224}, "resample": 3, "do_rescale": True, "rescale_factor": RESCALE,
        "do_normalize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
    }, 224),
    "convnext_384": (ConvNextImageProcessorPil, {
        "image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875, "do_resize": True,
        "size": {"shortest_edge": 384}, "resample": 3, "do_rescale": True, "rescale_factor": RESCALE,
        "do_normalize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
    }, 384),
    "clip": (CLIPImageProcessorPil, {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 224},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
        "do_rescale": True, "rescale_factor": RESCALE, "do_normalize": True,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "do_convert_rgb": True,
    }, 224),
    "dinov2": (BitImageProcessorPil, {
        "image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 256},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
        "do_rescale": True, "rescale_factor": RESCALE, "do_normalize": True,
        "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "do_convert_rgb": True,
    }, 224),
}
HF_CLASSES = {
    "ViTImageProcessor": (ViTImageProcessorPil, 224),
    "ConvNextImageProcessor": (ConvNextImageProcessorPil, 384),  # 384 by default: warped, not cropped
    "CLIPImageProcessor": (CLIPImageProcessorPil, 224),
    "BitImageProcessor": (BitImageProcessorPil, 224),
}


@functools.cache
def square_model(size: int) -> bytes:
    """A model whose only role is its fixed ``size`` x ``size`` input, which the config resolves against."""
    return onnx_models.conv_net(size, size)


def ours(config: dict[str, Any], size: int, data: bytes, **changes: Any) -> np.ndarray:
    cfg = parse_config(config)
    if changes:
        cfg = cfg.with_preprocess(**changes)
    model = ImageTower(square_model(size), cfg)
    return model.preprocess(model.decode(data, max_pixels=MAX_PIXELS))


def hf_pixels(processor: Any, img: Image.Image) -> np.ndarray:
    return processor(images=img, return_tensors="np")["pixel_values"][0]


def assert_same_pixels(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert got.dtype == np.float32
    assert float(np.abs(got - expected.astype(np.float32)).max()) <= PIXEL_TOLERANCE


@pytest.mark.parametrize("photo_name", PHOTOS)
@pytest.mark.parametrize("processor_name", list(HF_CONFIGS))
def test_hf_processor_pixel_values_equal_ours(processor_name, photo_name):
    cls, config, size = HF_CONFIGS[processor_name]
    data = photo(photo_name)
    expected = hf_pixels(cls.from_dict(config), hf_loaded(data))
    assert expected.shape == (3, size, size)
    assert_same_pixels(ours(config, size, data), expected)


@pytest.mark.parametrize("processor_type", list(HF_CLASSES))
def test_hf_processor_class_defaults_equal_ours(processor_type):
    """A config naming only the processor: every default (size, resample, crop, mean/std) must agree."""
    cls, size = HF_CLASSES[processor_type]
    config = {"image_processor_type": processor_type}
    for name in ("chelsea_451x300", "astronaut_tall_201x512"):
        data = photo(name)
        assert_same_pixels(ours(config, size, data), hf_pixels(cls.from_dict(config), hf_loaded(data)))


@pytest.mark.parametrize("processor_name", ["clip", "dinov2"])
def test_hf_own_rgba_conversion_equals_our_white_background(processor_name):
    """transformers 5's ``convert_to_rgb`` composites transparency onto white when the processor is
    handed RGBA itself; ``background: [255, 255, 255]`` does the same. Our default (alpha dropped,
    as ``load_image``, fastembed and ``convert("RGB")`` do) differs from it, visibly."""
    cls, config, size = HF_CONFIGS[processor_name]
    data = photo("chelsea_rgba")
    expected = hf_pixels(cls.from_dict(config), Image.open(io.BytesIO(data)))
    assert_same_pixels(ours(config, size, data, background=(255, 255, 255)), expected)
    assert float(np.abs(ours(config, size, data) - expected).max()) > 1.0


def test_hf_do_resize_false_crops_without_resizing():
    cls, config, size = HF_CONFIGS["clip"]
    config = {**config, "do_resize": False}
    data = photo("chelsea_451x300")
    assert_same_pixels(ours(config, size, data), hf_pixels(cls.from_dict(config), hf_loaded(data)))


# ---------------------------------------------------------------- 2. fastembed, through the database

# preprocessor_config.json of the fastembed model repos. fastembed dispatches on
# image_processor_type ("ConvNextFeatureExtractor" is its name for the ConvNeXt-style crop_pct
# resize) and needs size as a dict; pg_imgembed reads the same JSON as ConvNextImageProcessor.
RESNET50_PREPROCESSOR = {
    "crop_pct": 0.875, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": IMAGENET_MEAN, "image_processor_type": "ConvNextFeatureExtractor",
    "image_std": IMAGENET_STD, "resample": 3, "rescale_factor": RESCALE, "size": {"shortest_edge": 224},
}
CLIP_VISION_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": CLIP_MEAN,
    "image_processor_type": "CLIPImageProcessor", "image_std": CLIP_STD, "resample": 3,
    "rescale_factor": RESCALE, "size": {"shortest_edge": 224},
}
# name -> (preprocessor config, dimensions, ONNX stand-in). ResNet's stand-in returns an
# (N, 2048, 1, 1) map, as a ResNet pooler output is: fastembed flattens it, we mean-pool it.
FASTEMBED_MODELS: dict[str, tuple[dict[str, Any], int, bytes]] = {
    "Qdrant/resnet50-onnx": (RESNET50_PREPROCESSOR, 2048,
                             patch_net(224, 2048, output="pooler_output", as_feature_map=True, seed=50)),
    "Qdrant/clip-ViT-B-32-vision": (CLIP_VISION_PREPROCESSOR, 512,
                                    patch_net(224, 512, output="image_embeds", seed=32)),
}


@pytest.fixture(scope="module")
def fastembed_vectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """fastembed's embedding of every photo, per model, from repo-like directories on disk."""
    root = tmp_path_factory.mktemp("fastembed")
    files = {}
    for name in PHOTOS:
        path = root / f"{name}.img"
        path.write_bytes(photo(name))
        files[name] = path
    # fastembed opens files without applying EXIF orientation: give it the upright image there.
    inputs = [upright(photo(name)) if "exif" in name else str(files[name]) for name in PHOTOS]
    vectors = {}
    for model_name, (config, _dims, onnx_bytes) in FASTEMBED_MODELS.items():
        repo = root / model_name.replace("/", "--")
        repo.mkdir()
        (repo / "model.onnx").write_bytes(onnx_bytes)
        (repo / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
        model = ImageEmbedding(model_name, cache_dir=str(root / "cache"), threads=1, specific_model_path=str(repo))
        vectors[model_name] = dict(zip(PHOTOS, model.embed(inputs, batch_size=4)))
    return vectors


@pytest.mark.parametrize("model_name", list(FASTEMBED_MODELS))
def test_stand_ins_have_fastembeds_registered_dimensions(model_name, fastembed_vectors):
    _, dims, _ = FASTEMBED_MODELS[model_name]
    assert ImageEmbedding.get_embedding_size(model_name) == dims
    for vec in fastembed_vectors[model_name].values():
        assert vec.shape == (dims,)
        assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)  # fastembed L2-normalises


@pytest.mark.parametrize("model_name", list(FASTEMBED_MODELS))
def test_img_embedding_in_the_database_equals_fastembed(conn, model_name, fastembed_vectors):
    config, dims, onnx_bytes = FASTEMBED_MODELS[model_name]
    short = model_name.split("/")[1]
    assert load_model(conn, short, onnx_bytes, config)["dimensions"] == dims  # the JSON as the repo has it
    for name in PHOTOS:
        got = embed(conn, photo(name), short)
        assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)
        assert cosine(got, fastembed_vectors[model_name][name]) >= COSINE_TARGET, name


@pytest.mark.parametrize("model_name", list(FASTEMBED_MODELS))
def test_cosine_target_catches_a_near_miss(model_name, fastembed_vectors):
    """Control: the stand-in models and the threshold tell bilinear from bicubic on every photo."""
    config, _, onnx_bytes = FASTEMBED_MODELS[model_name]
    near_miss = ImageTower(onnx_bytes, parse_config({**config, "resample": 2}))
    for name in PHOTOS:
        got = near_miss.embed(photo(name), max_pixels=MAX_PIXELS)
        assert cosine(got, fastembed_vectors[model_name][name]) < COSINE_TARGET, name


# ---------------------------------------------------------------- 3. Keras caffe preprocessing

# Keras ResNet50/VGG16: load_img(target_size=(224, 224)) + preprocess_input(mode="caffe"), in our
# own spelling. Means are the BGR ones [103.939, 116.779, 123.68] written in RGB order, because
# they are subtracted before the channels are reversed.
KERAS_CAFFE = {
    "preprocess": {
        "resize": {"height": 224, "width": 224},
        "resample": "nearest",
        "rescale": None,
        "mean": [123.68, 116.779, 103.939],
        "std": [1.0, 1.0, 1.0],
        "channel_order": "BGR",
        "layout": "NHWC",
    },
}
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def keras_caffe_reference(data: bytes) -> np.ndarray:
    """``img_to_array(load_img(..., target_size=(224, 224)))`` then ``preprocess_input`` (caffe)."""
    img = upright(data)
    if img.mode != "RGB":
        img = img.convert("RGB")
    img = img.resize((224, 224), Image.Resampling.NEAREST)  # load_img's default interpolation
    x = np.asarray(img, dtype=np.float32)[..., ::-1]  # RGB -> BGR
    return x - CAFFE_BGR_MEAN  # per channel, no scaling, channels last


@pytest.mark.parametrize("photo_name", PHOTOS)
def test_keras_caffe_preprocessing_equals_ours(photo_name):
    model = ImageTower(onnx_models.conv_net(224, 224, layout="NHWC"), parse_config(KERAS_CAFFE))
    data = photo(photo_name)
    got = model.preprocess(model.decode(data, max_pixels=MAX_PIXELS))
    assert got.shape == (224, 224, 3)
    assert_same_pixels(got, keras_caffe_reference(data))
