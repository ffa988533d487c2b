"""Models from Python: load a file or a model directory in chunks, export one, read its dimensions.

The CLI (``pg-imgembed models load/export``) and the SQLAlchemy helpers call these, so a model
reaches the server the same way from every client. Works on any psycopg connection, in or out of
a transaction; the server checks the model (``imgembed.load_model``), not this code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ..errors import InvalidConfig, UnknownModel
from .model_dir import TextTower, read_model_dir, read_text_dir

CHUNK = 4 << 20  # 4 MiB per round trip

# (bytes done, bytes in all): called after every chunk.
ProgressCallback = Callable[[int, int], None]

DIMENSIONS = """SELECT name, dimensions FROM imgembed.models
                 WHERE modality = 'image' AND name = coalesce(%(model)s, (SELECT name FROM imgembed.models WHERE is_default))"""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    dimensions: int
    input: str
    sha256: str
    modality: str = "image"


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


@contextmanager
def uploaded(conn: psycopg.Connection[Any], data: bytes, progress: ProgressCallback | None) -> Iterator[psycopg.Cursor[Any]]:
    """A transaction in which ``UPLOADED`` reads ``data``, sent in chunks (a few MB per round trip,
    not one huge parameter) to a temporary table: invisible to other sessions, gone after it."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS pg_imgembed_upload (n int, chunk bytea)")
        cur.execute("TRUNCATE pg_imgembed_upload")
        for n, start in enumerate(range(0, len(data), CHUNK)):
            cur.execute("INSERT INTO pg_imgembed_upload VALUES (%s, %s)", (n, data[start:start + CHUNK]))
            if progress is not None:
                progress(min(start + CHUNK, len(data)), len(data))
        yield cur
        cur.execute("DROP TABLE pg_imgembed_upload")


UPLOADED = "(SELECT string_agg(chunk, ''::bytea ORDER BY n) FROM pg_imgembed_upload)"


def load_model(conn: psycopg.Connection[Any], name: str, source: str | os.PathLike[str] | bytes, *,
               config: ConfigArgument = None, template: str | None = None, replace: bool = False,
               default: bool = False, progress: ProgressCallback | None = None) -> LoadedModel:
    """Load an image tower (an ONNX file, a model directory or bytes) with ``imgembed.load_model``;
    ``default`` also makes it the default model."""
    onnx, resolved = read_model_source(source, config=config, template=template)
    with uploaded(conn, onnx, progress) as cur:
        cur.execute(f"SELECT name, dimensions, input, sha256 FROM imgembed.load_model(%s, {UPLOADED}, %s::jsonb, %s)",
                    (name, json.dumps(resolved) if resolved is not None else None, replace))
        row = cur.fetchone()
        assert row is not None
        if default:
            cur.execute("SELECT imgembed.set_default_model(%s)", (name,))
    return LoadedModel(*row)


def read_text_source(source: str | os.PathLike[str] | bytes, tokenizer: str | os.PathLike[str] | bytes | None,
                     config: ConfigArgument) -> TextTower:
    if isinstance(config, os.PathLike):
        config = read_config_file(config)
    if tokenizer is None:
        found = read_text_dir(Path(source)) if not isinstance(source, bytes) and Path(source).is_dir() else None
        if found is None:
            raise InvalidConfig(f"{source if not isinstance(source, bytes) else 'the ONNX bytes'}: no text tower "
                                "(a directory with tokenizer.json and model.onnx or text_model.onnx)",
                                hint="Or give the ONNX file and the tokenizer.json separately.")
        return TextTower(found.onnx, found.tokenizer, dict(config) if config is not None else found.config)
    onnx = source if isinstance(source, bytes) else Path(source).read_bytes()
    tokenizer_json = tokenizer if isinstance(tokenizer, bytes) else Path(tokenizer).read_bytes()
    return TextTower(onnx, tokenizer_json, dict(config) if config is not None else {})


def load_text_model(conn: psycopg.Connection[Any], name: str, source: str | os.PathLike[str] | bytes, *,
                    tokenizer: str | os.PathLike[str] | bytes | None = None, config: ConfigArgument = None,
                    replace: bool = False, progress: ProgressCallback | None = None) -> LoadedModel:
    """Load the text tower of model ``name`` (its image tower is loaded first) with
    ``imgembed.load_text_model``: a directory (fastembed / Hugging Face layout), or an ONNX file or
    bytes with ``tokenizer`` (a tokenizer.json path or bytes)."""
    tower = read_text_source(source, tokenizer, config)
    with uploaded(conn, tower.onnx, progress) as cur:
        cur.execute(f"SELECT name, dimensions, input, sha256, modality FROM imgembed.load_text_model(%s, {UPLOADED}, %s, %s::jsonb, %s)",
                    (name, tower.tokenizer, json.dumps(tower.config) if tower.config else None, replace))
        row = cur.fetchone()
        assert row is not None
    return LoadedModel(*row)


def export_model(conn: psycopg.Connection[Any], name: str, file: str | os.PathLike[str],
                 progress: ProgressCallback | None = None) -> tuple[int, str]:
    """Write a stored (pipeline) model to a file in chunks; (size, sha256), checked against the table."""
    found = conn.execute("SELECT bytes, sha256 FROM imgembed.model_store WHERE name = %s", (name,)).fetchone()
    if found is None:
        names = [r[0] for r in conn.execute("SELECT name FROM imgembed.models WHERE modality = 'image' ORDER BY name")]
        raise UnknownModel(f'model "{name}" does not exist',
                           hint=f"Loaded models: {', '.join(names)}." if names else "No model is loaded.")
    size, sha = found
    digest = write_chunks(conn, "SELECT substring(onnx FROM %s FOR %s) FROM imgembed.model_store WHERE name = %s",
                          name, size, Path(file), progress)
    if digest != sha:
        raise InvalidConfig(f"exported bytes have sha256 {digest}, the table says {sha}")
    return size, sha


def export_triton(conn: psycopg.Connection[Any], name: str, directory: str | os.PathLike[str], *, max_batch_size: int = 16,
                  instances: int = 1, gpu: bool = True, tensorrt_fp16: bool = False,
                  warn: Callable[[str], None] = print) -> list[str]:
    """A Triton model repository for NVIDIA's images: ``DIR/NAME`` (and ``DIR/NAME.text``, the text
    tower) with ``config.pbtxt`` (platform onnxruntime_onnx) and ``<generation>/model.onnx``, the
    stored bytes. Returns the model names written."""
    from ..serving.triton_repository import config_pbtxt, stored_models, write_model
    from ..store.model_store import ModelStore
    from .pg_database import PsycopgDatabase

    os.makedirs(directory, exist_ok=True)
    written = []
    for model in stored_models(ModelStore(PsycopgDatabase(conn)), name, {}, warn):
        config = config_pbtxt(model, max_batch_size=max_batch_size, instances=instances, gpu=gpu, tensorrt_fp16=tensorrt_fp16)
        write_model(os.fspath(directory), model, config, {"model.onnx": model.onnx}, private=False)
        written.append(model.name)
    return written


def write_chunks(conn: psycopg.Connection[Any], query: str, name: str, size: int, file: Path,
                 progress: ProgressCallback | None) -> str:
    """Read a bytea column in chunks into a file; its sha256. substring() of an uncompressed
    (STORAGE EXTERNAL) value reads only the chunks it needs."""
    digest = hashlib.sha256()
    with open(file, "wb") as out:
        for start in range(0, size, CHUNK):
            row = conn.execute(query, (start + 1, CHUNK, name)).fetchone()
            assert row is not None
            out.write(row[0])
            digest.update(row[0])
            if progress is not None:
                progress(min(start + CHUNK, size), size)
    return digest.hexdigest()


def export_text_model(conn: psycopg.Connection[Any], name: str, directory: str | os.PathLike[str],
                      progress: ProgressCallback | None = None) -> Path:
    """Write a model's text tower as fastembed and Hugging Face lay it out: model.onnx,
    tokenizer.json, tokenizer_config.json (the context length), and pg_imgembed_text.json (the
    pooling and normalisation the vectors had). Returns the directory."""
    row = conn.execute("SELECT bytes, sha256, tokenizer, tokenizer_sha256, config FROM imgembed.text_model_store WHERE name = %s",
                       (name,)).fetchone()
    if row is None:
        names = [r[0] for r in conn.execute("SELECT name FROM imgembed.models WHERE modality = 'text' ORDER BY name")]
        raise UnknownModel(f'model "{name}" has no text tower',
                           hint=f"Models with one: {', '.join(names)}." if names else "No text tower is loaded.")
    size, sha, tokenizer, tokenizer_sha, config = row
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    digest = write_chunks(conn, "SELECT substring(onnx FROM %s FOR %s) FROM imgembed.text_model_store WHERE name = %s",
                          name, size, out / "model.onnx", progress)
    if digest != sha or hashlib.sha256(tokenizer).hexdigest() != tokenizer_sha:
        raise InvalidConfig(f"exported bytes of the text tower of {name} do not match the sha256 the table records")
    (out / "tokenizer.json").write_bytes(tokenizer)
    pad = token_of(json.loads(tokenizer), config["tokenizer"]["pad_id"])
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": config["tokenizer"]["max_length"], **({"pad_token": pad} if pad else {})}, indent=2))
    (out / "pg_imgembed_text.json").write_text(json.dumps(config, indent=2))
    return out


def token_of(tokenizer: dict[str, Any], token_id: int) -> str | None:
    """The text of a token id in a tokenizer.json (its added tokens, then its vocabulary)."""
    for added in tokenizer.get("added_tokens") or []:
        if added.get("id") == token_id:
            return str(added["content"])
    vocab = (tokenizer.get("model") or {}).get("vocab") or {}
    return next((str(token) for token, i in vocab.items() if i == token_id), None) if isinstance(vocab, dict) else None


def model_dimensions(conn: psycopg.Connection[Any], model: str | None = None) -> int:
    """The dimensions of a model's vectors (the default model's without a name), for ``vector(N)``."""
    row = conn.execute(DIMENSIONS, {"model": model}).fetchone()
    if row is None:
        raise UnknownModel(f'model "{model}" does not exist' if model else "no default model is set")
    return int(row[1])
