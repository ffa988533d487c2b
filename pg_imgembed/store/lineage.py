"""Lineage: which model (name, sha256, generation) made a column's vectors.

Triggers and backfill record the generation of the model they embed with. When the model is
replaced under the same name, or a trigger switches the column to another model, the column is
stale until backfill has re-embedded it (``backfill.reembed_stale``). Why concurrent writers
cannot break this: see the comment on imgembed.lineage in sql/incremental/002-0.2.0.sql.
"""

from __future__ import annotations

from .database import Database
from .model_store import StoredModel

KEY_TYPES = ["pg_catalog.regclass", "name"]  # (tbl, vector_column)


def record(db: Database, table: str, vector_column: str, stored: StoredModel, *, done: bool) -> None:
    """``done=False``: a trigger or backfill starts embedding this column with ``stored``. A new
    column is taken as made by it; a column made by another model keeps that model's generation,
    so it shows as stale. ``done=True``: every vector of the column now comes from ``stored``."""
    conflict = ("DO UPDATE SET model = EXCLUDED.model, sha256 = EXCLUDED.sha256, generation = EXCLUDED.generation, "
                "target_generation = NULL, resume_after = NULL, updated_at = pg_catalog.now()") if done else (
                "DO UPDATE SET model = EXCLUDED.model, updated_at = pg_catalog.now() "
                "WHERE imgembed.lineage.model IS DISTINCT FROM EXCLUDED.model")
    db.rows("INSERT INTO imgembed.lineage (tbl, vector_column, model, sha256, generation) VALUES ($1, $2, $3, $4, $5) "
            f"ON CONFLICT (tbl, vector_column) {conflict}", [*KEY_TYPES, "text", "text", "int8"],
            [table, vector_column, stored.name, stored.sha256, stored.generation])


def recorded_model(db: Database, table: str, vector_column: str) -> str | None:
    """The model the column's lineage names, if it has one."""
    rows = db.rows("SELECT model FROM imgembed.lineage WHERE tbl OPERATOR(pg_catalog.=) $1 "
                   "AND vector_column OPERATOR(pg_catalog.=) $2", KEY_TYPES, [table, vector_column])
    return str(rows[0]["model"]) if rows else None
