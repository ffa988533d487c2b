"""What each embedding call did, for ``imgembed.model_stats``.

A ``Meter`` collects one call's numbers while it runs (images embedded, images refused by
SQLSTATE, time in decode, preprocessing and inference, onnxruntime batches); the model's steps
time themselves into it (``ImageTower.decode/preprocess/run``). When the call ends its path
hands the meter over once: in a backend to ``SharedStats`` (shared memory, through the C module:
no SPI and no table, so a read-only session and a hot standby count too), in a worker with its
batch to ``imgembed.report_worker_batch()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

TOWERS = ("image", "text")
PATHS = ("function", "trigger", "backfill", "worker")


@dataclass
class Phase:
    total_ms: float = 0.0
    max_ms: float = 0.0


class Meter:
    """``observe(phase, ms, batch)``, if given, also sees every timed step (the worker's histograms)."""

    def __init__(self, observe: Callable[[str, float, int], None] | None = None) -> None:
        self.observe = observe
        self.images = 0
        self.refused: Counter[str] = Counter()
        self.batches = 0  # onnxruntime runs
        self.batched_images = 0
        self.decode = Phase()
        self.preprocess = Phase()
        self.inference = Phase()
        self._lock = threading.Lock()  # decode threads add their times at once

    def add(self, phase: str, ms: float, batch: int = 0) -> None:
        with self._lock:
            step: Phase = getattr(self, phase)
            step.total_ms += ms
            step.max_ms = max(step.max_ms, ms)
            if batch:
                self.batches += 1
                self.batched_images += batch
        if self.observe is not None:
            self.observe(phase, ms, batch)

    def refuse(self, sqlstate: str) -> None:
        with self._lock:
            self.refused[sqlstate] += 1

    def times(self) -> tuple[float, float, float, float, float, float]:
        """Total then max of decode, preprocessing and inference, in ms."""
        return (self.decode.total_ms, self.decode.max_ms, self.preprocess.total_ms, self.preprocess.max_ms,
                self.inference.total_ms, self.inference.max_ms)


@contextlib.contextmanager
def timed(meter: Meter | None, phase: str, batch: int = 0) -> Iterator[None]:
    """Time a step into ``meter`` (nothing without one); ``batch``: images of an onnxruntime run."""
    if meter is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        meter.add(phase, (time.perf_counter() - start) * 1000.0, batch)


class SharedStats:
    """A backend's sink: imgembed_stats_record/_refused of the C module, which bootstrap loaded.
    They never raise a PostgreSQL error (see src/model_stats.c), so calling them cannot longjmp
    past Python."""

    def __init__(self, lib: Any) -> None:
        self._record = lib.imgembed_stats_record
        self._record.restype = ctypes.c_bool
        self._record.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_int) + (ctypes.c_int64,) * 4 + (ctypes.c_double,) * 6
        self._refused = lib.imgembed_stats_refused
        self._refused.restype = ctypes.c_bool
        self._refused.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int64)

    @classmethod
    def attached(cls) -> SharedStats | None:
        """The sink, or None where the statistics are off (PostgreSQL 15 or 16 without the preload)."""
        lib = ctypes.CDLL(None)
        enabled = lib.imgembed_stats_enabled
        enabled.restype = ctypes.c_bool
        return cls(lib) if enabled() else None

    def record(self, model: str, tower: str, path: str, meter: Meter) -> None:
        name, t, p = model.encode(), TOWERS.index(tower), PATHS.index(path)
        self._record(name, t, p, 1, meter.images, meter.batches, meter.batched_images, *meter.times())
        for sqlstate, count in meter.refused.items():
            self._refused(name, t, p, sqlstate.encode(), count)

