"""How the package queries PostgreSQL, from inside a backend (plpy) or from a client (psycopg).

One small protocol, so what both sides read and write (the model store, trigger metadata, error
records) is written once. Queries use PostgreSQL's own ``$1`` placeholders; ``types`` names each
parameter's type, which plpy needs to prepare a plan (and which a client may ignore).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .plpy_api import Plan, PLPy


class Database(Protocol):
    def rows(self, query: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...


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
