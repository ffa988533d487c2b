"""Per-backend cache of ready models (ONNX sessions: image towers, and text towers in a cache of their
own), least recently used out first.

Keyed by model identity: the sha256 of the ONNX bytes plus the stored config text, thread count
and execution provider. Every call looks the name up in the model table first, so a model
replaced under the same name misses here and the stale session is dropped, in every session, at
its next call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

M = TypeVar("M")  # an ImageTower (image towers) or a TextModel


class ModelKey(NamedTuple):
    sha256: str
    config: str
    threads: int
    provider: str  # imgembed.execution_provider as set (or the inference server's URL), so a change takes effect at the next call


class SessionCache(Generic[M]):
    def __init__(self) -> None:
        self._models: OrderedDict[ModelKey, M] = OrderedDict()
        self._by_name: dict[str, ModelKey] = {}

    def get(self, name: str, key: ModelKey, load: Callable[[], M], capacity: int) -> M:
        previous = self._by_name.get(name)
        self._by_name[name] = key
        if previous is not None and previous != key and previous not in self._by_name.values():
            self._models.pop(previous, None)  # replaced under this name: free it now
        model = self._models.get(key)
        if model is None:
            model = load()
            self._models[key] = model
        self._models.move_to_end(key)
        while len(self._models) > capacity:
            self._models.popitem(last=False)
        return model

    def __len__(self) -> int:
        return len(self._models)

    def models(self) -> list[M]:
        return list(self._models.values())
