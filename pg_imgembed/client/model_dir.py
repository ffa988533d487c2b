"""Model directories laid out as on Hugging Face (fastembed's layout), and optional hub download.

An image tower's directory holds ``model.onnx`` or ``onnx/model.onnx`` (or ``vision_model.onnx``
for two-tower models) and ``preprocessor_config.json`` (plus ``config.json``, not needed here).
Without a preprocessor config, a template names the preprocessing. A text tower's holds
``tokenizer.json`` with ``model.onnx`` (fastembed's CLIP text layout) or ``text_model.onnx``, and
``tokenizer_config.json`` for the context length. A directory with both (``vision_model.onnx``
and ``text_model.onnx``) holds a whole CLIP model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import catalog
from ..errors import ImgEmbedError, InvalidConfig

ONNX_CANDIDATES = ("model.onnx", "onnx/model.onnx", "vision_model.onnx", "onnx/vision_model.onnx")
TEXT_ONNX_CANDIDATES = ("text_model.onnx", "onnx/text_model.onnx", "model.onnx", "onnx/model.onnx")
TEXT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


@dataclass(frozen=True)
class TextTower:
    onnx: bytes
    tokenizer: bytes  # tokenizer.json
    config: dict[str, Any]  # the text config: the context length from tokenizer_config.json


class HubUnavailable(ImgEmbedError):
    sqlstate = "58000"


def read_model_dir(path: Path, *, onnx_file: str | None = None, output: str | None = None,
                   template: str | None = None, need_preprocessing: bool = True) -> tuple[bytes, dict[str, Any]]:
    """The ONNX bytes and the config to load them with (``need_preprocessing=False``: the caller
    has its own config, so a directory without preprocessor_config.json is fine)."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidConfig(f"{path}: {'not a directory' if path.exists() else 'no such directory'}")
    candidates = [onnx_file] if onnx_file else list(ONNX_CANDIDATES)
    found = next((path / c for c in candidates if (path / c).is_file()), None)
    if found is None:
        raise InvalidConfig(f"no ONNX model in {path}: looked for {', '.join(candidates)}",
                            hint="Export the model to ONNX first (e.g. optimum-cli export onnx --model ID DIR).")
    processor = path / "preprocessor_config.json"
    config: dict[str, Any]
    if template is not None:
        config = {"template": template}
    elif processor.is_file():
        try:
            config = {"preprocess": json.loads(processor.read_text()), "source": f"{processor}"}
        except json.JSONDecodeError as exc:
            raise InvalidConfig(f"{processor} is not valid JSON: {exc}") from None
    elif not need_preprocessing:
        config = {}
    else:
        raise InvalidConfig(f"{path} has no preprocessor_config.json",
                            hint="Name a template (clip, vit, convnext, dinov2, ...) or give a config.")
    if output is not None:
        config["output"] = {"name": output}
    return found.read_bytes(), config


def holds_image_tower(path: Path) -> bool:
    """Whether a directory holds an image tower (not only a text tower)."""
    return (any((path / c).is_file() for c in ("vision_model.onnx", "onnx/vision_model.onnx"))
            or (path / "preprocessor_config.json").is_file() or not (path / "tokenizer.json").is_file())


def read_text_dir(path: Path, *, onnx_file: str | None = None) -> TextTower | None:
    """The text tower of a directory, or None where it has none (no tokenizer.json, or only an
    image model beside it)."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        return None
    candidates = [onnx_file] if onnx_file else [c for c in TEXT_ONNX_CANDIDATES if "text_model" in c or not holds_image_tower(path)]
    found = next((path / c for c in candidates if (path / c).is_file()), None)
    if found is None:
        return None
    config: dict[str, Any] = {}
    tokenizer_config = path / "tokenizer_config.json"
    if tokenizer_config.is_file():
        try:
            length = json.loads(tokenizer_config.read_text()).get("model_max_length")
        except json.JSONDecodeError as exc:
            raise InvalidConfig(f"{tokenizer_config} is not valid JSON: {exc}") from None
        # transformers writes a huge number where the tokenizer sets no length (int(1e30)).
        if isinstance(length, int) and 0 < length <= 8192:
            config = {"tokenizer": {"max_length": length}}
    return TextTower(found.read_bytes(), (path / "tokenizer.json").read_bytes(), config)


def download(model_id: str, cache_dir: Path | None = None) -> Path:
    """Fetch a catalog model's ONNX and preprocessing files from the Hugging Face hub."""
    entry = catalog.find(model_id)
    offline = (f"Offline: fetch the repository where the hub is reachable (git clone https://huggingface.co/{model_id}), "
               "copy it here and run: pg-imgembed models load NAME --from-dir DIR")
    if entry is not None and entry.onnx_file is None:
        raise HubUnavailable(f"{model_id} ships no ONNX file", hint=f"{entry.notes}; then: pg-imgembed models load NAME --from-dir DIR")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise HubUnavailable("downloading from the Hugging Face hub needs the huggingface_hub package",
                             hint="pip install 'pg_imgembed[hub]'. " + offline) from None
    patterns = [entry.onnx_file if entry and entry.onnx_file else "*.onnx", "preprocessor_config.json", *TEXT_FILES]
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns, cache_dir=cache_dir))
    except Exception as exc:  # network errors come in many types
        raise HubUnavailable(f"cannot download {model_id} from the Hugging Face hub: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}", hint=offline) from exc
