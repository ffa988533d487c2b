"""Embedding triggers: checks at creation and the DDL they run.

Two BEFORE row triggers per vector column call ``imgembed.embedding_trigger()`` (sync; PL/pgSQL,
sql/idempotent/triggers.sql) or ``imgembed.enqueue_embedding()`` (async; sql/idempotent/queue.sql):
one on INSERT, one on ``UPDATE OF image_column`` with ``WHEN (OLD.img IS DISTINCT FROM NEW.img)``,
so an UPDATE that leaves the image alone never reaches Python. The model is bound by name when the
trigger is created (the default model at that moment if none is named), so changing the default
later cannot change a column's vectors.

What binds a column is the row this module writes into ``imgembed.bindings`` (only the table's
owner may, for a model the owner may use): both trigger functions read their model and columns
from there, so a trigger attached by hand embeds nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import DimensionMismatch, InvalidColumn, InvalidConfig, NullArgument, PermissionDenied, UndefinedColumn, UndefinedTrigger
from ..store.embedded_tables import check_owner_may_use, primary_key
from ..store.model_store import ModelStore, StoredModel
from .postgres import PlpyDatabase

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
    check_owner_may_use(db, table, stored.name)
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
    if not db.rows("SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') AS ok FROM pg_catalog.pg_class c WHERE c.oid = $1",
                   ["oid"], [relid])[0]["ok"]:
        raise PermissionDenied(f"only the owner of table {table} may bind its columns to a model")
    if mode == "async" and not primary_key(db, str(relid)):
        raise InvalidConfig(f"async embedding of {table} needs a primary key to find rows again",
                            hint="Add a primary key, or use mode => 'sync'.")
    names = trigger_names(vector_column)
    insert_name, update_name = (plpy.quote_ident(n) for n in names)
    img = plpy.quote_ident(image_column)
    _drop_triggers(db, relid, table, vector_column)
    db.rows("INSERT INTO imgembed.bindings (tbl, vector_column, image_column, model, on_error, mode, triggers) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tbl, vector_column) DO UPDATE SET "
            "image_column = EXCLUDED.image_column, model = EXCLUDED.model, on_error = EXCLUDED.on_error, "
            "mode = EXCLUDED.mode, triggers = EXCLUDED.triggers, created_by = EXCLUDED.created_by, created_at = pg_catalog.now()",
            ["oid", "name", "name", "text", "text", "text", "name[]"],
            [relid, vector_column, image_column, stored.name, on_error, mode, list(names)])
    # The arguments only name the column for people reading \d; the binding is what counts.
    args = ", ".join(plpy.quote_literal(a) for a in (image_column, vector_column, stored.name, on_error))
    call = f"imgembed.{'enqueue_embedding' if mode == 'async' else 'embedding_trigger'}({args})"
    if mode == "sync":
        _drop_jobs(db, relid, table, vector_column)
    vector = _column(db, relid, table, vector_column)
    if vector["typmod"] <= 0:
        plpy.warning(f'column "{vector_column}" of {table} has no dimension: no HNSW or IVFFlat index can be built on it',
                     hint=f"ALTER TABLE {table} ALTER COLUMN {plpy.quote_ident(vector_column)} TYPE "
                          f"{vector['typname']}({stored.dimensions});")
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


def drop(db: PlpyDatabase, table: str, vector_column: str) -> None:
    relid = relation_oid(db, table)
    if not _drop_triggers(db, relid, table, vector_column):
        raise UndefinedTrigger(f'table {table} has no embedding trigger for column "{vector_column}"')
    db.rows("DELETE FROM imgembed.bindings WHERE tbl = $1 AND vector_column = $2", ["oid", "name"], [relid, vector_column])
    _drop_jobs(db, relid, table, vector_column)


def _drop_triggers(db: PlpyDatabase, relid: int, table: str, vector_column: str) -> bool:
    """Drop the column's triggers, if any (without NOTICEs about what is not there); returns
    whether there was a trigger."""
    plpy = db.plpy
    found = plpy.execute(
        plpy.prepare("SELECT tgname FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = ANY($2)", ["oid", "text[]"]),
        [relid, list(trigger_names(vector_column))],
    )
    for row in found:
        plpy.execute(f"DROP TRIGGER {plpy.quote_ident(row['tgname'])} ON {table}")
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
