"""Backfill: embed the rows whose vector is stale or NULL, in committed batches.

Two passes share one way of embedding a claimed batch and writing it back by ctid (stable while
the batch holds the rows' locks), and both commit after every batch, so an interrupted run loses
at most one batch and running it again continues:

- **stale:** if the column's vectors came from a model since replaced (see ``lineage``), every
  row is re-embedded in primary-key order; the last key done is saved with each commit.
- **NULL:** rows whose vector is NULL are claimed with ``FOR UPDATE SKIP LOCKED``, so concurrent
  backfills share the work and writers are never blocked for long.

Bad images follow the triggers' ``on_error`` policy; under ``'null'`` they are recorded in
``imgembed.errors``, stay NULL and are skipped for the rest of the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ImageError, InvalidConfig, ModelReplaced
from ..image.tower import ImageTower
from ..serving.serving import OnBadImage, Serving
from ..settings import Settings
from ..store import lineage
from ..store.embedded_tables import check_owner_may_use, column_type, primary_key, record_error
from ..store.model_store import ModelStore, StoredModel
from ..vectors import vector_to_text
from .postgres import PlpyDatabase
from .triggers import check_target

NOTICE_EVERY_S = 1.0


def backfill(db: PlpyDatabase, serving: Serving, settings: Settings, table: str, image_column: str, vector_column: str,
             model: str | None, batch_size: int | None, on_error: str | None, why: str) -> int:
    """Returns the number of rows embedded by the NULL pass. ``model`` is the one the column is
    bound to (its trigger's, else the one lineage records); None: the default model. ``why`` says
    where the model came from, in the first NOTICE."""
    store = ModelStore(db)
    stored = check_target(db, store, table, image_column, vector_column, model, on_error)
    db.plpy.notice(f'backfill {table}.{vector_column}: model "{stored.name}" ({why})')
    if batch_size is None or batch_size < 1:
        raise InvalidConfig(f"batch_size must be a positive integer, not {batch_size!r}")
    embedder = serving.model(store, stored, settings)
    run = Run(db, store, serving, settings, embedder, stored, table, image_column, vector_column, batch_size, on_error)
    lineage.record(db, table, vector_column, stored, done=False)
    db.plpy.commit()
    run.reembed_stale()  # also fills NULL vectors of rows it passes
    return run.fill_nulls()


class Run:
    """One backfill call: the target, its model, and the batch steps both passes use."""

    def __init__(self, db: PlpyDatabase, store: ModelStore, serving: Serving, settings: Settings, embedder: ImageTower,
                 stored: StoredModel, table: str, image_column: str, vector_column: str, batch_size: int,
                 on_error: str | None) -> None:
        plpy = self.plpy = db.plpy
        self.db, self.store, self.serving, self.settings = db, store, serving, settings
        self.embedder, self.stored = embedder, stored
        self.table, self.image_column, self.vector_column = table, image_column, vector_column
        self.batch_size, self.on_error = batch_size, on_error
        self.keys = primary_key(db, table)
        vector_type = column_type(db, table, vector_column)
        self._write = plpy.prepare(
            f"UPDATE {table} AS t SET {plpy.quote_ident(vector_column)} = u.v::{vector_type} "
            "FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.tid[]), pg_catalog.unnest($2::pg_catalog.text[])) AS u(id, v) "
            "WHERE t.ctid OPERATOR(pg_catalog.=) u.id", ["text[]", "text[]"])

    def key_json(self, alias: str = "") -> str:
        """SQL for a row's primary key as jsonb text (what imgembed.errors and resume_after hold)."""
        if not self.keys:
            return "NULL::text"
        q, lit = self.plpy.quote_ident, self.plpy.quote_literal
        return "pg_catalog.jsonb_build_object(" + ", ".join(f"{lit(k)}, {alias}{q(k)}" for k in self.keys) + ")::text"

    def hold_model(self) -> None:
        """Hold the model FOR SHARE until the batch commits (taken before the batch's rows, so a
        replacement waiting on it cannot deadlock with writers of those rows); one replaced since
        the run started ends it, and so does a grant revoked from the table's owner."""
        check_owner_may_use(self.db, self.table, self.stored.name)
        current = self.store.lookup_for_writing(self.stored.name)
        if current.generation != self.stored.generation:
            raise ModelReplaced(
                f'model "{self.stored.name}" was replaced while backfill ran',
                detail="The batches before this one are committed; the column stays marked stale.",
                hint="Run the backfill again: it re-embeds the column with the new model.")

    def embed(self, rows: Any) -> list[np.ndarray | None]:
        """Vectors of claimed rows (ctid, image, key); under on_error 'null' a bad image is
        recorded and gets None, otherwise its error ends the run."""

        def record(position: int, exc: ImageError) -> None:
            record_error(self.db, self.table, rows[position]["key"], self.stored.name, exc.sqlstate, exc.message)

        with self.serving.metered(self.stored.name, "image", "backfill") as meter:
            return self.serving.embed_images(self.embedder, [r["image"] for r in rows], self.settings,
                                             OnBadImage(record) if self.on_error == "null" else None, meter=meter)

    def write(self, pairs: Sequence[tuple[str, np.ndarray | None]]) -> None:
        self.plpy.execute(self._write, [[ctid for ctid, _ in pairs],
                                        [vector_to_text(v) if v is not None else None for _, v in pairs]])

    def notice(self, what: str, done: int, total: int, elapsed: float, extra: str = "") -> None:
        """Progress for people (the message) and for programs (DETAIL, a JSON object: the CLI's
        progress bar reads it, so the message's wording is free to change)."""
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        progress = {"backfill": what, "done": done, "total": total, "images_per_s": round(rate, 1), "eta_s": round(eta)}
        self.plpy.notice(f"backfill {what}: {done}/{total} rows ({100 * done / max(total, 1):.1f}%), "
                         f"{rate:.1f} images/s, ETA {int(eta // 60)}m{int(eta % 60):02d}s{extra}",
                         detail=json.dumps(progress))

    # ------------------------------------------------------------ the NULL pass

    def fill_nulls(self) -> int:
        plpy, q = self.plpy, self.plpy.quote_ident
        pending = f"{q(self.vector_column)} IS NULL AND {q(self.image_column)} IS NOT NULL"
        total = plpy.execute(f"SELECT pg_catalog.count(*) AS n FROM {self.table} WHERE {pending}")[0]["n"]
        claim = plpy.prepare(
            f"SELECT ctid::text AS ctid, {q(self.image_column)} AS image, {self.key_json()} AS key FROM {self.table} "
            f"WHERE {pending} AND NOT (ctid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.tid[])) "
            "LIMIT $2 FOR UPDATE SKIP LOCKED", ["text[]", "int4"])
        failed: list[str] = []  # ctids left NULL under on_error => 'null'
        done, started, last_notice = 0, time.monotonic(), 0.0
        while True:
            self.hold_model()
            rows = plpy.execute(claim, [failed, self.batch_size])
            if rows.nrows() == 0:
                break
            vectors = self.embed(rows)
            failed += [r["ctid"] for r, v in zip(rows, vectors) if v is None]
            written = [(r["ctid"], v) for r, v in zip(rows, vectors) if v is not None]
            self.write(written)
            plpy.commit()
            done += len(written)
            now = time.monotonic()
            if now - last_notice >= NOTICE_EVERY_S:
                self.notice(self.table, done + len(failed), max(total, done + len(failed)), now - started)
                last_notice = now
        self.notice(self.table, done + len(failed), max(total, done + len(failed)), time.monotonic() - started,
                    f"; {len(failed)} images could not be embedded, see imgembed.errors" if failed else "")
        return done

    # ------------------------------------------------------------ the stale pass

    def reembed_stale(self) -> int:
        """Re-embed a stale column in primary-key order; returns the rows rewritten. Rows written
        meanwhile by triggers already use the new model; redoing them gives the same vector."""
        plpy, key_types = self.plpy, lineage.KEY_TYPES
        lock = plpy.prepare("SELECT generation, target_generation, resume_after::text AS resume_after FROM imgembed.lineage "
                            "WHERE tbl OPERATOR(pg_catalog.=) $1 AND vector_column OPERATOR(pg_catalog.=) $2 FOR UPDATE",
                            key_types)
        state = plpy.execute(lock, [self.table, self.vector_column])
        if state.nrows() == 0 or state[0]["generation"] == self.stored.generation:
            return 0
        if not self.keys:
            raise InvalidConfig(f"re-embedding the stale vectors of {self.table} needs a primary key to resume by")
        q = plpy.quote_ident
        cols = ", ".join(f"t.{q(k)}" for k in self.keys)
        after = ", ".join(f"r.{q(k)}" for k in self.keys)
        # Row comparison continues after the saved key; jsonb_populate_record gives it the key's own types.
        claim = plpy.prepare(
            f"SELECT t.ctid::text AS ctid, t.{q(self.image_column)} AS image, {self.key_json('t.')} AS key "
            f"FROM {self.table} t CROSS JOIN pg_catalog.jsonb_populate_record(NULL::{self.table}, $1::pg_catalog.jsonb) r "
            f"WHERE $1::pg_catalog.jsonb IS NULL OR ROW({cols}) > ROW({after}) "
            f"ORDER BY {cols} LIMIT $2 FOR UPDATE OF t", ["text", "int4"])
        save = plpy.prepare("UPDATE imgembed.lineage SET target_generation = $3, resume_after = $4::pg_catalog.jsonb, "
                            "updated_at = pg_catalog.now() WHERE tbl OPERATOR(pg_catalog.=) $1 "
                            "AND vector_column OPERATOR(pg_catalog.=) $2", key_types + ["int8", "text"])
        rows_in_table = plpy.execute(f"SELECT pg_catalog.count(*) AS n FROM {self.table}")[0]["n"]
        done, started = 0, time.monotonic()
        while True:
            current = plpy.execute(lock, [self.table, self.vector_column])[0]
            # A re-embedding towards another generation (abandoned, or rolled back) restarts.
            resume = current["resume_after"] if current["target_generation"] == self.stored.generation else None
            self.hold_model()
            rows = plpy.execute(claim, [resume, self.batch_size])
            if rows.nrows() == 0:
                break
            # Images that are NULL or failed get NULL: their old vector came from the old model.
            self.write([(r["ctid"], v) for r, v in zip(rows, self.embed(rows))])
            plpy.execute(save, [self.table, self.vector_column, self.stored.generation, rows[rows.nrows() - 1]["key"]])
            plpy.commit()
            done += rows.nrows()
            self.notice(f"{self.table} (stale vectors)", done, rows_in_table, time.monotonic() - started)
        lineage.record(self.db, self.table, self.vector_column, self.stored, done=True)
        plpy.commit()
        return done
