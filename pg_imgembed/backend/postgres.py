"""What the package sees of the running backend: the part of PL/Python's ``plpy`` it uses (a typed
protocol) with the store's ``Database`` over it, and the backend's state read without SPI.

The server passes the real ``plpy`` in; nothing here imports it, so the package stays importable
(and type-checked) outside the server. ``BackendState`` reads through ctypes what SPI must not be
asked in a parallel query: the postgres binary exports ``IsInParallelMode()`` and
``GetConfigOption()`` (settings), plain reads that never raise a PostgreSQL error, so calling them
from Python cannot longjmp past us.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence
from typing import Any, Protocol


class Plan(Protocol):
    """A prepared statement (``plpy.prepare``)."""


class Result(Protocol):
    """Rows of ``plpy.execute``: indexable and iterable dicts, plus ``nrows()``."""

    def __getitem__(self, index: int) -> dict[str, Any]: ...
    def __iter__(self) -> Iterator[dict[str, Any]]: ...
    def __len__(self) -> int: ...
    def nrows(self) -> int: ...


class PLPy(Protocol):
    Error: type[Exception]

    def execute(self, query: str | Plan, args: Sequence[Any] | None = None, max_rows: int = 0) -> Result: ...
    def prepare(self, query: str, argtypes: Sequence[str] | None = None) -> Plan: ...
    def quote_ident(self, name: str) -> str: ...
    def quote_literal(self, value: str) -> str: ...
    def notice(self, message: str, **kwargs: Any) -> None: ...
    def warning(self, message: str, **kwargs: Any) -> None: ...
    def error(self, message: str, **kwargs: Any) -> None: ...
    def commit(self) -> None: ...


class PlpyDatabase:
    """Inside a backend: each query is prepared once per session and kept."""

    def __init__(self, plpy: PLPy) -> None:
        self.plpy = plpy
        self._plans: dict[tuple[str, tuple[str, ...]], Plan] = {}

    def rows(self, query: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        key = (query, tuple(types))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self.plpy.prepare(query, list(types))
        return list(self.plpy.execute(plan, list(args)))


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
