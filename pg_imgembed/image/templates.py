"""Named preprocessing templates: documented starting points users copy and edit.

A config may name one (``{"template": "clip", "preprocess": {...overrides}}``); the template's
config is the base and the keys given override it. Pure data (no heavy imports): the SQL build
reads it to create the ``imgembed.templates`` view.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidConfig

# Normalisation statistics, defined once (model_config reads them from here too).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    config: Mapping[str, Any]


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("vit", "Hugging Face ViTImageProcessor: warp to 224x224 (bilinear), scale to [0, 1], "
             "mean/std 0.5; token outputs use the CLS token",
             {"preprocess": {"resize": {"height": 224, "width": 224}, "resample": "bilinear",
                             "rescale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
              "output": {"pooling": "cls"}}),
    Template("convnext", "Hugging Face ConvNextImageProcessor at 224 with crop_pct 0.875: shortest side "
             "to int(224 / 0.875) = 256 (bicubic), center crop 224, ImageNet mean/std",
             {"preprocess": {"resize": {"shortest_edge": 256}, "resample": "bicubic",
                             "center_crop": {"height": 224, "width": 224},
                             "rescale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}}),
    Template("clip", "Hugging Face CLIPImageProcessor: shortest side to 224 (bicubic), center crop 224, "
             "CLIP mean/std",
             {"preprocess": {"resize": {"shortest_edge": 224}, "resample": "bicubic",
                             "center_crop": {"height": 224, "width": 224}, "rescale": 1 / 255,
                             "mean": CLIP_MEAN, "std": CLIP_STD}}),
    Template("torchvision-resnet", "torchvision ImageNet weights (ResNet and most classifiers): shortest "
             "side to 256 (bilinear), center crop 224 with torchvision's rounding, ImageNet mean/std",
             {"preprocess": {"resize": {"shortest_edge": 256}, "resample": "bilinear",
                             "center_crop": {"height": 224, "width": 224}, "crop_rounding": "round",
                             "rescale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}}),
    Template("keras-caffe", "Keras preprocess_input for ResNet50/VGG16 ('caffe' mode): load_img warp to "
             "224x224 (nearest), RGB to BGR, subtract the ImageNet channel means, no scaling, NHWC",
             {"preprocess": {"resize": {"height": 224, "width": 224}, "resample": "nearest",
                             "rescale": None, "mean": [123.68, 116.779, 103.939], "std": [1.0, 1.0, 1.0],
                             "channel_order": "BGR", "layout": "NHWC"}}),
    Template("dinov2", "DINOv2 (Hugging Face BitImageProcessor as configured for facebook/dinov2-*): shortest "
             "side to 256 (bicubic), center crop 224, ImageNet mean/std; token outputs use the CLS token",
             {"preprocess": {"resize": {"shortest_edge": 256}, "resample": "bicubic",
                             "center_crop": {"height": 224, "width": 224},
                             "rescale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
              "output": {"pooling": "cls"}}),
)}


class UnknownTemplate(InvalidConfig):
    pass


def expand_template(raw: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``{"template": name, ...overrides}`` -> a plain config; anything else unchanged."""
    if not isinstance(raw, Mapping) or "template" not in raw:
        return raw
    name = raw["template"]
    if name not in TEMPLATES:
        raise UnknownTemplate(f"unknown template {name!r}; templates: {', '.join(TEMPLATES)}")
    merged = copy.deepcopy(dict(TEMPLATES[name].config))
    for section, values in raw.items():
        if section == "template":
            continue
        if isinstance(values, Mapping) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    merged["source"] = f"template:{name}"
    return merged
