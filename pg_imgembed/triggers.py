"""Embedding triggers: checks at creation and the DDL they run.

Two BEFORE row triggers per vector column call ``imgembed.embedding_trigger(image_column,
vector_column, model, on_error)`` (sync; PL/pgSQL, sql/idempotent/triggers.sql) or the table's
generated enqueue function (async): one on INSERT, one on ``UPDATE OF image_column`` with
``WHEN (OLD.img IS DISTINCT FROM NEW.img)``, so an UPDATE that leaves the image alone never
reaches Python. The model is bound by name when the trigger is created (the default model at
that moment if none is named), so changing the default later cannot change a column's vectors.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .database import PlpyDatabase
from .embedded_tables import primary_key
from .errors import DimensionMismatch, InvalidColumn, InvalidConfig, NullArgument, UndefinedColumn, UndefinedTrigger
from .model_store import ModelStore, StoredModel

ON_ERROR = ("error", "null")


def trigger_names(vector_column: str) -> tuple[str, str]:
    """Names within PostgreSQL's 63-byte limit, distinct per vector column."""
    names = []
    for event in ("insert", "update"):
        name = f"imgembed_{vector_column}_{event}"
        if len(name.encode()) > 63:
            digest = hashlib.sha256(vector_column.encode()).hexdigest()[:8]
            name = f"imgembed_{vector_column.encode()[:36].decode(errors='ignore')}_{digest}_{event}"
        names.append(name)
    return names[0], names[1]


def relation_oid(db: PlpyDatabase, table: str) -> int:
    plpy = db.plpy
    return plpy.execute(plpy.prepare("SELECT $1::pg_catalog.regclass::pg_catalog.oid AS oid", ["text"]), [table])[0]["oid"]


def check_target(db: PlpyDatabase, store: ModelStore, table: str | None, image_column: str | None,
                 vector_column: str | None, model: str | None, on_error: str | None) -> StoredModel:
    """The checks shared by triggers and backfill: columns exist with the right types, the model
    exists and its dimensions fit the vector column, on_error is known. Returns the model."""
    plpy = db.plpy
    if table is None or image_column is None or vector_column is None:
        raise NullArgument("table, image_column and vector_column must not be NULL")
    if on_error not in ON_ERROR:
        raise InvalidConfig(f"on_error must be 'error' or 'null', not {on_error!r}")
    if image_column == vector_column:
        raise InvalidColumn(f'image and vector column are both "{image_column}"')
    relid = relation_oid(db, table)
    image = _column(db, relid, table, image_column)
    if image["type"] != "bytea":
        raise InvalidColumn(
            f'column "{image_column}" of table {table} has type {image["type"]}; the image column must be bytea'
        )
    vector = _column(db, relid, table, vector_column)
    if vector["extname"] != "vector" or vector["typname"] not in ("vector", "halfvec"):
        raise InvalidColumn(
            f'column "{vector_column}" of table {table} has type {vector["type"]}; '
            "the vector column must be pgvector's vector or halfvec"
        )
    stored = store.lookup(model)
    if vector["typmod"] > 0 and vector["typmod"] != stored.dimensions:
        raise DimensionMismatch(
            f'column "{vector_column}" of table {table} is {vector["typname"]}({vector["typmod"]}) but model "{stored.name}" '
            f"produces {stored.dimensions} dimensions",
            hint=f"ALTER TABLE {table} ALTER COLUMN {plpy.quote_ident(vector_column)} TYPE "
            f"{vector['typname']}({stored.dimensions}), or use a model with {vector['typmod']} dimensions.",
        )
    return stored


MODES = ("sync", "async")


def create(db: PlpyDatabase, store: ModelStore, table: str | None, image_column: str | None,
           vector_column: str | None, model: str | None, on_error: str | None, mode: str | None) -> str:
    """Check everything, then (re)create both triggers. Returns the model name bound."""
    plpy = db.plpy
    if mode not in MODES:
        raise InvalidConfig(f"mode must be 'sync' or 'async', not {mode!r}")
    stored = check_target(db, store, table, image_column, vector_column, model, on_error)
    # check_target refused NULLs and unknown on_error values
    assert table is not None and image_column is not None and vector_column is not None and on_error is not None
    relid = relation_oid(db, table)
    insert_name, update_name = (plpy.quote_ident(n) for n in trigger_names(vector_column))
    img = plpy.quote_ident(image_column)
    _drop_triggers(db, relid, table, vector_column)
    # Both kinds carry the same arguments, so model_store.embedding_triggers() finds either.
    args = ", ".join(plpy.quote_literal(a) for a in (image_column, vector_column, stored.name, on_error))
    if mode == "async":
        call = f"{create_enqueue_function(db, relid, table, image_column, vector_column, stored.name)}({args})"
    else:
        call = f"imgembed.embedding_trigger({args})"
        _drop_jobs(db, relid, table, vector_column)
    plpy.execute(f"CREATE TRIGGER {insert_name} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {call}")
    store_uncompressed(db, relid, table, image_column)
    plpy.execute(
        f"CREATE TRIGGER {update_name} BEFORE UPDATE OF {img} ON {table} FOR EACH ROW "
        f"WHEN (OLD.{img} IS DISTINCT FROM NEW.{img}) EXECUTE FUNCTION {call}"
    )
    return stored.name


def store_uncompressed(db: PlpyDatabase, relid: int, table: str, image_column: str) -> None:
    """JPEG/PNG/WebP bytes do not compress: pglz trying on every insert costs more than the
    insert itself (1.6 MB photos: 24.7 ms -> 7.7 ms a row). Only the default storage is changed."""
    plpy = db.plpy
    (storage,) = (r["s"] for r in plpy.execute(plpy.prepare(
        "SELECT attstorage::text AS s FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2",
        ["oid", "name"]), [relid, image_column]))
    if storage == "x":
        plpy.execute(f"ALTER TABLE {table} ALTER COLUMN {plpy.quote_ident(image_column)} SET STORAGE EXTERNAL")
        plpy.notice(f'column "{image_column}" of {table} now stores images uncompressed (STORAGE EXTERNAL): '
                    "image formats are compressed already")


def enqueue_function(db: PlpyDatabase, relid: int, vector_column: str) -> str:
    """Lives in the table's schema, where its owner may create it (a table can only be created in,
    or given to an owner with, CREATE on its schema), not in imgembed, where it may not."""
    plpy = db.plpy
    schema = plpy.execute(plpy.prepare(
        "SELECT relnamespace::pg_catalog.regnamespace::text AS s FROM pg_catalog.pg_class WHERE oid = $1",
        ["oid"]), [relid])[0]["s"]
    return f"{schema}.imgembed_enqueue_{relid}_{hashlib.sha256(vector_column.encode()).hexdigest()[:8]}"


def create_enqueue_function(db: PlpyDatabase, relid: int, table: str, image_column: str, vector_column: str,
                            model: str) -> str:
    """A PL/pgSQL trigger function for one table and column: the insert pays for one queue upsert,
    with the key columns spelled out (no Python, no dynamic SQL per row). It runs as the writer,
    whom imgembed.queue's policy lets add and re-queue jobs and nothing else."""
    plpy = db.plpy
    keys = primary_key(db, str(relid))
    if not keys:
        raise InvalidConfig(f"async embedding of {table} needs a primary key to find rows again",
                            hint="Add a primary key, or use mode => 'sync'.")
    q, lit = plpy.quote_ident, plpy.quote_literal
    row_key = "pg_catalog.jsonb_build_object(" + ", ".join(f"{lit(k)}, NEW.{q(k)}" for k in keys) + ")"
    name = enqueue_function(db, relid, vector_column)
    plpy.execute(f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
        BEGIN
            -- The old vector belongs to the old image. Assigning to NEW makes PL/pgSQL copy the
            -- whole row, image included (640x480 INSERT: 1.28x -> 1.03x a plain one), so only when needed.
            IF NEW.{q(vector_column)} IS NOT NULL THEN
                NEW.{q(vector_column)} := NULL;
            END IF;
            IF NEW.{q(image_column)} IS NOT NULL THEN
                INSERT INTO imgembed.queue (tbl, image_column, vector_column, model, row_key)
                VALUES (TG_RELID, {lit(image_column)}, {lit(vector_column)}, {lit(model)}, {row_key})
                ON CONFLICT (tbl, vector_column, row_key) DO UPDATE
                   SET enqueued_at = clock_timestamp(), attempts = 0, not_before = '-infinity',
                       last_error = NULL, model = EXCLUDED.model;
            END IF;
            RETURN NEW;
        END $f$""")
    plpy.execute(f"COMMENT ON FUNCTION {name}() IS {lit(f'queues {table}.{vector_column} for pg-imgembed worker')}")
    return name


def drop(db: PlpyDatabase, table: str, vector_column: str) -> None:
    relid = relation_oid(db, table)
    if not _drop_triggers(db, relid, table, vector_column):
        raise UndefinedTrigger(f'table {table} has no embedding trigger for column "{vector_column}"')
    _drop_jobs(db, relid, table, vector_column)


def _drop_triggers(db: PlpyDatabase, relid: int, table: str, vector_column: str) -> bool:
    """Drop the column's triggers and its enqueue function, if any (without NOTICEs about what
    is not there); returns whether there was a trigger."""
    plpy = db.plpy
    found = plpy.execute(
        plpy.prepare("SELECT tgname FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = ANY($2)", ["oid", "text[]"]),
        [relid, list(trigger_names(vector_column))],
    )
    for row in found:
        plpy.execute(f"DROP TRIGGER {plpy.quote_ident(row['tgname'])} ON {table}")
    suffix = f"enqueue_{relid}_{hashlib.sha256(vector_column.encode()).hexdigest()[:8]}"
    functions = plpy.execute(plpy.prepare(
        "SELECT p.oid::pg_catalog.regprocedure::text AS f FROM pg_catalog.pg_proc p "
        "WHERE p.proname = 'imgembed_' || $1 OR (p.proname = $1 AND p.pronamespace = 'imgembed'::pg_catalog.regnamespace)",
        ["text"]), [suffix])  # the second: where 0.1.0 created them
    for row in functions:
        plpy.execute(f"DROP FUNCTION {row['f']}")
    return found.nrows() > 0


def _drop_jobs(db: PlpyDatabase, relid: int, table: str, vector_column: str) -> None:
    """With no async trigger left, no worker will take the column's jobs: drop them now, and say
    that their rows keep a NULL vector."""
    plpy = db.plpy
    dropped = plpy.execute(plpy.prepare(
        "DELETE FROM imgembed.queue WHERE tbl = $1 AND vector_column = $2", ["regclass", "name"]),
        [relid, vector_column]).nrows()
    if dropped:
        plpy.notice(f"dropped {dropped} queued job(s) of {table}.{vector_column}: those rows keep a NULL vector",
                    hint="CALL imgembed.backfill(...) embeds the rows whose vector is NULL.")


def _column(db: PlpyDatabase, relid: int, table: str, column: str) -> dict[str, Any]:
    plpy = db.plpy
    rows = plpy.execute(
        plpy.prepare(
            """SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, t.typname::text AS typname,
                      a.atttypmod AS typmod, e.extname::text AS extname
                 FROM pg_catalog.pg_attribute a
                 JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                 LEFT JOIN pg_catalog.pg_depend d
                        ON d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid AND d.deptype = 'e'
                 LEFT JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped""",
            ["oid", "name"],
        ),
        [relid, column],
    )
    if rows.nrows() == 0:
        raise UndefinedColumn(f'column "{column}" of table {table} does not exist')
    return rows[0]
