"""A text tower: tokenizer.json (Hugging Face ``tokenizers``) -> ids -> onnxruntime -> pool -> L2-normalise.

Tokenization runs in ``tokenizers``, on the model's own ``tokenizer.json``, stored beside the ONNX:
it is the implementation the reference pipelines (transformers' fast tokenizers, fastembed) run,
so the ids are theirs by construction, and an exported tower is the usual Hugging Face / fastembed
layout that any of them reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImgEmbedError, InferenceFailed, InvalidConfig, InvalidModel, TextTooLong
from ..model_stats import Meter, timed
from ..onnx.optimized_graphs import GraphPlan
from ..onnx.session import first_line, make_session, runs_on
from ..vectors import MAX_DIMENSIONS, l2_normalize
from .config import TextConfig, TokenizerConfig

MAX_TEXT_BYTES = 1 << 20  # a query or caption, not a document: bounds the tokenizer's memory
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
PROBE_TEXTS = ("a photo of a cat", "", "A DOG on the beach, at sunset! 🌅 犬")


def load_tokenizer(tokenizer_json: bytes) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    except Exception as exc:  # tokenizers raises plain Exceptions (and the bytes may not be UTF-8)
        raise InvalidModel(f"the tokenizer is not a readable tokenizer.json ({len(tokenizer_json)} bytes): {first_line(exc)}",
                           hint="Give the model's tokenizer.json (Hugging Face tokenizers format), not vocab.json or merges.txt.") from None


class TextModel:
    def __init__(self, source: bytes | Path | None, tokenizer_json: bytes, config: TextConfig, *, threads: int = 1,
                 provider: str = "cpu", graph: GraphPlan | None = None, session: Any = None) -> None:
        self.tokenizer = load_tokenizer(tokenizer_json)
        self.session = session if session is not None else make_session(source, threads, provider, graph)
        self.threads = threads
        self.provider = runs_on(self.session)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if "input_ids" not in inputs:
            raise InvalidModel(f"a text tower takes input_ids; this model's inputs are {', '.join(inputs)}",
                               hint="An image model is loaded with imgembed.load_model.")
        unknown = [name for name in inputs if name not in TEXT_INPUTS]
        if unknown:
            raise InvalidModel(f"text tower input {unknown[0]!r} is not one a tokenizer provides ({', '.join(TEXT_INPUTS)})")
        for name, inp in inputs.items():
            if inp.type not in _INT_TYPES or len(inp.shape) != 2:
                raise InvalidModel(f"text tower input {name!r} has type {inp.type} and shape {inp.shape}; "
                                   "expected a 2-D int64 or int32 tensor (batch, tokens)")
        self.inputs = {name: _INT_TYPES[inp.type] for name, inp in inputs.items()}
        fixed = inputs["input_ids"].shape[1]
        self.fixed_length = fixed if isinstance(fixed, int) else None
        max_length = config.tokenizer.max_length or self.fixed_length or self._tokenizer_truncation()
        if max_length is None:
            raise InvalidConfig("the text tower's context length is unknown: the model takes any length and the tokenizer does not truncate",
                                hint='Set it: {"tokenizer": {"max_length": 77}} (77 for CLIP).')
        if self.fixed_length is not None and max_length > self.fixed_length:
            raise InvalidConfig(f"tokenizer.max_length {max_length} exceeds the model's fixed sequence length {self.fixed_length}")
        self.max_length = max_length
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.pad_id = config.tokenizer.pad_id if config.tokenizer.pad_id is not None else self._pad_id()
        names = [o.name for o in self.session.get_outputs()]
        output = config.output.name or names[0]
        if output not in names:
            raise InvalidConfig(f"model has no output {output!r}; outputs: {', '.join(names)}")
        self.output_name = output
        self.config = TextConfig(TokenizerConfig(max_length, self.pad_id), config.output)  # resolved: what is stored

    def _tokenizer_truncation(self) -> int | None:
        truncation = self.tokenizer.truncation
        return int(truncation["max_length"]) if truncation else None

    def _pad_id(self) -> int:
        padding = self.tokenizer.padding
        if padding:
            return int(padding["pad_id"])
        for token in ("<|endoftext|>", "[PAD]", "<pad>"):
            found = self.tokenizer.token_to_id(token)
            if found is not None:
                return int(found)
        return 0

    def ids(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The model's inputs for a batch: ids padded to the longest (or the model's fixed length)."""
        for text in texts:
            if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
                raise TextTooLong(f"text of {len(text.encode('utf-8'))} bytes is longer than the {MAX_TEXT_BYTES} bytes a text query may have",
                                  hint=f"Only the first {self.max_length} tokens count: pass the beginning of the text.")
        encodings = self.tokenizer.encode_batch(list(texts))
        length = self.fixed_length or max(len(e.ids) for e in encodings)
        ids = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = encoding.ids
            mask[row, :len(encoding.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
                 "position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), ids.shape)}
        return {name: feeds[name].astype(dtype, copy=False) for name, dtype in self.inputs.items()}

    def embed(self, texts: Sequence[str], meter: Meter | None = None) -> np.ndarray:
        """``(N, D)`` float32 vectors (tokenizing is timed as preprocessing)."""
        with timed(meter, "preprocess"):
            feeds = self.ids(texts)
        try:
            with timed(meter, "inference", len(texts)):
                (raw,) = self.session.run([self.output_name], feeds)
        except ImgEmbedError:  # an inference server's own errors say what failed
            raise
        except Exception as exc:
            raise InferenceFailed(f"onnxruntime failed: {first_line(exc)}") from exc
        vectors = pool_tokens(np.asarray(raw, dtype=np.float32), self.config.output.pooling, feeds)
        if not np.isfinite(vectors).all():
            raise InferenceFailed("the text tower produced NaN or infinite values for this text")
        if meter is not None:
            meter.images += len(texts)
        return l2_normalize(vectors) if self.config.output.normalize else vectors

    def probe(self) -> np.ndarray:
        """Embed a few texts (validates the tower: shapes, pooling, NaN); returns the first vector."""
        vectors = self.embed(PROBE_TEXTS)
        if vectors.shape[1] > MAX_DIMENSIONS:
            raise InvalidModel(f"the text tower's output has {vectors.shape[1]} dimensions; pgvector's vector holds at most {MAX_DIMENSIONS}")
        return vectors[0]


def pool_tokens(raw: np.ndarray, pooling: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    if raw.ndim == 2 and pooling in ("auto", "none"):
        return raw
    if raw.ndim == 3 and pooling == "eos":
        return raw[np.arange(raw.shape[0]), feeds["input_ids"].argmax(axis=1)]
    if raw.ndim == 3 and pooling == "cls":
        return raw[:, 0, :]
    if raw.ndim == 3 and pooling == "mean":
        mask = (feeds["attention_mask"] if "attention_mask" in feeds else np.ones(raw.shape[:2]))[:, :, None].astype(np.float32)
        return (raw * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
    raise InvalidModel(
        f"text tower output has shape {list(raw.shape)}, which pooling {pooling!r} cannot turn into one vector per text",
        hint='Expected (N, D) vectors, or (N, T, D) tokens with output.pooling "eos" (CLIP), "cls" or "mean"; '
        "output.name picks another output.")
