"""Lineage: which model (sha256) made a column's vectors, and re-embedding when it changed.

Triggers and backfill record the sha256 of the model they embed with. When the model is replaced
under the same name, the column is stale; backfill then re-embeds every row in primary-key order,
committing each batch and saving the last key done, so an interrupted run resumes. Rows written
meanwhile by triggers already use the new model; re-embedding them again gives the same vector.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .batch import embed_many
from .embedding_model import EmbeddingModel
from .errors import ImageError, InvalidConfig
from .model_store import StoredModel
from .settings import Settings
from .triggers import primary_key, record_failure
from .vector_text import vector_to_text

_KEY = ["pg_catalog.regclass", "name"]


def record(plpy: Any, table: str, vector_column: str, stored: StoredModel, *, done: bool) -> None:
    """``done=False``: a trigger or backfill starts embedding this column with ``stored``. A new
    column is taken as made by it; a column made by another model keeps that model's sha256, so
    it shows as stale. ``done=True``: every vector of the column now comes from ``stored``."""
    conflict = ("DO UPDATE SET model = EXCLUDED.model, sha256 = EXCLUDED.sha256, target_sha256 = NULL, "
                "resume_after = NULL, updated_at = pg_catalog.now()") if done else (
                "DO UPDATE SET model = EXCLUDED.model, updated_at = pg_catalog.now() "
                "WHERE imgembed.lineage.model IS DISTINCT FROM EXCLUDED.model")
    plpy.execute(plpy.prepare(
        "INSERT INTO imgembed.lineage (tbl, vector_column, model, sha256) VALUES ($1, $2, $3, $4) "
        f"ON CONFLICT (tbl, vector_column) {conflict}", _KEY + ["text", "text"]),
        [table, vector_column, stored.name, stored.sha256])


def reembed_stale(plpy: Any, settings: Settings, embedder: EmbeddingModel, stored: StoredModel, table: str,
                  image_column: str, vector_column: str, vector_type: str, batch_size: int, on_error: str,
                  notice: Callable[[int, float], None]) -> int:
    """Re-embed a stale column in primary-key order; returns the rows rewritten."""
    lock = plpy.prepare("SELECT sha256, target_sha256, resume_after::text AS resume_after FROM imgembed.lineage "
                        "WHERE tbl OPERATOR(pg_catalog.=) $1 AND vector_column OPERATOR(pg_catalog.=) $2 FOR UPDATE", _KEY)
    state = plpy.execute(lock, [table, vector_column])
    if state.nrows() == 0 or state[0]["sha256"] == stored.sha256:
        return 0
    keys = primary_key(plpy, plpy.execute(plpy.prepare("SELECT $1::pg_catalog.regclass::pg_catalog.oid AS o", ["text"]), [table])[0]["o"])
    if not keys:
        raise InvalidConfig(f"re-embedding the stale vectors of {table} needs a primary key to resume by")
    q = plpy.quote_ident
    cols = ", ".join(f"t.{q(k)}" for k in keys)
    key_json = "pg_catalog.jsonb_build_object(" + ", ".join(f"{plpy.quote_literal(k)}, t.{q(k)}" for k in keys) + ")::text"
    after = ", ".join(f"r.{q(k)}" for k in keys)
    # Row comparison continues after the saved key; jsonb_populate_record gives it the key's own types.
    claim = plpy.prepare(
        f"SELECT t.ctid::text AS ctid, t.{q(image_column)} AS image, {key_json} AS key FROM {table} t "
        f"CROSS JOIN pg_catalog.jsonb_populate_record(NULL::{table}, $1::pg_catalog.jsonb) r "
        f"WHERE $1::pg_catalog.jsonb IS NULL OR ROW({cols}) > ROW({after}) "
        f"ORDER BY {cols} LIMIT $2 FOR UPDATE OF t", ["text", "int4"])
    write = plpy.prepare(
        f"UPDATE {table} AS t SET {q(vector_column)} = u.v::{vector_type} "
        "FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.tid[]), pg_catalog.unnest($2::pg_catalog.text[])) AS u(id, v) "
        "WHERE t.ctid OPERATOR(pg_catalog.=) u.id", ["text[]", "text[]"])
    save = plpy.prepare("UPDATE imgembed.lineage SET target_sha256 = $3, resume_after = $4::pg_catalog.jsonb, "
                        "updated_at = pg_catalog.now() WHERE tbl OPERATOR(pg_catalog.=) $1 "
                        "AND vector_column OPERATOR(pg_catalog.=) $2", _KEY + ["text", "text"])
    done, started = 0, time.monotonic()
    while True:
        state = plpy.execute(lock, [table, vector_column])[0]
        resume = state["resume_after"] if state["target_sha256"] == stored.sha256 else None  # new target: restart
        rows = plpy.execute(claim, [resume, batch_size])
        if rows.nrows() == 0:
            break
        failures: list[tuple[int, ImageError]] = []
        vectors = embed_many(embedder, [r["image"] for r in rows], settings, failures if on_error == "null" else None)
        for position, exc in failures:
            record_failure(plpy, table, rows[position]["key"], stored.name, exc)
        # Images that are NULL or failed get NULL: their old vector came from the old model.
        plpy.execute(write, [[r["ctid"] for r in rows], [vector_to_text(v) if v is not None else None for v in vectors]])
        plpy.execute(save, [table, vector_column, stored.sha256, rows[rows.nrows() - 1]["key"]])
        plpy.commit()
        done += rows.nrows()
        notice(done, time.monotonic() - started)
    record(plpy, table, vector_column, stored, done=True)
    plpy.commit()
    return done
