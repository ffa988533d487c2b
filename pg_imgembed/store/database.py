"""How the store queries PostgreSQL, from inside a backend (plpy) or from a client (psycopg).

One small protocol, so what both sides read and write (the model store, trigger metadata, error
records) is written once. Queries use PostgreSQL's own ``$1`` placeholders; ``types`` names each
parameter's type, which plpy needs to prepare a plan (and which a client may ignore). The
implementations live with what they wrap: ``backend.postgres.PlpyDatabase`` and
``client.pg_database.PsycopgDatabase``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Database(Protocol):
    def rows(self, query: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...
