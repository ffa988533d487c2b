"""Small helpers shared by the server tests."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import psycopg
from PIL import Image

from tests import onnx_models

# The config most tests use: exact resize to the model's 16x16 input, ImageNet normalisation.
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
TINY_CONFIG = {"preprocess": {"resample": "bilinear", "mean": MEAN, "std": STD}}


def load_model(conn: psycopg.Connection, name: str, onnx_bytes: bytes, config: dict | None = None,
               replace: bool = False) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT * FROM imgembed.load_model(%s, %s, %s::jsonb, %s)",
        (name, onnx_bytes, json.dumps(config) if config is not None else None, replace),
    )
    cols = [d.name for d in cur.description]
    return dict(zip(cols, cur.fetchone()))


def load_tiny(conn: psycopg.Connection, name: str = "tiny", default: bool = True, **model_args) -> dict[str, Any]:
    row = load_model(conn, name, onnx_models.conv_net(**model_args), TINY_CONFIG)
    if default:
        conn.execute("SELECT imgembed.set_default_model(%s)", (name,))
    return row


def vector(text: str) -> np.ndarray:
    """Parse pgvector's text output."""
    return np.array(json.loads(text), dtype=np.float32)


def embed(conn: psycopg.Connection, image: bytes, model: str | None = None) -> np.ndarray:
    if model is None:
        row = conn.execute("SELECT img_embedding(%s)::text", (image,)).fetchone()
    else:
        row = conn.execute("SELECT img_embedding(%s, %s)::text", (image, model)).fetchone()
    return vector(row[0])


def expected_tiny(img: Image.Image, size: int = 16) -> np.ndarray:
    """What the tiny model should give, preprocessed independently of the package."""
    arr = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    arr = (arr - np.array(MEAN)) / np.array(STD)
    return onnx_models.pooled_embedding(arr.transpose(2, 0, 1))


def sql_error(conn: psycopg.Connection, query: str, params: Any = None) -> psycopg.errors.Error:
    """Run a query that must fail; return the error (message, sqlstate, hint in .diag)."""
    try:
        conn.execute(query, params)
    except psycopg.Error as exc:
        return exc
    raise AssertionError(f"query did not fail: {query}")
