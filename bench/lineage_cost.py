#!/usr/bin/env python3
"""What lineage's model lock costs writers: INSERTs through the sync trigger (one transaction per
row, the worst case: every row takes the lock anew) and a backfill, with imgembed.lock_model as
shipped against the same run with it swapped for a version that locks nothing. Runs alternate;
medians and spread over REPEATS. Prints a table, not a test."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' model builders
from tests import images, onnx_models
from tests.devcluster import LocalCluster

ROWS = 200
REPEATS = 5
NO_LOCK = """CREATE OR REPLACE FUNCTION imgembed.lock_model(model text) RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN (SELECT m.generation FROM imgembed.model_store m WHERE m.name = model); END $$"""


def shipped_definition(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT pg_get_functiondef('imgembed.lock_model(text)'::regprocedure)").fetchone()[0]


def insert_rows(conn: psycopg.Connection, photos: list[bytes]) -> float:
    conn.execute("TRUNCATE items")
    start = time.perf_counter()
    for i in range(ROWS):
        conn.execute("INSERT INTO items (id, photo) VALUES (%s, %s)", (i, photos[i % len(photos)]))
    return (time.perf_counter() - start) * 1000 / ROWS


def backfill(conn: psycopg.Connection) -> float:
    conn.execute("UPDATE items SET embedding = NULL")
    start = time.perf_counter()
    conn.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 32)")
    return (time.perf_counter() - start) * 1000 / ROWS


def main() -> None:
    photos = [images.jpeg(images.photo_like(640, 480, seed=i)) for i in range(8)]
    with LocalCluster() as cluster, psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_imgembed CASCADE")
        config = {"preprocess": {"resize": {"shortest_edge": 224}, "center_crop": {"height": 224, "width": 224}}}
        conn.execute("SELECT imgembed.load_model('m', %s, %s::jsonb)", (onnx_models.conv_net(224, 224), json.dumps(config)))
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'm')")
        shipped = shipped_definition(conn)
        results: dict[str, list[float]] = {k: [] for k in ("insert lock", "insert none", "backfill lock", "backfill none")}
        insert_rows(conn, photos)  # warm-up: session, imports, cache file
        for _ in range(REPEATS):
            for variant, definition in (("lock", shipped), ("none", NO_LOCK)):
                conn.execute(definition)
                results[f"insert {variant}"].append(insert_rows(conn, photos))
                results[f"backfill {variant}"].append(backfill(conn))
            conn.execute(shipped)
        calls = conn.execute("""DO $$ BEGIN FOR i IN 1..2000 LOOP PERFORM imgembed.lock_model('m'); END LOOP; END $$""")
        start = time.perf_counter()
        conn.execute("DO $$ BEGIN FOR i IN 1..2000 LOOP PERFORM imgembed.lock_model('m'); END LOOP; END $$")
        per_call_us = (time.perf_counter() - start) * 1e6 / 2000
        del calls
    print(f"{ROWS} rows of 640x480 JPEG, 224x224 conv model; {REPEATS} alternating runs\n")
    print(f"{'ms/row':44} {'median':>8} {'min':>8} {'max':>8}")
    for key, label in (("insert none", "INSERT, sync trigger, lock swapped out"), ("insert lock", "INSERT, sync trigger, as shipped"),
                       ("backfill none", "backfill, lock swapped out"), ("backfill lock", "backfill, as shipped")):
        values = results[key]
        print(f"{label:44} {statistics.median(values):8.3f} {min(values):8.3f} {max(values):8.3f}")
    for kind in ("insert", "backfill"):
        print(f"{kind}: as shipped / lock swapped out = "
              f"{statistics.median(results[f'{kind} lock']) / statistics.median(results[f'{kind} none']):.3f}x")
    print(f"imgembed.lock_model() in a loop, one transaction: {per_call_us:.1f} µs/call")


if __name__ == "__main__":
    main()
