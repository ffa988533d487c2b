"""The config of a text tower: how its tokenizer's ids are fed and its output becomes one vector.

    {"tokenizer": {"max_length": 77, "pad_id": 49407},
     "output": {"name": "text_embeds", "pooling": "none", "normalize": true}}

Every key is optional: ``max_length`` defaults to the model's fixed sequence length or the
tokenizer's own truncation; ``pooling`` to ``none`` for ``(N, D)`` outputs. Unknown keys are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InvalidConfig
from ..image.model_config import OutputConfig
from ..json_checks import check_keys, choice, json_object, positive_int

# eos: the position of the highest token id in each row (CLIP's <|endoftext|>, as OpenAI's and
# Hugging Face's CLIP text models pool); cls: the first token; mean: over the attention mask.
TEXT_POOLING = ("auto", "none", "eos", "cls", "mean")
MAX_CONTEXT = 8192  # tokens: more is not a text encoder's context, it is a mistake


@dataclass(frozen=True)
class TokenizerConfig:
    max_length: int | None = None
    pad_id: int | None = None


@dataclass(frozen=True)
class TextConfig:
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)  # the image towers' fields; pooling from TEXT_POOLING

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def parse_text_config(raw: Mapping[str, Any] | None) -> TextConfig:
    if raw is None:
        return TextConfig()
    raw = json_object("text model config", raw)
    check_keys("text model config", raw, {"tokenizer", "output"})
    tok = json_object("tokenizer", raw.get("tokenizer") or {})
    check_keys("tokenizer", tok, {"max_length", "pad_id"})
    out = json_object("output", raw.get("output") or {})
    check_keys("output", out, {"name", "pooling", "normalize"})
    max_length = tok.get("max_length")
    if max_length is not None and positive_int("tokenizer.max_length", max_length) > MAX_CONTEXT:
        raise InvalidConfig(f"tokenizer.max_length must be at most {MAX_CONTEXT}, not {max_length}")
    pad_id = tok.get("pad_id")
    if pad_id is not None and (isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0):
        raise InvalidConfig(f"tokenizer.pad_id must be a token id (an integer >= 0), not {pad_id!r}")
    name = out.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidConfig(f"output.name must be a string, not {name!r}")
    normalize = out.get("normalize", True)
    if not isinstance(normalize, bool):
        raise InvalidConfig(f"output.normalize must be true or false, not {normalize!r}")
    return TextConfig(TokenizerConfig(max_length, pad_id),
                      OutputConfig(name, choice("output.pooling", out.get("pooling", "auto"), TEXT_POOLING), normalize))
