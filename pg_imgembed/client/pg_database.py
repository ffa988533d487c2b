"""``Database`` over a psycopg connection (the worker's), with PostgreSQL's ``$1`` placeholders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row


class PsycopgDatabase:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def rows(self, query: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with psycopg.RawCursor(self.conn, row_factory=dict_row) as cursor:
            cursor.execute(query, list(args), binary=True)  # binary: model bytes arrive without hex text
            return cursor.fetchall() if cursor.description is not None else []
