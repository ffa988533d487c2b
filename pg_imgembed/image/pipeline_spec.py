"""What a pipeline model's ``metadata_props`` say, read with onnxruntime alone (no onnx package).

The spec under ``pg_imgembed.pipeline`` holds the full config the pipeline was built from. Of it,
only decode, resize, crop and alpha handling still run outside the graph.
"""

from __future__ import annotations

import json
from typing import Any

from .model_config import ModelConfig, OutputConfig, PreprocessConfig, parse_config

METADATA_KEY = "pg_imgembed.pipeline"
DERIVED_KEY = "pg_imgembed.derived_from"  # a model made from another (an INT8 copy): which, and how
# 2: the preprocessing prefix of 0.5.0 (pipeline.py's _pre_nodes); 1: the one before it (Cast, Mul,
# Sub, Div on NHWC floats), which imgembed.rebuild_model re-emits.
FORMAT = 2
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"


def read_spec(session: Any) -> dict[str, Any] | None:
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return json.loads(raw) if raw else None


def read_derived_from(session: Any) -> dict[str, Any] | None:
    raw = session.get_modelmeta().custom_metadata_map.get(DERIVED_KEY)
    return json.loads(raw) if raw else None


def built_config(spec: dict[str, Any]) -> ModelConfig:
    """The full config the pipeline was built from (what ``imgembed.models`` shows)."""
    return parse_config(spec["config"])


def outside_config(spec: dict[str, Any]) -> ModelConfig:
    """The part that runs before the graph; the graph takes uint8 RGB NHWC pixels."""
    pre = built_config(spec).preprocess
    outside = PreprocessConfig(
        resize=pre.resize, resample=pre.resample, center_crop=pre.center_crop, crop_rounding=pre.crop_rounding,
        rescale=None, mean=None, std=None, channel_order="RGB", layout="NHWC",
        decode=pre.decode, background=pre.background,
    )
    return ModelConfig(outside, OutputConfig(name=OUTPUT_NAME, pooling="none", normalize=False), spec["config"].get("source", "pg_imgembed"))
