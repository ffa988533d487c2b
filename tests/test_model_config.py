"""parse_config: pg_imgembed's own spelling and Hugging Face preprocessor_config.json. No server."""

from __future__ import annotations

import json

import pytest

from pg_imgembed.errors import InvalidConfig
from pg_imgembed.image.model_config import (
    ModelConfig,
    OutputConfig,
    PreprocessConfig,
    Resize,
    parse_config,
)
from pg_imgembed.image.templates import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

RESCALE = 0.00392156862745098  # as HF configs write 1/255


def invalid(raw) -> InvalidConfig:
    with pytest.raises(InvalidConfig) as info:
        parse_config(raw)
    assert info.value.sqlstate == "22023"
    return info.value


# ---------------------------------------------------------------- pg_imgembed's own spelling


def test_no_config_and_empty_config_give_the_defaults():
    assert parse_config(None) == ModelConfig()
    assert parse_config({}) == ModelConfig()
    assert parse_config({"preprocess": None, "output": None}) == ModelConfig()
    defaults = ModelConfig().preprocess
    assert defaults.resize is None and defaults.center_crop is None
    assert defaults.resample == "bilinear" and defaults.rescale == 1 / 255
    assert defaults.layout is None and defaults.decode == "exact"


def test_every_key_of_our_spelling_is_read():
    raw = {
        "preprocess": {
            "resize": {"shortest_edge": 256},
            "resample": "bicubic",
            "center_crop": {"height": 224, "width": 200},
            "crop_rounding": "round",
            "rescale": 0.5,
            "mean": [0.1, 0.2, 0.3],
            "std": [0.4, 0.5, 0.6],
            "channel_order": "bgr",
            "layout": "nhwc",
            "decode": "fast",
            "background": [255, 255, 255],
        },
        "output": {"name": "embedding", "pooling": "mean", "normalize": False},
        "source": "my-model",
    }
    assert parse_config(raw) == ModelConfig(
        PreprocessConfig(
            resize=Resize(shortest_edge=256),
            resample="bicubic",
            center_crop=(224, 200),
            crop_rounding="round",
            rescale=0.5,
            mean=(0.1, 0.2, 0.3),
            std=(0.4, 0.5, 0.6),
            channel_order="BGR",
            layout="NHWC",
            decode="fast",
            background=(255, 255, 255),
        ),
        OutputConfig(name="embedding", pooling="mean", normalize=False),
        source="my-model",
    )


def test_integer_sizes_mean_squares():
    pre = parse_config({"preprocess": {"resize": 256, "center_crop": 224}}).preprocess
    assert pre.resize == Resize(height=256, width=256)
    assert pre.center_crop == (224, 224)


def test_exact_resize_by_height_and_width():
    pre = parse_config({"preprocess": {"resize": {"height": 32, "width": 64}}}).preprocess
    assert pre.resize == Resize(height=32, width=64)


def test_scalar_mean_and_std_apply_to_every_channel():
    pre = parse_config({"preprocess": {"mean": 0.5, "std": 2}}).preprocess
    assert pre.mean == (0.5, 0.5, 0.5)
    assert pre.std == (2.0, 2.0, 2.0)


def test_rescale_null_turns_rescaling_off():
    assert parse_config({"preprocess": {"rescale": None}}).preprocess.rescale is None
    assert parse_config({"preprocess": {}}).preprocess.rescale == 1 / 255


def test_background_grey_level_applies_to_every_channel():
    assert parse_config({"preprocess": {"background": 0}}).preprocess.background == (0, 0, 0)


def test_unknown_preprocess_key_message_is_verbatim():
    err = invalid({"preprocess": {"resise": 224}})
    assert err.message == "unknown preprocess key 'resise'"
    assert "resize" in err.hint and "center_crop" in err.hint


def test_unknown_top_level_and_output_keys_are_named():
    assert invalid({"prepocess": {}}).message == "unknown config key 'prepocess'"
    assert invalid({"prepocess": {}}).hint == "Known config keys: output, preprocess, source, template."
    assert invalid({"output": {"pool": "cls"}}).message == "unknown output key 'pool'"


@pytest.mark.parametrize("pre, message", [
    ({"resize": {"shortest_edge": -1}}, "preprocess.resize.shortest_edge must be a positive integer, not -1"),
    ({"resize": {"shortest_edge": 22.5}}, "preprocess.resize.shortest_edge must be a positive integer, not 22.5"),
    ({"resize": 0}, "preprocess.resize must be a positive integer, not 0"),
    ({"resize": {"height": 0, "width": 8}}, "preprocess.resize.height must be a positive integer, not 0"),
    ({"resize": {"height": 8, "width": True}}, "preprocess.resize.width must be a positive integer, not True"),
    ({"center_crop": -224}, "preprocess.center_crop must be a positive integer, not -224"),
    ({"std": [0.2, 0, 0.2]}, "preprocess.std must not contain 0, got [0.2, 0.0, 0.2]"),
    ({"mean": [0.5, 0.5]}, "preprocess.mean must be a list of 3 numbers (one per channel), not [0.5, 0.5]"),
    ({"resample": "cubic"},
     "preprocess.resample must be one of nearest, bilinear, bicubic, lanczos, box, hamming; got 'cubic'"),
    ({"layout": "CHW"}, "preprocess.layout must be one of NCHW, NHWC; got 'CHW'"),
    ({"channel_order": "RGBA"}, "preprocess.channel_order must be one of RGB, BGR; got 'RGBA'"),
    ({"crop_rounding": "ceil"}, "preprocess.crop_rounding must be one of floor, round; got 'ceil'"),
    ({"decode": "turbo"}, "preprocess.decode must be one of exact, fast; got 'turbo'"),
    ({"rescale": 0}, "preprocess.rescale must be a positive number, not 0"),
    ({"rescale": "1/255"}, "preprocess.rescale must be a positive number, not '1/255'"),
])
def test_bad_preprocess_values_are_named_exactly(pre, message):
    assert invalid({"preprocess": pre}).message == message


@pytest.mark.parametrize("pre, key", [
    ({"resize": {"shortest_edge": 256, "height": 3}}, "preprocess.resize"),
    ({"resize": "big"}, "preprocess.resize"),
    ({"center_crop": {"height": 3}}, "preprocess.center_crop"),
    ({"std": "wide"}, "preprocess.std"),
    ({"mean": [0.5, "0.5", 0.5]}, "preprocess.mean"),
    ({"resample": 2}, "preprocess.resample"),
    ({"resample": ["bilinear"]}, "preprocess.resample"),  # unhashable: no TypeError
    ({"layout": ["NCHW"]}, "preprocess.layout"),
    ({"decode": {"fast": True}}, "preprocess.decode"),
    ({"background": [256, 0, 0]}, "preprocess.background"),
    ({"background": [0.5, 0, 0]}, "preprocess.background"),
    ({"background": [255, 255]}, "preprocess.background"),
    ({"background": "white"}, "preprocess.background"),
])
def test_bad_preprocess_values_name_their_key(pre, key):
    assert invalid({"preprocess": pre}).message.startswith(key + " ")


@pytest.mark.parametrize("output, message", [
    ({"normalize": "yes"}, "output.normalize must be true or false, not 'yes'"),
    ({"pooling": "max"}, "output.pooling must be one of auto, mean, cls, none; got 'max'"),
])
def test_bad_output_values_are_named(output, message):
    assert invalid({"output": output}).message == message


@pytest.mark.parametrize("raw, message", [
    ([1, 2], "model config must be a JSON object, not list"),
    ("resize", "model config must be a JSON object, not str"),
    ({"preprocess": [1, 2]}, "preprocess must be a JSON object, not [1, 2]"),
    ({"preprocess": 224}, "preprocess must be a JSON object, not 224"),
    ({"output": 5}, "output must be a JSON object, not 5"),
])
def test_non_object_sections_are_rejected(raw, message):
    assert invalid(raw).message == message


# ---------------------------------------------------------------- Hugging Face processors


VIT = {
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "ViTImageProcessor", "image_std": [0.5, 0.5, 0.5],
    "resample": 2, "rescale_factor": RESCALE, "size": {"height": 224, "width": 224},
}
CLIP = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": list(CLIP_MEAN), "image_processor_type": "CLIPImageProcessor", "image_std": list(CLIP_STD),
    "processor_class": "CLIPProcessor", "resample": 3, "rescale_factor": RESCALE, "size": {"shortest_edge": 224},
}
CONVNEXT = {
    "crop_pct": 0.875, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": list(IMAGENET_MEAN), "image_processor_type": "ConvNextImageProcessor",
    "image_std": list(IMAGENET_STD), "resample": 3, "rescale_factor": RESCALE, "size": {"shortest_edge": 224},
}
DINOV2 = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": RESCALE, "size": {"shortest_edge": 256},
}


def test_vit_processor():
    cfg = parse_config(VIT)
    assert cfg.source == "ViTImageProcessor"
    assert cfg.preprocess == PreprocessConfig(
        resize=Resize(height=224, width=224), resample="bilinear", center_crop=None, rescale=RESCALE,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), layout="NCHW",
    )
    assert cfg.output == OutputConfig()


def test_vit_defaults_when_only_the_type_is_given():
    assert parse_config({"image_processor_type": "ViTImageProcessor"}).preprocess == parse_config(VIT).preprocess


def test_clip_processor():
    pre = parse_config(CLIP).preprocess
    assert pre.resize == Resize(shortest_edge=224)
    assert pre.center_crop == (224, 224)
    assert pre.resample == "bicubic"
    assert pre.mean == CLIP_MEAN and pre.std == CLIP_STD
    assert pre.crop_rounding == "floor" and pre.layout == "NCHW"


def test_clip_defaults_when_only_the_type_is_given():
    assert parse_config({"image_processor_type": "CLIPImageProcessor"}).preprocess == parse_config(CLIP).preprocess


def test_convnext_below_384_resizes_by_crop_pct_then_crops():
    pre = parse_config(CONVNEXT).preprocess
    assert pre.resize == Resize(shortest_edge=int(224 / 0.875)) == Resize(shortest_edge=256)
    assert pre.center_crop == (224, 224)
    assert pre.resample == "bicubic"
    assert pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD


def test_convnext_missing_crop_pct_defaults_to_224_over_256():
    for raw in ({**CONVNEXT, "crop_pct": None}, {k: v for k, v in CONVNEXT.items() if k != "crop_pct"}):
        assert parse_config(raw).preprocess.resize == Resize(shortest_edge=256)


def test_convnext_other_crop_pct():
    pre = parse_config({**CONVNEXT, "size": {"shortest_edge": 288}, "crop_pct": 0.95}).preprocess
    assert pre.resize == Resize(shortest_edge=int(288 / 0.95)) == Resize(shortest_edge=303)
    assert pre.center_crop == (288, 288)


def test_convnext_384_and_above_warps_without_cropping():
    pre = parse_config({**CONVNEXT, "size": {"shortest_edge": 384}}).preprocess
    assert pre.resize == Resize(height=384, width=384)
    assert pre.center_crop is None


def test_convnext_defaults_follow_the_hf_processor():
    pre = parse_config({"image_processor_type": "ConvNextImageProcessor"}).preprocess
    assert pre.resize == Resize(height=384, width=384) and pre.center_crop is None
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)  # IMAGENET_STANDARD_*


@pytest.mark.parametrize("changes, key", [
    ({"crop_pct": 1.5}, "crop_pct"),
    ({"crop_pct": 0}, "crop_pct"),
    ({"crop_pct": "most"}, "crop_pct"),
    ({"size": {"height": 224, "width": 224}}, "size"),
    ({"size": {"shortest_edge": 0}}, "size.shortest_edge"),
])
def test_convnext_bad_values_are_named(changes, key):
    message = invalid({**CONVNEXT, **changes}).message
    assert message.startswith("ConvNextImageProcessor")
    assert key in message


def test_bit_processor_dinov2_style():
    cfg = parse_config(DINOV2)
    assert cfg.source == "BitImageProcessor"
    pre = cfg.preprocess
    assert pre.resize == Resize(shortest_edge=256)
    assert pre.center_crop == (224, 224)
    assert pre.resample == "bicubic"
    assert pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD


def test_bit_defaults_are_clip_statistics():
    pre = parse_config({"image_processor_type": "BitImageProcessor"}).preprocess
    assert pre.resize == Resize(shortest_edge=224) and pre.center_crop == (224, 224)
    assert pre.mean == CLIP_MEAN and pre.std == CLIP_STD


def test_fast_processor_suffix_is_accepted():
    cfg = parse_config({**CLIP, "image_processor_type": "CLIPImageProcessorFast"})
    assert cfg.source == "CLIPImageProcessor"
    assert cfg.preprocess == parse_config(CLIP).preprocess


def test_feature_extractor_type_is_accepted():
    raw = {k: v for k, v in VIT.items() if k != "image_processor_type"}
    cfg = parse_config({**raw, "feature_extractor_type": "ViTFeatureExtractor"})
    assert cfg.source == "ViTImageProcessor"
    assert cfg.preprocess == parse_config(VIT).preprocess


@pytest.mark.parametrize("type_key, name", [
    ("image_processor_type", "SiglipImageProcessor"),
    ("image_processor_type", "SamImageProcessorFast"),
    ("feature_extractor_type", "DeiTFeatureExtractor"),
])
def test_unknown_processor_type_is_named_as_written(type_key, name):
    err = invalid({type_key: name, "size": 224})
    assert err.message == f"unsupported image processor type {name!r}"
    for supported in ("ViTImageProcessor", "ConvNextImageProcessor", "CLIPImageProcessor", "BitImageProcessor"):
        assert supported in err.hint


def test_do_resize_false_drops_the_resize_but_keeps_the_crop():
    pre = parse_config({**CLIP, "do_resize": False}).preprocess
    assert pre.resize is not None and pre.resize.native  # keep the native size: no resize at all
    assert pre.center_crop == (224, 224)


def test_convnext_do_resize_false_drops_resize_and_crop():
    pre = parse_config({**CONVNEXT, "do_resize": False}).preprocess
    assert pre.resize is not None and pre.resize.native and pre.center_crop is None


def test_do_center_crop_false_drops_the_crop():
    assert parse_config({**CLIP, "do_center_crop": False}).preprocess.center_crop is None


def test_do_normalize_false_drops_mean_and_std():
    pre = parse_config({**CLIP, "do_normalize": False, "image_std": [0, 0, 0]}).preprocess
    assert pre.mean is None and pre.std is None


def test_do_rescale_false_drops_rescaling():
    assert parse_config({**VIT, "do_rescale": False}).preprocess.rescale is None


def test_custom_rescale_factor_is_kept():
    assert parse_config({**VIT, "rescale_factor": 1 / 127.5}).preprocess.rescale == 1 / 127.5


@pytest.mark.parametrize("raw, resize, crop", [
    ({**VIT, "size": 384}, Resize(height=384, width=384), None),
    ({**CLIP, "size": 224, "crop_size": 224}, Resize(shortest_edge=224), (224, 224)),
    ({**CONVNEXT, "size": 224}, Resize(shortest_edge=256), (224, 224)),
    ({**DINOV2, "size": 256, "crop_size": 224}, Resize(shortest_edge=256), (224, 224)),
])
def test_old_style_integer_size(raw, resize, crop):
    pre = parse_config(raw).preprocess
    assert pre.resize == resize
    assert pre.center_crop == crop


@pytest.mark.parametrize("code, name", [
    (0, "nearest"), (1, "lanczos"), (2, "bilinear"), (3, "bicubic"), (4, "box"), (5, "hamming"),
])
def test_hf_resample_codes_are_pil_filter_numbers(code, name):
    assert parse_config({**VIT, "resample": code}).preprocess.resample == name


@pytest.mark.parametrize("resample", [7, -1, "bicubic", None, 2.0])
def test_hf_bad_resample_is_rejected(resample):
    assert invalid({**VIT, "resample": resample}).message == (
        f"ViTImageProcessor: resample must be a PIL filter code 0-5, not {resample!r}"
    )


@pytest.mark.parametrize("changes, message", [
    ({"image_std": [0.5, 0, 0.5]}, "CLIPImageProcessor.image_std must not contain 0, got [0.5, 0.0, 0.5]"),
    ({"image_mean": [0.5]}, "CLIPImageProcessor.image_mean must be a list of 3 numbers (one per channel), not [0.5]"),
    ({"crop_size": {"height": 224}}, "CLIPImageProcessor.crop_size must be an integer"),
    ({"rescale_factor": "1/255"}, "CLIPImageProcessor.rescale_factor must be a positive number, not '1/255'"),
])
def test_hf_bad_values_name_the_hf_key(changes, message):
    assert invalid({**CLIP, **changes}).message.startswith(message)


def test_hf_config_can_sit_under_preprocess_with_our_output_section():
    cfg = parse_config({"preprocess": CLIP, "output": {"pooling": "cls", "normalize": False}})
    assert cfg.preprocess == parse_config(CLIP).preprocess
    assert cfg.output == OutputConfig(pooling="cls", normalize=False)
    assert cfg.source == "pg_imgembed"


# ---------------------------------------------------------------- to_dict round trip


ROUND_TRIP = [
    None,
    {"preprocess": {"resize": 224, "mean": [0.5, 0.5, 0.5], "std": 0.5}},
    {"preprocess": {"resize": {"shortest_edge": 256}, "center_crop": {"height": 224, "width": 192},
                    "crop_rounding": "round", "rescale": None, "channel_order": "BGR", "layout": "NHWC",
                    "decode": "fast", "background": [10, 20, 30], "resample": "lanczos"},
     "output": {"name": "pooled", "pooling": "cls", "normalize": False}, "source": "custom"},
    VIT, CLIP, CONVNEXT, {**CONVNEXT, "size": {"shortest_edge": 384}}, DINOV2,
    {**CLIP, "do_normalize": False, "do_rescale": False, "do_resize": False},
]


@pytest.mark.parametrize("raw", ROUND_TRIP)
def test_to_dict_round_trips_through_parse_config(raw):
    cfg = parse_config(raw)
    assert parse_config(cfg.to_dict()) == cfg
    assert parse_config(json.loads(json.dumps(cfg.to_dict()))) == cfg  # as stored in jsonb


def test_to_dict_uses_the_json_spelling():
    data = parse_config(CONVNEXT).to_dict()
    assert data["source"] == "ConvNextImageProcessor"
    assert data["preprocess"]["resize"] == {"shortest_edge": 256}
    assert data["preprocess"]["center_crop"] == {"height": 224, "width": 224}
    assert data["output"] == {"name": None, "pooling": "auto", "normalize": True}
    exact = parse_config({"preprocess": {"resize": {"height": 3, "width": 4}}}).to_dict()
    assert exact["preprocess"]["resize"] == {"height": 3, "width": 4}
    assert exact["preprocess"]["center_crop"] is None


def test_with_preprocess_replaces_only_the_named_fields():
    cfg = parse_config(CLIP)
    changed = cfg.with_preprocess(layout="NHWC")
    assert changed.preprocess.layout == "NHWC"
    assert changed.preprocess.resize == cfg.preprocess.resize
    assert cfg.preprocess.layout == "NCHW"  # the original is untouched


def test_native_size_round_trips_as_none():
    config = parse_config({"preprocess": {"resize": "none", "center_crop": 224}})
    assert config.to_dict()["preprocess"]["resize"] == "none"
    assert parse_config(config.to_dict()) == config
