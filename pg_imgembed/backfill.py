"""Backfill: embed the rows whose vector is NULL or stale, in committed batches.

Each batch claims rows with ``FOR UPDATE SKIP LOCKED``, so concurrent backfills share the work
and writers are never blocked for long. Each batch commits, so an interrupted run loses at most
one batch, and running it again continues where it stopped. Rows are addressed by ctid, which is
stable while the batch holds their locks. Bad images follow the triggers' ``on_error`` policy;
under ``'null'`` they stay NULL and are skipped for the rest of the run.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from . import lineage
from .batch import embed_many
from .embedding_model import EmbeddingModel
from .errors import ImageError, InvalidConfig
from .model_store import ModelStore, StoredModel
from .settings import Settings
from .triggers import check_target, primary_key, record_failure
from .vector_text import vector_to_text

NOTICE_EVERY_S = 1.0


def backfill(plpy: Any, store: ModelStore, settings: Settings, session: Callable[[StoredModel], EmbeddingModel],
             table: str, image_column: str, vector_column: str, model: str | None, batch_size: int | None,
             on_error: str | None) -> int:
    """Returns the number of rows embedded."""
    stored = check_target(plpy, store, table, image_column, vector_column, model, on_error)
    if batch_size is None or batch_size < 1:
        raise InvalidConfig(f"batch_size must be a positive integer, not {batch_size!r}")
    q = plpy.quote_ident
    img, vec = q(image_column), q(vector_column)
    relid = plpy.execute(plpy.prepare("SELECT $1::pg_catalog.regclass::pg_catalog.oid AS oid", ["text"]), [table])[0]["oid"]
    vector_type = plpy.execute(plpy.prepare(
        "SELECT pg_catalog.format_type(atttypid, atttypmod) AS t FROM pg_catalog.pg_attribute "
        "WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attname OPERATOR(pg_catalog.=) $2", ["oid", "name"]),
        [relid, vector_column])[0]["t"]
    keys = primary_key(plpy, relid)
    key_json = ("pg_catalog.jsonb_build_object(" + ", ".join(f"{plpy.quote_literal(k)}, {q(k)}" for k in keys) + ")::text"
                if keys else "NULL::text")
    pending = f"{vec} IS NULL AND {img} IS NOT NULL"
    total = plpy.execute(f"SELECT pg_catalog.count(*) AS n FROM {table} WHERE {pending}")[0]["n"]
    claim = plpy.prepare(
        f"SELECT ctid::text AS ctid, {img} AS image, {key_json} AS key FROM {table} "
        f"WHERE {pending} AND NOT (ctid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.tid[])) "
        "LIMIT $2 FOR UPDATE SKIP LOCKED", ["text[]", "int4"])
    write = plpy.prepare(
        f"UPDATE {table} AS t SET {vec} = u.v::{vector_type} "
        "FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.tid[]), pg_catalog.unnest($2::pg_catalog.text[])) AS u(id, v) "
        "WHERE t.ctid OPERATOR(pg_catalog.=) u.id", ["text[]", "text[]"])

    embedder = session(stored)
    # Vectors made by a replaced model are rewritten first (this also fills NULL ones).
    lineage.record(plpy, table, vector_column, stored, done=False)
    plpy.commit()
    rows_in_table = plpy.execute(f"SELECT pg_catalog.count(*) AS n FROM {table}")[0]["n"]
    lineage.reembed_stale(plpy, settings, embedder, stored, table, image_column, vector_column, vector_type,
                          batch_size, on_error,
                          lambda n, elapsed: plpy.notice(progress(f"{table} (stale vectors)", n, rows_in_table, elapsed)))
    failed: list[str] = []  # ctids left NULL under on_error => 'null'
    done, started, last_notice = 0, time.monotonic(), 0.0
    while True:
        rows = plpy.execute(claim, [failed, batch_size])
        if rows.nrows() == 0:
            break
        failures: list[tuple[int, ImageError]] = []
        vectors = embed_many(embedder, [r["image"] for r in rows], settings,
                             failures if on_error == "null" else None)
        for position, exc in failures:
            failed.append(rows[position]["ctid"])
            record_failure(plpy, table, rows[position]["key"], stored.name, exc)
        written = [(r["ctid"], vector_to_text(v)) for r, v in zip(rows, vectors) if v is not None]
        plpy.execute(write, [[c for c, _ in written], [t for _, t in written]])
        plpy.commit()
        done += len(written)
        now = time.monotonic()
        if now - last_notice >= NOTICE_EVERY_S:
            plpy.notice(progress(table, done + len(failed), max(total, done + len(failed)), now - started))
            last_notice = now
    plpy.notice(progress(table, done + len(failed), max(total, done + len(failed)), time.monotonic() - started)
                + (f"; {len(failed)} images could not be embedded, see imgembed.errors" if failed else ""))
    return done


def progress(table: str, done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else 0.0
    return (f"backfill {table}: {done}/{total} rows ({100 * done / max(total, 1):.1f}%), "
            f"{rate:.1f} images/s, ETA {int(eta // 60)}m{int(eta % 60):02d}s")
