#!/usr/bin/env python3
"""Cold start with a 100 MB model: first call in a new connection, and backend memory after it.

Compares loading the model from the table (bytea through SPI into Python, then onnxruntime) with
the per-server file cache (onnxruntime reads the file). The RSS growth is measured above the same
backend after a tiny model has already been used (interpreter, imports and arenas in place).
Run as root (it reads /proc/<backend pid>/status); prints a table, not a test.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psycopg
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' model builders
from pg_imgembed.client.devcluster import LocalCluster
from tests import images, onnx_models

WIDTH = 5000  # a 5000 x 5000 float32 projection: 100 MB of weights


def big_model() -> bytes:
    """The tiny conv net followed by 4 -> WIDTH -> WIDTH projections (~100 MB)."""
    import onnx

    base = onnx.load_from_string(onnx_models.conv_net())
    rng = np.random.default_rng(0)
    base.graph.output.pop()
    base.graph.node[-1].output[0] = "flat"
    base.graph.initializer.extend([
        numpy_helper.from_array(rng.standard_normal((4, WIDTH)).astype(np.float32), "p1"),
        numpy_helper.from_array((rng.standard_normal((WIDTH, WIDTH)) / WIDTH).astype(np.float32), "p2")])
    base.graph.node.extend([helper.make_node("MatMul", ["flat", "p1"], ["h"]),
                            helper.make_node("MatMul", ["h", "p2"], ["embedding"])])
    base.graph.output.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", WIDTH]))
    return base.SerializeToString()


def rss_mb(conn: psycopg.Connection) -> float:
    (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(dsn: str, photo: bytes, options: str, runs: int = 3) -> tuple[float, float]:
    firsts, growths = [], []
    for _ in range(runs):
        with psycopg.connect(dsn, autocommit=True, options=options) as conn:
            conn.execute("SELECT img_embedding(%s, 'tiny')", (photo,))
            before = rss_mb(conn)
            start = time.perf_counter()
            conn.execute("SELECT vector_dims(img_embedding(%s, 'big'))", (photo,))
            firsts.append(time.perf_counter() - start)
            growths.append(rss_mb(conn) - before)
    return statistics.median(firsts), statistics.median(growths)


def main() -> None:
    with ExitStack() as stack:
        cluster = stack.enter_context(LocalCluster())
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_imgembed CASCADE")
            config = json.dumps({"preprocess": {"mean": [0.5] * 3, "std": [0.5] * 3}})
            conn.execute("SELECT imgembed.load_model('tiny', %s, %s::jsonb)", (onnx_models.conv_net(), config))
            conn.execute("SELECT imgembed.load_model('big', %s, %s::jsonb)", (big_model(), config))
            (size,) = conn.execute("SELECT bytes FROM imgembed.models WHERE name = 'big'").fetchone()
        photo = images.png(images.photo_like(64, 48))
        size_mb = size / 2**20
        table_first, table_rss = measure(cluster.dsn, photo, "-c imgembed.model_cache=off")
        measure(cluster.dsn, photo, "", runs=1)  # writes the cache file
        file_first, file_rss = measure(cluster.dsn, photo, "")
    print(f"model: {size_mb:.1f} MiB pipeline ONNX\n")
    print(f"{'first call in a new connection':40} {'seconds':>8} {'RSS growth MiB':>15} {'x model size':>13}")
    for label, first, rss in (("from the table (cache off)", table_first, table_rss),
                              ("from the per-server file cache", file_first, file_rss)):
        print(f"{label:40} {first:8.3f} {rss:15.1f} {rss / size_mb:13.2f}")


if __name__ == "__main__":
    main()
