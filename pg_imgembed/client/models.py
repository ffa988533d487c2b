"""Models from Python: load a file or a model directory in chunks, export one, read its dimensions.

The CLI (``pg-imgembed models load/export``) and the SQLAlchemy helpers call these, so a model
reaches the server the same way from every client. Works on any psycopg connection, in or out of
a transaction; the server checks the model (``imgembed.load_model``), not this code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ..errors import InvalidConfig, UnknownModel
from .model_dir import read_model_dir

CHUNK = 4 << 20  # 4 MiB per round trip

# (bytes done, bytes in all): called after every chunk.
ProgressCallback = Callable[[int, int], None]

DIMENSIONS = """SELECT name, dimensions FROM imgembed.models
                 WHERE name = coalesce(%(model)s, (SELECT name FROM imgembed.models WHERE is_default))"""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    dimensions: int
    input: str
    sha256: str


ConfigArgument = Mapping[str, Any] | os.PathLike[str] | None


def read_config_file(path: os.PathLike[str]) -> Mapping[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise InvalidConfig(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidConfig(f"{path} must hold a JSON object, not {type(config).__name__}")
    return config


def read_model_source(source: str | os.PathLike[str] | bytes, *, config: ConfigArgument = None,
                      template: str | None = None) -> tuple[bytes, Mapping[str, Any] | None]:
    """The ONNX bytes and the config to load them with, from bytes, an ONNX file or a model
    directory (Hugging Face / fastembed layout: its preprocessor_config.json, unless a template or
    a config is given). ``config`` is a mapping or a JSON file (a ``Path``)."""
    if isinstance(config, os.PathLike):
        config = read_config_file(config)
    if isinstance(source, bytes):
        return source, config if config is not None else ({"template": template} if template else None)
    path = Path(source)
    if path.is_dir():
        onnx, found = read_model_dir(path, template=template, need_preprocessing=config is None)
        return onnx, config if config is not None else found
    if not path.exists():
        raise InvalidConfig(f"{path} does not exist", hint="Name an ONNX file or a model directory.")
    return path.read_bytes(), config if config is not None else ({"template": template} if template else None)


def load_model(conn: psycopg.Connection[Any], name: str, source: str | os.PathLike[str] | bytes, *,
               config: ConfigArgument = None, template: str | None = None, replace: bool = False,
               default: bool = False, progress: ProgressCallback | None = None) -> LoadedModel:
    """Upload a model in chunks (a few MB per round trip, not one huge parameter) and load it with
    ``imgembed.load_model``; ``default`` also makes it the default model."""
    onnx, resolved = read_model_source(source, config=config, template=template)
    with conn.transaction(), conn.cursor() as cur:
        # A temporary table: one session's chunks are invisible to others and vanish with it.
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS pg_imgembed_upload (n int, chunk bytea)")
        cur.execute("TRUNCATE pg_imgembed_upload")
        for n, start in enumerate(range(0, len(onnx), CHUNK)):
            cur.execute("INSERT INTO pg_imgembed_upload VALUES (%s, %s)", (n, onnx[start:start + CHUNK]))
            if progress is not None:
                progress(min(start + CHUNK, len(onnx)), len(onnx))
        cur.execute("SELECT name, dimensions, input, sha256 FROM imgembed.load_model(%s, "
                    "(SELECT string_agg(chunk, ''::bytea ORDER BY n) FROM pg_imgembed_upload), %s::jsonb, %s)",
                    (name, json.dumps(resolved) if resolved is not None else None, replace))
        row = cur.fetchone()
        assert row is not None
        cur.execute("DROP TABLE pg_imgembed_upload")
        if default:
            cur.execute("SELECT imgembed.set_default_model(%s)", (name,))
    return LoadedModel(*row)


def export_model(conn: psycopg.Connection[Any], name: str, file: str | os.PathLike[str],
                 progress: ProgressCallback | None = None) -> tuple[int, str]:
    """Write a stored (pipeline) model to a file in chunks; (size, sha256), checked against the table."""
    found = conn.execute("SELECT bytes, sha256 FROM imgembed.model_store WHERE name = %s", (name,)).fetchone()
    if found is None:
        names = [r[0] for r in conn.execute("SELECT name FROM imgembed.models ORDER BY name")]
        raise UnknownModel(f'model "{name}" does not exist',
                           hint=f"Loaded models: {', '.join(names)}." if names else "No model is loaded.")
    size, sha = found
    digest = hashlib.sha256()
    with open(file, "wb") as out:
        # substring() of an uncompressed (STORAGE EXTERNAL) value reads only the chunks it needs.
        for start in range(0, size, CHUNK):
            row = conn.execute("SELECT substring(onnx FROM %s FOR %s) FROM imgembed.model_store WHERE name = %s",
                               (start + 1, CHUNK, name)).fetchone()
            assert row is not None
            out.write(row[0])
            digest.update(row[0])
            if progress is not None:
                progress(min(start + CHUNK, size), size)
    if digest.hexdigest() != sha:
        raise InvalidConfig(f"exported bytes have sha256 {digest.hexdigest()}, the table says {sha}")
    return size, sha


def model_dimensions(conn: psycopg.Connection[Any], model: str | None = None) -> int:
    """The dimensions of a model's vectors (the default model's without a name), for ``vector(N)``."""
    row = conn.execute(DIMENSIONS, {"model": model}).fetchone()
    if row is None:
        raise UnknownModel(f'model "{model}" does not exist' if model else "no default model is set")
    return int(row[1])
