"""CLIP-shaped towers with random weights and CLIP's real tokenizer, laid out as fastembed expects.

No model hub is reachable, so:

- the tokenizer is CLIP's own BPE vocabulary (``bpe_simple_vocab_16e6.txt.gz``, 49,408 tokens),
  taken from the ``open_clip_torch`` wheel on PyPI (MIT; the package's code and torch are not
  installed, only this data file is read), and turned into ``tokenizer.json`` by transformers'
  ``CLIPTokenizer``: the files ``openai/clip-vit-base-patch32`` ships;
- the text tower has the inputs and outputs of a ``CLIPTextModelWithProjection`` export
  (``input_ids``, ``attention_mask`` -> ``text_embeds`` first, ``last_hidden_state``), pooling at
  the end-of-text token (the highest id, as CLIP does). Its hidden state is a running sum of token
  and position embeddings, so every id up to the end-of-text token changes the vector;
- the image tower is ``tests.fidelity_models.patch_net`` (``pixel_values`` -> ``image_embeds``).
"""

from __future__ import annotations

import functools
import gzip
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.fidelity_models import patch_net

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "clip-tokenizer"
OPEN_CLIP = "open_clip_torch==3.3.0"
VOCAB = 49408
CONTEXT = 77
HIDDEN = 16

# CLIP ViT-B/32's image preprocessing, as its preprocessor_config.json has it.
CLIP_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224},
}


@functools.cache
def tokenizer_dir() -> Path:
    """tokenizer.json, tokenizer_config.json, vocab.json and merges.txt of CLIP, built once per checkout."""
    if (CACHE / "tokenizer.json").is_file():
        return CACHE
    wheels = CACHE.parent / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", OPEN_CLIP, "-d", str(wheels)], check=True)
    wheel = next(wheels.glob("open_clip_torch-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        bpe = zf.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.decompress(bpe).decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]  # the slice OpenAI's tokenizer takes: 48,894 merges
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == VOCAB
    building = CACHE.with_name("clip-tokenizer.tmp")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    (building / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (building / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    from transformers import CLIPTokenizer

    CLIPTokenizer(vocab=str(building / "vocab.json"), merges=str(building / "merges.txt"),
                  model_max_length=CONTEXT).save_pretrained(str(building))
    shutil.rmtree(CACHE, ignore_errors=True)
    building.rename(CACHE)
    return CACHE


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's (and CLIP's) reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, map(chr, cs)))


def text_tower(dims: int = 512, *, seed: int = 0, sequence: int | str = "sequence", outputs_first: str = "text_embeds") -> bytes:
    """A CLIPTextModelWithProjection-shaped ONNX with random weights (opset 17, IR 8)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32), "token_embedding"),
        numpy_helper.from_array(rng.standard_normal((CONTEXT, HIDDEN)).astype(np.float32), "position_embedding"),
        numpy_helper.from_array((rng.standard_normal((HIDDEN, dims)) / np.sqrt(HIDDEN)).astype(np.float32), "text_projection"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
    ]
    nodes = [
        helper.make_node("Gather", ["token_embedding", "input_ids"], ["tokens"], axis=0),
        helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
        helper.make_node("Gather", ["ids_shape", "one"], ["length"], axis=0),
        helper.make_node("Range", ["zero", "length", "one"], ["positions"]),
        helper.make_node("Gather", ["position_embedding", "positions"], ["placed"], axis=0),
        helper.make_node("Add", ["tokens", "placed"], ["summed"]),
        helper.make_node("Tanh", ["summed"], ["squashed"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last_axis"], ["mask3"]),
        helper.make_node("Mul", ["squashed", "mask3"], ["masked"]),
        helper.make_node("CumSum", ["masked", "one"], ["last_hidden_state"]),
        helper.make_node("ArgMax", ["input_ids"], ["eos"], axis=1, keepdims=1),
        helper.make_node("GatherND", ["last_hidden_state", "eos"], ["pooled"], batch_dims=1),
        helper.make_node("MatMul", ["pooled", "text_projection"], ["text_embeds"]),
    ]
    outputs = {"text_embeds": helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", dims]),
               "last_hidden_state": helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", sequence, HIDDEN])}
    order = [outputs_first] + [name for name in outputs if name != outputs_first]
    graph = helper.make_graph(
        nodes, "clip_text",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", sequence]) for name in ("input_ids", "attention_mask")],
        [outputs[name] for name in order], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def image_tower(dims: int = 512, seed: int = 32) -> bytes:
    return patch_net(224, dims, output="image_embeds", seed=seed)


def text_dir(path: Path, onnx_bytes: bytes) -> Path:
    """fastembed's layout of Qdrant/clip-ViT-B-32-text: model.onnx and the tokenizer files."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.onnx").write_bytes(onnx_bytes)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir() / name, path / name)
    return path


def image_dir(path: Path, onnx_bytes: bytes) -> Path:
    """fastembed's layout of Qdrant/clip-ViT-B-32-vision: model.onnx and preprocessor_config.json."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.onnx").write_bytes(onnx_bytes)
    (path / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR))
    return path
