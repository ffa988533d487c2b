"""Settings (``imgembed.*`` GUCs): names, defaults, validation. The one home of configuration.

Values arrive as the raw strings PostgreSQL holds (``SET imgembed.max_image_pixels = ...``, or
``ALTER DATABASE/ROLE ... SET``); an unset setting takes the default documented here. Inside the
server the settings module (src/pg_imgembed.c) defines them with the same defaults and ranges
(tests/test_settings_privileges.py compares them with ``pg_settings``) and enforces who may
set them: paths are a superuser's, limits can only be lowered by other roles.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from .errors import InvalidSetting


def default_threads() -> int:
    """Half the cores, 1 to 4: a database host serves many backends at once."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class Settings:
    max_image_pixels: int = 100_000_000  # decompression-bomb guard: ~300 MB of RGB pixels
    intra_op_threads: int = 0  # 0: default_threads()
    force_exact_decode: bool = False  # ignore models' "fast" (JPEG DCT-scaled) decode mode
    max_cached_models: int = 4  # ONNX sessions a backend keeps; least recently used go first
    model_cache: str = ""  # directory of the per-server model file cache; "" = <data_directory>/pg_imgembed_models, "off"
    optimized_graphs: bool = True  # cache onnxruntime's optimized graphs beside the model files
    decode_buffer_mb: int = 64  # freed image memory kept for the next decode; 0: give it back at once
    execution_provider: str = "auto"  # "auto": CUDA where onnxruntime-gpu can start it, else CPU; "cpu"; "cuda"
    inference_server: str = ""  # a V2 server's http(s):// URL that runs the models; "": onnxruntime in this process
    inference_token_file: str = ""  # a file holding the bearer token for inference_server; "": none
    inference_timeout_ms: int = 30_000  # longest wait for one answer of inference_server

    @property
    def threads(self) -> int:
        return self.intra_op_threads or default_threads()


EXECUTION_PROVIDERS = ("auto", "cpu", "cuda")
# The integer settings' ranges; units are in the names (_mb, _ms), PostgreSQL has none for them.
RANGES = {"max_image_pixels": (1, 1_000_000_000), "intra_op_threads": (0, 64), "max_cached_models": (1, 100),
          "decode_buffer_mb": (0, 4096), "inference_timeout_ms": (1, 3_600_000)}
# Defined by the C module only: the bootstrap reads it before the package is importable.
C_ONLY = ("imgembed.runtime_dir",)
SETTING_NAMES = {f"imgembed.{name}": name for name in Settings.__dataclass_fields__}


def read_settings(get: Callable[[str], str | None]) -> Settings:
    """Build ``Settings`` from a getter of raw GUC strings (``None`` or ``''`` when unset)."""
    values: dict[str, object] = {}
    for guc, field in SETTING_NAMES.items():
        raw = get(guc)
        if raw is None or raw.strip() == "":
            continue
        values[field] = _parse(guc, raw.strip(), type(getattr(Settings, field)))
    settings = Settings(**values)  # type: ignore[arg-type]
    for field, (low, high) in RANGES.items():
        _check_range(f"imgembed.{field}", getattr(settings, field), low, high)
    settings = replace(settings, execution_provider=settings.execution_provider.lower())
    if settings.execution_provider not in EXECUTION_PROVIDERS:
        raise InvalidSetting(
            f"imgembed.execution_provider must be one of {', '.join(EXECUTION_PROVIDERS)}, "
            f"not {settings.execution_provider!r}"
        )
    return settings


def _parse(guc: str, raw: str, kind: type) -> object:
    if kind is str:
        return raw
    if kind is bool:
        lowered = raw.lower()
        if lowered in ("on", "true", "yes", "1"):
            return True
        if lowered in ("off", "false", "no", "0"):
            return False
        raise InvalidSetting(f"{guc} must be on or off, not {raw!r}")
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise InvalidSetting(f"{guc} must be an integer, not {raw!r}") from None


def _check_range(guc: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidSetting(f"{guc} must be between {low} and {high}, not {value}")
