#!/usr/bin/env python3
"""What the clean-error wrappers cost per call: img_embedding() (a PL/pgSQL wrapper with an
exception block around the PL/Python body) against calling the body directly, with the same
image every time so the per-backend memo answers and only the call itself is measured; and, as the
reference the cost must stay small against, one ResNet-50 inference at 224x224 in the same run.
Medians of alternating runs; prints a table, not a test."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import resnet50
from tests import images
from tests.devcluster import LocalCluster

CALLS = 2000
REPEATS = 5
CONFIG = {"preprocess": {"resize": {"height": 224, "width": 224}, "mean": [0.485, 0.456, 0.406],
                         "std": [0.229, 0.224, 0.225]}}


def per_call_us(conn: psycopg.Connection, expression: str, photo: bytes) -> float:
    start = time.perf_counter()
    conn.execute(f"SELECT sum(vector_dims({expression})) FROM generate_series(1, {CALLS}), (SELECT %s::bytea AS b) s",
                 (photo,))
    return (time.perf_counter() - start) * 1e6 / CALLS


def main() -> None:
    photo = images.jpeg(images.photo_like(224, 224, seed=1))
    photos = [images.jpeg(images.photo_like(224, 224, seed=i)) for i in range(2, 12)]
    with LocalCluster() as cluster, psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_imgembed CASCADE")
        conn.execute("SELECT imgembed.load_model('resnet50', %s, %s::jsonb)",
                     (resnet50.cached().read_bytes(), json.dumps(CONFIG)))
        conn.execute("SELECT imgembed.set_default_model('resnet50')")
        conn.execute("SELECT img_embedding(%s)", (photo,))  # warm: session, imports, memo
        wrapped, direct, inference = [], [], []
        for _ in range(REPEATS):
            wrapped.append(per_call_us(conn, "img_embedding(b)", photo))
            direct.append(per_call_us(conn, "imgembed._embed(b, NULL)::vector", photo))
            start = time.perf_counter()
            for p in photos:  # a new image each call: decode + inference
                conn.execute("SELECT vector_dims(img_embedding(%s))", (p,))
            inference.append((time.perf_counter() - start) * 1e6 / len(photos))
    w, d, i = statistics.median(wrapped), statistics.median(direct), statistics.median(inference)
    print(f"{CALLS} calls per run, {REPEATS} alternating runs; µs per call, median (min-max)\n")
    for label, values in (("img_embedding() (wrapper), memo hit", wrapped), ("the PL/Python body alone, memo hit", direct),
                          ("img_embedding(), new 224x224 JPEG each call (ResNet-50)", inference)):
        print(f"{label:58} {statistics.median(values):10.1f} ({min(values):.1f}-{max(values):.1f})")
    print(f"\nwrapper cost: {w - d:.1f} µs per call = {100 * (w - d) / i:.3f}% of a 224x224 ResNet-50 embedding")


if __name__ == "__main__":
    main()
