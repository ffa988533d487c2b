#!/usr/bin/env python3
"""Per-call costs of the SQL path, measured on a real server (prints a table; not a test).

- returning a 2048-d vector from PL/Python: our hex-float text vs '%.9g' decimal text, against
  pgvector's own parse of the same text (the floor: PostgreSQL must parse whatever we return);
- img_embedding() end to end with a tiny 2048-d model, and the same work in-process without SQL;
- the first call in a new connection (interpreter, imports, model load) vs later calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psycopg

from pg_imgembed.image.model_config import parse_config
from pg_imgembed.image.tower import ImageTower
from pg_imgembed.vectors import vector_to_text
from tests.devcluster import LocalCluster, fresh_database

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' model builders
from tests import images, onnx_models

DIMS = 2048
CONFIG = {"preprocess": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


def per_call_ms(conn: psycopg.Connection, query: str, calls: int, params=None, repeat: int = 5) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        conn.execute(query, params)
        timings.append((time.perf_counter() - start) / calls * 1000)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", help="server with pg_imgembed installed (default: a throwaway local cluster)")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(LocalCluster()).dsn
        dsn = fresh_database(dsn, "imgembed_bench")
        run(dsn, args.calls)


def run(dsn: str, calls: int) -> None:
    vec = np.random.default_rng(0).standard_normal(DIMS).astype(np.float32)
    vec /= np.linalg.norm(vec)
    hex_text, dec_text = vector_to_text(vec), "[" + ",".join(f"{x:.9g}" for x in vec.tolist()) + "]"
    rows: list[tuple[str, float]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_imgembed CASCADE")
        conn.execute("CREATE TEMP TABLE t AS SELECT %s::text AS h, %s::text AS d FROM generate_series(1, %s)",
                     (hex_text, dec_text, calls))
        # Subtract reading (detoasting) the same text, so only vector_in remains.
        for col, label in (("h", "hex"), ("d", "'%.9g'")):
            base = per_call_ms(conn, f"SELECT sum(length({col})) FROM t", calls)
            parse = per_call_ms(conn, f"SELECT sum(vector_dims({col}::vector)) FROM t", calls)
            rows.append((f"pgvector parses {label} text (vector_in)", parse - base))
        conn.execute(f"""
            CREATE FUNCTION pg_temp.ret_hex(i int) RETURNS vector LANGUAGE plpython3u AS $$
            if "v" not in SD:
                import numpy as np
                from pg_imgembed.vectors import vector_to_text
                SD["v"] = np.array({json.dumps(vec.tolist())}, dtype=np.float32); SD["f"] = vector_to_text
            return SD["f"](SD["v"]) $$;
            CREATE FUNCTION pg_temp.ret_dec(i int) RETURNS vector LANGUAGE plpython3u AS $$
            if "v" not in SD:
                SD["v"] = {json.dumps(vec.tolist())}
            return "[" + ",".join(["%.9g" % x for x in SD["v"]]) + "]" $$;
            CREATE FUNCTION pg_temp.ret_null(i int) RETURNS vector LANGUAGE plpython3u AS $$ return None $$;""")
        conn.execute("SELECT imgembed.runtime()")  # puts the runtime on sys.path in this backend
        null = per_call_ms(conn, "SELECT count(pg_temp.ret_null(g)) FROM generate_series(1, %s) g", calls, (calls,))
        rows.append(("PL/Python call returning NULL", null))
        rows.append(("PL/Python returns vector, hex text (ours), format + parse",
                     per_call_ms(conn, "SELECT sum(vector_dims(pg_temp.ret_hex(g))) FROM generate_series(1, %s) g", calls, (calls,)) - null))
        rows.append(("PL/Python returns vector, '%.9g' text, format + parse",
                     per_call_ms(conn, "SELECT sum(vector_dims(pg_temp.ret_dec(g))) FROM generate_series(1, %s) g", calls, (calls,)) - null))

        onnx = onnx_models.conv_net(extra_dims=DIMS)
        conn.execute("SELECT imgembed.load_model('tiny2048', %s, %s::jsonb, replace => true)", (onnx, json.dumps(CONFIG)))
        photo = images.png(images.photo_like(64, 48))
        n = calls // 4
        conn.execute("CREATE TEMP TABLE p AS SELECT %s::bytea AS photo FROM generate_series(1, %s)", (photo, n))
        sql_ms = per_call_ms(conn, "SELECT sum(vector_dims(img_embedding(photo, 'tiny2048'))) FROM p", n)
        model = ImageTower(onnx, parse_config(CONFIG), threads=1)
        start = time.perf_counter()
        for _ in range(n):
            model.embed(photo, max_pixels=10**8)
        local_ms = (time.perf_counter() - start) / n * 1000
        rows.append(("img_embedding() per call, tiny 2048-d model", sql_ms))
        rows.append(("  same decode+preprocess+inference in-process, no SQL", local_ms))
        rows.append(("  => SQL path overhead per call", sql_ms - local_ms))

    first, second = [], []
    for _ in range(5):
        with psycopg.connect(dsn, autocommit=True) as fresh:
            for bucket in (first, second):
                start = time.perf_counter()
                fresh.execute("SELECT vector_dims(img_embedding(%s, 'tiny2048'))", (photo,))
                bucket.append((time.perf_counter() - start) * 1000)
    rows.append(("first call in a new connection (imports + model load)", statistics.median(first)))
    rows.append(("second call in that connection", statistics.median(second)))

    width = max(len(name) for name, _ in rows)
    print(f"{'what (2048-d vectors)':{width}}  µs/call")
    for name, ms in rows:
        print(f"{name:{width}}  {ms * 1000:9.1f}")
    parse = rows[0][1]
    print(f"\nhex text: format+parse {rows[3][1]:.3f} ms = {rows[3][1] / parse:.1f}x pgvector's parse alone; "
          f"decimal: {rows[4][1]:.3f} ms = {rows[4][1] / parse:.1f}x")


if __name__ == "__main__":
    main()
