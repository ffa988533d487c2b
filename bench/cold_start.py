#!/usr/bin/env python3
"""Cold start with real architectures: ResNet-50 (94 MB) and ViT-B/16 (343 MB), random weights.

For each model, in a new connection to a throwaway local cluster:
- imports: the first pg_imgembed call (interpreter, runtime imports), then a first embedding with a
  tiny model (onnxruntime's own import and first session, decoder, arenas);
- the first img_embedding with the model (a 640x480 JPEG) after them, and the backend's RSS, PSS
  and anonymous memory growth over it, as a multiple of the model's size;
with the optimized-graph cache off (each session optimizes the model: 0.2.0's behaviour), and on
(a graph saved by an earlier session is loaded with its weights memory-mapped). Next to them, in
the same run: onnxruntime alone in a fresh process (import, session from the ONNX file, first run).
Run as root (it reads /proc/<backend pid>); medians of 5 runs with min-max. A report, not a test.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from architectures import vit_b16
from resnet50 import build as resnet50

from tests import images, onnx_models
from tests.devcluster import LocalCluster

RUNS = 5
THREADS = 2
# ViT-B/16 here already returns the CLS token: the vit template's preprocessing, no pooling.
MODELS = {"ResNet-50": (resnet50, {"template": "convnext"}),
          "ViT-B/16": (vit_b16, {"template": "vit", "output": {"pooling": "none"}})}

ALONE = """
import json, sys, time
t = time.perf_counter(); import numpy as np, onnxruntime as ort; imports = time.perf_counter() - t
def memory():
    fields = dict(line.split(":", 1) for line in open("/proc/self/smaps_rollup").read().splitlines()[1:])
    return {k: int(fields[k].split()[0]) / 1024 for k in ("Rss", "Pss", "Anonymous")}
o = ort.SessionOptions(); o.intra_op_num_threads = THREADS; o.inter_op_num_threads = 1
o.add_session_config_entry("session.intra_op.allow_spinning", "0")
x = np.random.rand(1, 3, 224, 224).astype(np.float32)
tiny = ort.InferenceSession(sys.argv[2], o, providers=["CPUExecutionProvider"])
tiny.run(None, {tiny.get_inputs()[0].name: x[:, :, :16, :16]})
before = memory()
t = time.perf_counter()
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
s.run(None, {s.get_inputs()[0].name: x})
first = time.perf_counter() - t
after = memory()
print(json.dumps({"imports": imports, "first": first, **{k: after[k] - before[k] for k in after}}))
""".replace("THREADS", str(THREADS))


def memory(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    return {k: int(fields[k].split()[0]) / 1024 for k in ("Rss", "Pss", "Anonymous")}


def backend_run(dsn: str, photo: bytes, model: str, graphs: bool, saving: bool = False) -> dict[str, float]:
    options = f"-c imgembed.optimized_graphs={'on' if graphs else 'off'}"
    with psycopg.connect(dsn, autocommit=True, options=options) as conn:
        start = time.perf_counter()
        conn.execute("SELECT imgembed._embed(NULL, NULL)")  # the bootstrap alone: interpreter and runtime imports
        conn.execute("SELECT vector_dims(img_embedding(%s, 'tiny'))", (photo,))
        imports = time.perf_counter() - start
        (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
        before = memory(pid)
        start = time.perf_counter()
        conn.execute("SELECT vector_dims(img_embedding(%s, %s))", (photo, model))
        first = time.perf_counter() - start
        after = memory(pid)
        (report,) = conn.execute("SELECT imgembed.runtime()->'optimized_graphs'").fetchone()
    # The tiny model's session and the model's: both from the cache, or neither.
    expected = {"loaded": 0, "saved": 0} if not graphs else {"loaded": 2, "saved": 0} if not saving else None
    assert expected is None or report == expected, report
    return {"imports": imports, "first": first, **{k: after[k] - before[k] for k in after}}


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def show(label: str, rows: list[dict[str, float]], size_mb: float, floor: float) -> None:
    first = [r["first"] for r in rows]
    print(f"  {label:34} {median(rows, 'imports') * 1000:7.0f} {statistics.median(first) * 1000:7.0f} "
          f"[{min(first) * 1000:.0f}-{max(first) * 1000:.0f}] {statistics.median(first) / floor:6.2f}x "
          f"{median(rows, 'Rss') / size_mb:7.2f} {median(rows, 'Pss') / size_mb:6.2f} {median(rows, 'Anonymous') / size_mb:6.2f}")


def main() -> None:
    photo = images.jpeg(images.photo_like(640, 480))
    with LocalCluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_imgembed CASCADE")
            conn.execute(f"ALTER DATABASE {conn.info.dbname} SET imgembed.intra_op_threads = {THREADS}")
            conn.execute("SELECT imgembed.load_model('tiny', %s, '{\"template\": \"convnext\"}')", (onnx_models.conv_net(224, 224),))
        tiny = Path(tmp) / "tiny.onnx"
        tiny.write_bytes(onnx_models.conv_net())
        for name, (builder, config) in MODELS.items():
            onnx = builder(0)
            plain = Path(tmp) / "plain.onnx"
            plain.write_bytes(onnx)
            with psycopg.connect(cluster.dsn, autocommit=True) as conn:
                conn.execute("SELECT imgembed.load_model(%s, %s, %s::jsonb)", (name, onnx, json.dumps(config)))
                (size,) = conn.execute("SELECT bytes FROM imgembed.models WHERE name = %s", (name,)).fetchone()
            size_mb = size / 2**20
            alone = [json.loads(subprocess.run([sys.executable, "-c", ALONE, str(plain), str(tiny)], capture_output=True, text=True,
                                               check=True).stdout) for _ in range(RUNS)]
            backend_run(cluster.dsn, photo, name, graphs=False)  # writes the model file cache
            off = [backend_run(cluster.dsn, photo, name, graphs=False) for _ in range(RUNS)]
            backend_run(cluster.dsn, photo, name, graphs=True, saving=True)
            on = [backend_run(cluster.dsn, photo, name, graphs=True) for _ in range(RUNS)]
            floor = median(alone, "first")
            print(f"\n{name}: pipeline model {size_mb:.0f} MiB, {THREADS} threads; first call: 640x480 JPEG, "
                  "memory growth over it as a multiple of the model")
            print(f"  {'':34} {'imports':>7} {'first call ms':>20} {'x alone':>7} {'RSS x':>7} {'PSS x':>6} {'anon x':>6}")
            show("onnxruntime alone (fresh process)", alone, size_mb, floor)
            show("backend, optimized graphs off", off, size_mb, floor)
            show("backend, optimized graphs cached", on, size_mb, floor)
            print(f"  first call, cached vs off: {median(off, 'first') / median(on, 'first'):.1f}x faster; "
                  "target: <= 150 ms and RSS <= 1.3x the model")


if __name__ == "__main__":
    main()
