"""Model directories laid out as on Hugging Face (fastembed's layout), and optional hub download.

A directory holds ``model.onnx`` or ``onnx/model.onnx`` (or ``vision_model.onnx`` for two-tower
models) and ``preprocessor_config.json`` (plus ``config.json``, not needed here). Without a
preprocessor config, a template names the preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import known_models as catalog
from ..errors import ImgEmbedError, InvalidConfig

ONNX_CANDIDATES = ("model.onnx", "onnx/model.onnx", "vision_model.onnx", "onnx/vision_model.onnx")


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
    patterns = [entry.onnx_file if entry and entry.onnx_file else "*.onnx", "preprocessor_config.json", "config.json"]
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns, cache_dir=cache_dir))
    except Exception as exc:  # network errors come in many types
        raise HubUnavailable(f"cannot download {model_id} from the Hugging Face hub: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}", hint=offline) from exc
