"""Read-only access to the running backend's state without SPI, through ctypes.

The postgres binary exports its functions; two of them answer what SPI must not be asked in a
parallel query: ``IsInParallelMode()`` and ``GetConfigOption()`` (settings). Both are plain
reads that never raise a PostgreSQL error, so calling them from Python cannot longjmp past us.
Only usable inside a backend.
"""

from __future__ import annotations

import ctypes


class BackendState:
    def __init__(self) -> None:
        lib = ctypes.CDLL(None)
        self._get = lib.GetConfigOption
        self._get.restype = ctypes.c_char_p
        self._get.argtypes = (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
        self._parallel = getattr(lib, "IsInParallelMode", None)
        if self._parallel is not None:
            self._parallel.restype = ctypes.c_bool
            self._parallel.argtypes = ()
        # Fallback where IsInParallelMode is a macro: workers have ParallelWorkerNumber >= 0.
        self._worker = ctypes.c_int.in_dll(lib, "ParallelWorkerNumber")

    def setting(self, name: str) -> str | None:
        value = self._get(name.encode(), True, False)
        return value.decode() if value is not None else None

    def in_parallel_mode(self) -> bool:
        if self._parallel is not None:
            return bool(self._parallel())
        return self._worker.value >= 0
