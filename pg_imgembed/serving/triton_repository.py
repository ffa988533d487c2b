"""Triton model repositories of stored models.

Two kinds, one layout (``NAME/config.pbtxt``, ``NAME/<generation>/``): what ``pg-imgembed serve``
runs in Triton's Python backend (our ``model.py`` runs onnxruntime on the stored bytes), and what
``pg-imgembed models export NAME DIR --triton`` writes for NVIDIA's own Triton images (platform
``onnxruntime_onnx``, optionally TensorRT FP16). Both configs carry the model's sha256 and
generation as parameters: the identity backends check (inference_server.py).

Files are created with O_EXCL|O_NOFOLLOW under directories opened without following links, so
nothing planted in the target directory is written through.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from ..errors import ImgEmbedError, InvalidModel, UnknownModel
from ..onnx.session import make_session
from ..store.model_store import ModelStore
from .inference_server import SHA256_PARAMETER, TEXT_SUFFIX, VERSION_PARAMETER

_TRITON_TYPES = {"tensor(uint8)": "TYPE_UINT8", "tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16",
                 "tensor(double)": "TYPE_FP64", "tensor(int64)": "TYPE_INT64", "tensor(int32)": "TYPE_INT32"}
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a directory name Triton and URLs take as is


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # TYPE_UINT8, ...
    dims: list[int]  # without the batch dimension; -1: any size


@dataclass(frozen=True)
class RepositoryModel:
    """A stored model (image tower, or text tower as ``NAME.text``) as Triton serves it."""

    name: str
    version: int  # the model's generation
    sha256: str
    onnx: bytes
    inputs: list[Tensor]
    outputs: list[Tensor]
    batched: bool  # the first dimension is the batch (dynamic): Triton may batch requests
    parameters: dict[str, str] = field(default_factory=dict)  # the ONNX's pg_imgembed.* metadata (the pipeline spec)


def describe(name: str, version: int, sha256: str, onnx: bytes, text: bool = False) -> RepositoryModel:
    """The model's tensors, read by onnxruntime after the same checks a backend makes (its bytes
    are the ones stored, it has no external data)."""
    served = name + TEXT_SUFFIX if text else name
    if not NAME.match(served):
        raise InvalidModel(f'model "{name}" cannot be a Triton model name (letters, digits, "_", "." and "-")',
                           hint="Load it under such a name to serve it.")
    if hashlib.sha256(onnx).hexdigest() != sha256:
        raise InvalidModel(f'the bytes of model "{name}" do not hash to its stored sha256 {sha256}')
    session = make_session(onnx, 1, "cpu")
    args = session.get_inputs() + session.get_outputs()
    batched = all(not isinstance(a.shape[0], int) for a in args)

    def tensor(arg: object) -> Tensor:
        shape = [d if isinstance(d, int) else -1 for d in arg.shape]  # type: ignore[attr-defined]
        return Tensor(arg.name, _TRITON_TYPES[arg.type], shape[1:] if batched else shape)  # type: ignore[attr-defined]

    metadata = {k: v for k, v in session.get_modelmeta().custom_metadata_map.items() if k.startswith("pg_imgembed.")}
    return RepositoryModel(served, version, sha256, onnx, [tensor(a) for a in session.get_inputs()],
                           [tensor(a) for a in session.get_outputs()], batched, metadata)


def stored_models(store: ModelStore, name: str, served: Mapping[str, tuple[str, int]],
                  warn: Callable[[str], None]) -> list[RepositoryModel]:
    """The image tower ``name`` and, where it has one, its text tower, read from the table; those
    ``served`` (V2 name -> sha256, generation) as stored are left out."""
    stored = store.lookup(name)
    found = []
    if served.get(name) != (stored.sha256, stored.generation):
        found.append(describe(name, stored.generation, stored.sha256, store.onnx_bytes(stored.sha256)))
    try:
        text = store.lookup_text(name)
    except UnknownModel:
        return found
    except ImgEmbedError as exc:  # paired with an image tower since replaced: its vectors would not match
        warn(f"the text tower of {name} is left out: {exc.message}")
        return found
    if served.get(name + TEXT_SUFFIX) != (text.sha256, text.generation):
        found.append(describe(name, text.generation, text.sha256, store.text_bytes(text.sha256, "onnx"), text=True))
    return found


def config_pbtxt(model: RepositoryModel, *, python: dict[str, str] | None = None, max_batch_size: int = 16,
                 instances: int = 1, gpu: bool = False, tensorrt_fp16: bool = False, queue_delay_us: int = 2000) -> str:
    """``python``: parameters of our model.py (Python backend); else platform onnxruntime_onnx."""
    lines = [f"name: {_quote(model.name)}",
             'backend: "python"' if python is not None else 'platform: "onnxruntime_onnx"',
             f"max_batch_size: {max_batch_size if model.batched else 0}",
             "version_policy: { latest: { num_versions: 1 } }"]
    for kind, tensors in (("input", model.inputs), ("output", model.outputs)):
        lines.append(f"{kind} [")
        lines.append(",\n".join(f"  {{ name: {_quote(t.name)} data_type: {t.data_type} dims: [ {', '.join(map(str, t.dims))} ] }}"
                                for t in tensors))
        lines.append("]")
    if model.batched:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}")
    lines.append(f"instance_group [ {{ count: {instances} kind: {'KIND_GPU' if gpu else 'KIND_CPU'} }} ]")
    if tensorrt_fp16:
        lines.append('optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" '
                     'parameters { key: "precision_mode" value: "FP16" } } ] } }')
    parameters = {**model.parameters, **(python or {}), SHA256_PARAMETER: model.sha256, VERSION_PARAMETER: str(model.version)}
    for key, value in parameters.items():
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A protobuf text-format string: UTF-8 bytes, printable ASCII as is, the rest as octal escapes."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03o}" for b in text.encode()) + '"'


def write_model(repository: str, model: RepositoryModel, config: str, files: dict[str, bytes], *, private: bool) -> None:
    """``repository/NAME/config.pbtxt`` (replaced whole) and ``repository/NAME/<version>/<files>``.
    ``private``: only this user may read them (serve); else readable by all (Triton in a container)."""
    dir_mode, file_mode = (0o700, 0o600) if private else (0o755, 0o644)
    with _directory(repository, None, dir_mode) as repo_fd, _directory(model.name, repo_fd, dir_mode) as model_fd:
        with _directory(str(model.version), model_fd, dir_mode, fresh=True) as version_fd:
            for filename, data in files.items():
                _write(filename, version_fd, data, file_mode)
        with contextlib.suppress(FileNotFoundError):
            os.unlink("config.pbtxt.new", dir_fd=model_fd)
        _write("config.pbtxt.new", model_fd, config.encode(), file_mode)
        os.replace("config.pbtxt.new", "config.pbtxt", src_dir_fd=model_fd, dst_dir_fd=model_fd)


@contextlib.contextmanager
def _directory(name: str, parent_fd: int | None, mode: int, fresh: bool = False) -> Iterator[int]:
    """The directory ``name`` (made if missing; ``fresh``: it must not exist), opened without following a link."""
    try:
        os.mkdir(name, mode, dir_fd=parent_fd)
    except FileExistsError:
        if fresh:
            raise
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _write(name: str, dir_fd: int, data: bytes, mode: int) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
