#!/usr/bin/env python3
"""What 0.4.0's trust checks cost, measured against the same run with each check swapped out:

- sync trigger INSERTs (one transaction per row): the binding lookup and the owner's model usage
  checked for every row, against owner_may_use_model() swapped for `true`;
- async INSERTs: the extension's SECURITY DEFINER enqueue trigger (binding lookup, key from the
  primary key through dynamic SQL), against a per-table generated function as 0.3.0 made them,
  and against no trigger at all;
- the worker: a batch read and written as the table's owner with the owner's usage checked, per
  image, against owner_may_use_model() swapped for `true`.

Runs alternate; medians and spread over REPEATS. Prints a table, not a test."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' model builders
from pg_imgembed.client.worker import Options, Worker
from tests import images, onnx_models
from tests.devcluster import LocalCluster

ROWS = 200
REPEATS = 5
NO_CHECK = """CREATE OR REPLACE FUNCTION imgembed.owner_may_use_model(tbl regclass, model text) RETURNS boolean
LANGUAGE sql STABLE STRICT SECURITY DEFINER PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$ SELECT true $$"""
# How 0.3.0 queued a row: a PL/pgSQL function generated for the table, keys spelled out, run as the writer.
GENERATED = """CREATE OR REPLACE FUNCTION public.enqueue_as_030() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    IF NEW.embedding IS NOT NULL THEN NEW.embedding := NULL; END IF;
    IF NEW.photo IS NOT NULL THEN
        INSERT INTO imgembed.queue (tbl, image_column, vector_column, model, row_key)
        VALUES (TG_RELID, 'photo', 'embedding', 'm', pg_catalog.jsonb_build_object('id', NEW.id))
        ON CONFLICT (tbl, vector_column, row_key) DO UPDATE
           SET enqueued_at = clock_timestamp(), attempts = 0, not_before = '-infinity', last_error = NULL, model = EXCLUDED.model;
    END IF;
    RETURN NEW;
END $f$"""


def timed_inserts(conn: psycopg.Connection, table: str, photos: list[bytes]) -> float:
    conn.execute(f"TRUNCATE {table}")
    conn.execute("DELETE FROM imgembed.queue")
    start = time.perf_counter()
    for i in range(ROWS):
        conn.execute(f"INSERT INTO {table} (id, photo) VALUES (%s, %s)", (i, photos[i % len(photos)]))
    return (time.perf_counter() - start) * 1000 / ROWS


def timed_worker(conn: psycopg.Connection, dsn: str, photos: list[bytes]) -> float:
    conn.execute("TRUNCATE queued")
    conn.execute("DELETE FROM imgembed.queue")
    conn.cursor().executemany("INSERT INTO queued (id, photo) VALUES (%s, %s)", [(i, photos[i % len(photos)]) for i in range(ROWS)])
    worker = Worker(dsn, Options(once=True, batch_size=16, decode_threads=1))
    start = time.perf_counter()
    worker.run()
    assert worker.done == ROWS, worker.done
    return (time.perf_counter() - start) * 1000 / ROWS


def main() -> None:
    photos = [images.jpeg(images.photo_like(640, 480, seed=i)) for i in range(8)]
    with LocalCluster() as cluster, psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_imgembed CASCADE")
        config = {"preprocess": {"resize": {"shortest_edge": 224}, "center_crop": {"height": 224, "width": 224}}}
        conn.execute("SELECT imgembed.load_model('m', %s, %s::jsonb)", (onnx_models.conv_net(224, 224), json.dumps(config)))
        for table in ("synced", "queued", "as_030", "plain"):
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, photo bytea, embedding vector(4))")
            conn.execute(f"ALTER TABLE {table} ALTER COLUMN photo SET STORAGE EXTERNAL")
        conn.execute("SELECT imgembed.create_embedding_trigger('synced', 'photo', 'embedding', 'm')")
        conn.execute("SELECT imgembed.create_embedding_trigger('queued', 'photo', 'embedding', 'm', mode => 'async')")
        conn.execute(GENERATED)
        conn.execute("CREATE TRIGGER q BEFORE INSERT ON as_030 FOR EACH ROW EXECUTE FUNCTION public.enqueue_as_030()")
        shipped = conn.execute("SELECT pg_get_functiondef('imgembed.owner_may_use_model(regclass,text)'::regprocedure)").fetchone()[0]
        results: dict[str, list[float]] = {}
        timed_inserts(conn, "synced", photos)  # warm-up: session, imports, cache file
        timed_worker(conn, cluster.dsn, photos)
        for _ in range(REPEATS):
            for variant, definition in (("checked", shipped), ("unchecked", NO_CHECK)):
                conn.execute(definition)
                results.setdefault(f"sync {variant}", []).append(timed_inserts(conn, "synced", photos))
                results.setdefault(f"worker {variant}", []).append(timed_worker(conn, cluster.dsn, photos))
            conn.execute(shipped)
            for table, label in (("queued", "async enqueue, 0.4.0"), ("as_030", "async enqueue, 0.3.0's"), ("plain", "no trigger")):
                results.setdefault(label, []).append(timed_inserts(conn, table, photos))
    print(f"{ROWS} rows of 640x480 JPEG, 224x224 conv model; {REPEATS} alternating runs\n")
    print(f"{'ms/row':52} {'median':>8} {'min':>8} {'max':>8}")
    for key, label in (("sync unchecked", "INSERT, sync trigger, owner check swapped out"), ("sync checked", "INSERT, sync trigger, as shipped"),
                       ("worker unchecked", "worker, owner check swapped out"), ("worker checked", "worker, as shipped"),
                       ("no trigger", "INSERT, no trigger"), ("async enqueue, 0.3.0's", "INSERT, 0.3.0's generated enqueue function"),
                       ("async enqueue, 0.4.0", "INSERT, 0.4.0's enqueue trigger")):
        values = results[key]
        print(f"{label:52} {statistics.median(values):8.3f} {min(values):8.3f} {max(values):8.3f}")
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"sync INSERT: as shipped / check swapped out = {med['sync checked'] / med['sync unchecked']:.3f}x")
    print(f"worker: as shipped / check swapped out = {med['worker checked'] / med['worker unchecked']:.3f}x")
    new, old, plain = med["async enqueue, 0.4.0"], med["async enqueue, 0.3.0's"], med["no trigger"]
    print(f"async INSERT: 0.4.0 / 0.3.0's = {new / old:.3f}x; 0.4.0 / no trigger = {new / plain:.3f}x")


if __name__ == "__main__":
    main()
