"""The part of PL/Python's ``plpy`` module the package uses, as a typed protocol, and the store's
``Database`` over it.

The server passes the real ``plpy`` in; nothing here imports it, so the package stays importable
(and type-checked) outside the server.
"""

from __future__ import annotations

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
