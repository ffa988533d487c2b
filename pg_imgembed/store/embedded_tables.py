"""What the backend and the workers both know about embedded tables, read through the SQL
functions that hold it (sql/idempotent/triggers.sql), and where both record an image's failure.

Tables are named as text ``regclass`` accepts: a name as the caller's search_path resolves it, or
an oid.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PermissionDenied
from .database import Database

# regclassin, unlike the text cast, takes an oid as well as a name.
REGCLASS = "pg_catalog.regclassin($1::pg_catalog.text::pg_catalog.cstring)"


@dataclass(frozen=True)
class EmbeddingTrigger:
    table: str
    name: str
    image_column: str
    vector_column: str
    model: str
    on_error: str
    mode: str  # sync or async


_COLUMNS = ("SELECT tbl::pg_catalog.text AS table, trigger_name::pg_catalog.text AS name, "
            "image_column::pg_catalog.text AS image_column, vector_column::pg_catalog.text AS vector_column, "
            "model, on_error, mode")
_TRIGGERS = _COLUMNS + " FROM imgembed.embedding_triggers()"

_OWNER_COLUMNS = (", imgembed.owner_may_use_model(tbl, model) AS owner_ok, (SELECT c.relowner::pg_catalog.regrole::pg_catalog.text "
                  "FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl) AS owner")


def embedding_triggers(db: Database) -> list[EmbeddingTrigger]:
    return [EmbeddingTrigger(**row) for row in db.rows(_TRIGGERS + " ORDER BY 1, 2")]


def bound_trigger(db: Database, table: str, vector_column: str) -> EmbeddingTrigger | None:
    """The embedding trigger that keeps this vector column, if any."""
    rows = db.rows(f"{_TRIGGERS} WHERE tbl OPERATOR(pg_catalog.=) {REGCLASS} AND vector_column OPERATOR(pg_catalog.=) $2",
                   ["text", "name"], [str(table), vector_column])
    return EmbeddingTrigger(**rows[0]) if rows else None


def async_trigger(db: Database, table: str, vector_column: str) -> EmbeddingTrigger | None:
    """The async embedding trigger that keeps this vector column, if any, with the table's owner
    checked as ``check_owner_may_use`` checks: one statement (the worker asks for each batch)."""
    rows = db.rows(f"{_COLUMNS}{_OWNER_COLUMNS} FROM imgembed.embedding_triggers() WHERE tbl OPERATOR(pg_catalog.=) {REGCLASS} "
                   "AND vector_column OPERATOR(pg_catalog.=) $2 AND mode OPERATOR(pg_catalog.=) 'async'",
                   ["text", "name"], [str(table), vector_column])
    if not rows:
        return None
    row = rows[0]
    ok, owner = row.pop("owner_ok"), row.pop("owner")
    if not ok:
        raise owner_may_not_use(row["table"], row["model"], owner)
    return EmbeddingTrigger(**row)


def check_owner_may_use(db: Database, table: str, model: str) -> None:
    """Every path that embeds for a table checks this when it embeds (the sync trigger, in
    PL/pgSQL, too): a grant revoked from the table's owner stops the next row or batch."""
    row = db.rows(f"SELECT tbl::pg_catalog.text AS name{_OWNER_COLUMNS} FROM (SELECT {REGCLASS} AS tbl, $2::pg_catalog.text AS model) t",
                  ["text", "text"], [str(table), model])[0]
    if not row["owner_ok"]:
        raise owner_may_not_use(row["name"], model, row["owner"])


def owner_may_not_use(table: str, model: str, owner: str) -> PermissionDenied:
    return PermissionDenied(f'the owner of table {table} may not use model "{model}"',
                            hint=f"A model administrator can allow it: SELECT imgembed.grant_model_usage('{model}', '{owner}');")


def tables_using(db: Database, model: str) -> list[str]:
    return sorted({t.table for t in embedding_triggers(db) if t.model == model})


def primary_key(db: Database, table: str) -> list[str]:
    return [str(k) for k in db.rows(f"SELECT imgembed.primary_key({REGCLASS})::pg_catalog.text[] AS k", ["text"],
                                    [str(table)])[0]["k"]]


def column_type(db: Database, table: str, column: str) -> str:
    return str(db.rows(f"SELECT imgembed.column_type({REGCLASS}, $2) AS t", ["text", "name"], [str(table), column])[0]["t"])


def record_error(db: Database, table: str, row_key: str | None, model: str, sqlstate: str, message: str) -> None:
    """Append to imgembed.errors (its policy admits writers of the table only)."""
    db.rows(f"SELECT imgembed.record_error({REGCLASS}, $2::pg_catalog.jsonb, $3, $4, $5)",
            ["text", "text", "text", "text", "text"], [str(table), row_key, model, sqlstate, message])
