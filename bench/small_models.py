#!/usr/bin/env python3
"""Small and INT8 models end to end, against the same work in one Python process (prints a table;
not a test). Where the network is cheap, what the database adds around it shows.

Models, each stored twice: as this version builds pipelines and as 0.4.0 built them (its
preprocessing prefix: Sub and Div broadcast over NHWC floats):

- the demo's EfficientNet-Lite0 (the packaged ImageNet weights, scripts/efficientnet_lite0.py);
- MobileNetV2 1.0, random weights (bench/architectures.py);
- ResNet-50, random weights (bench/resnet50.py), and its INT8 copy (pg-imgembed models quantize,
  calibrated on 64 other photos), so the INT8 end-to-end speed-up is measured on both prefixes.

Rows, in ms/image over N photos of 640x480 (JPEG quality 90), all on one onnxruntime thread
(``imgembed.intra_op_threads = 1``, the worker with concurrency 1):

- net: the plain network on ready tensors (the pipeline without its prefix and pooling);
- python: PIL decode + resize 256 + crop 224 + numpy normalise + the plain network, in a loop;
- backfill, embed_batch, worker: the extension, ratio to ``python``; and backfill of the 0.4.0 copy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import architectures, resnet50
from bench.throughput import client_tensor, per_image_ms, photo
from pg_imgembed.client.quantize import quantize_model
from pg_imgembed.client.worker import Options, Worker
from tests.devcluster import LocalCluster, fresh_database
from tests.released import PIPELINE_0_4_0, pipeline_builder

CONFIG = {"template": "torchvision-resnet"}  # resize 256, crop 224, ImageNet mean/std: client_tensor's work
WORKER = Options(concurrency=1, batch_size=16, once=True, threads=1)
CALIBRATION = 64
ROWS = ("net", "python", "backfill", "embed_batch", "worker", "backfill_0_4_0")
BACKFILL_TARGET = 1.15  # backfill / python


@dataclass
class ModelResult:
    name: str
    ms: dict[str, float] = field(default_factory=dict)

    def ratio(self, key: str) -> float:
        return self.ms[key] / self.ms["python"]


def efficientnet_lite0() -> bytes:
    from scripts.efficientnet_lite0 import build_model
    from scripts.export_efficientnet_lite0 import weights_path
    from scripts.torch_checkpoint import load_state_dict

    return build_model(load_state_dict(weights_path())).SerializeToString()


def _session(plain: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(plain, options, providers=["CPUExecutionProvider"])


class SmallModels:
    def __init__(self, dsn: str, images: int, repeat: int, workdir: Path) -> None:
        self.dsn, self.images, self.repeat = dsn, images, repeat
        self.db = psycopg.connect(dsn, autocommit=True)
        self.db.execute("CREATE EXTENSION IF NOT EXISTS pg_imgembed CASCADE")
        self.db.execute("SET imgembed.intra_op_threads = 1")
        self.files = [photo(640, 480, i) for i in range(images)]
        resnet = resnet50.cached().read_bytes()
        self.plain = {"efficientnet-lite0": efficientnet_lite0(), "mobilenet-v2": architectures.mobilenet_v2(), "resnet50": resnet}
        with pipeline_builder(PIPELINE_0_4_0, workdir) as old_builder:
            for name, plain in self.plain.items():
                self.db.execute("SELECT name FROM imgembed.load_model(%s, %b, %s::jsonb)", (name, plain, json.dumps(CONFIG)))
                self.db.execute("SELECT name FROM imgembed.load_model(%s, %b)", (f"{name}-0.4.0", old_builder(plain, CONFIG)))
        self.db.execute("CREATE TABLE calibration (id int PRIMARY KEY, photo bytea)")
        with self.db.cursor() as cur:
            cur.executemany("INSERT INTO calibration VALUES (%s, %b)", [(i, photo(640, 480, 1000 + i)) for i in range(CALIBRATION)])
        for source in ("resnet50", "resnet50-0.4.0"):
            quantize_model(self.db, source, source.replace("resnet50", "resnet50-int8"), "SELECT photo FROM calibration ORDER BY id",
                           samples=CALIBRATION - 8, held_out=8, threads=1)
        self.plain["resnet50-int8"] = self._int8_network()
        self.worker = Worker(dsn, WORKER, name="bench-small")

    def _int8_network(self) -> bytes:
        """The INT8 pipeline without its prefix and pooling: what the python loop runs for it."""
        import onnx

        (stored,) = self.db.execute("SELECT onnx FROM imgembed.model_store WHERE name = 'resnet50-int8'").fetchone()
        model = onnx.load_from_string(bytes(stored))
        inner = onnx.utils.Extractor(model).extract_model(["pg_imgembed/pixels"], ["model/embedding"])
        return inner.SerializeToString()

    def table(self, kind: str, model: str) -> str:
        name = f"{kind}_{model}".replace("-", "_").replace(".", "_")
        self.db.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, photo bytea, e vector)")
        self.db.execute(f"ALTER TABLE {name} ALTER COLUMN photo SET STORAGE EXTERNAL")
        self.fill(name)
        return name

    def fill(self, table: str) -> None:
        with self.db.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} (id, photo) VALUES (%s, %b)", list(enumerate(self.files)))

    def measure(self, name: str) -> ModelResult:
        n, repeat, db = self.images, self.repeat, self.db
        result = ModelResult(name)
        session = _session(self.plain[name])
        input_name = session.get_inputs()[0].name
        tensors = [client_tensor(f)[None] for f in self.files]
        session.run(None, {input_name: tensors[0]})
        result.ms["net"] = per_image_ms(lambda: [session.run(None, {input_name: t}) for t in tensors], n, repeat)

        def python_loop() -> None:
            for data in self.files:
                (out,) = session.run(None, {input_name: client_tensor(data)[None]})
                out[0] / np.linalg.norm(out[0])

        result.ms["python"] = per_image_ms(python_loop, n, repeat)
        for stored, key in ((name, "backfill"), (f"{name}-0.4.0", "backfill_0_4_0")):
            table = self.table("bf", stored)
            db.execute("SELECT vector_dims(img_embedding(%b, %s))", (self.files[0], stored))  # the session, warm
            result.ms[key] = per_image_ms(
                lambda t=table, m=stored: db.execute("CALL imgembed.backfill(%s, 'photo', 'e', %s)", (t, m)), n, repeat,
                reset=lambda t=table: db.execute(f"UPDATE {t} SET e = NULL"))
        batch = self.table("batch", name)
        result.ms["embed_batch"] = per_image_ms(lambda: db.execute(
            f"SELECT cardinality(imgembed.embed_batch(%s, array_agg(photo ORDER BY id))) FROM {batch}", (name,)), n, repeat)
        queued = self.table("queue", name)
        db.execute(f"TRUNCATE {queued}")
        db.execute("SELECT imgembed.create_embedding_trigger(%s, 'photo', 'e', %s, mode => 'async')", (queued, name))

        def enqueue() -> None:
            db.execute(f"TRUNCATE {queued}")
            db.execute("DELETE FROM imgembed.queue")
            self.fill(queued)

        enqueue()
        self.worker.run()  # its session, warm
        result.ms["worker"] = per_image_ms(self.worker.run, n, repeat, reset=enqueue)
        return result


    def rebuild(self, name: str) -> tuple:
        """imgembed.rebuild_model on the copy 0.4.0 stored: (same_vectors, max_difference, min_cosine)."""
        return self.db.execute("SELECT same_vectors, max_difference, min_cosine FROM imgembed.rebuild_model(%s)",
                               (f"{name}-0.4.0",)).fetchone()


MODELS = ("efficientnet-lite0", "mobilenet-v2", "resnet50-int8", "resnet50")


def measure(dsn: str, images: int, repeat: int) -> tuple[list[ModelResult], dict[str, tuple]]:
    """The table's results, then what rebuild_model measured on each model 0.4.0 stored."""
    with tempfile.TemporaryDirectory(prefix="pg_imgembed-small-") as workdir:
        bench = SmallModels(dsn, images, repeat, Path(workdir))
        try:
            results = [bench.measure(name) for name in MODELS]
            return results, {name: bench.rebuild(name) for name in MODELS}
        finally:
            bench.db.close()


def report(results: list[ModelResult], rebuilt: dict[str, tuple], images: int, repeat: int) -> list[tuple[str, bool]]:
    print(f"\nsmall and INT8 models, 640x480 JPEG, 1 thread: ms/image (median of {repeat} runs of {images} photos) "
          "and x the python loop\n")
    print(f"{'path':16}" + "".join(f"{r.name:>22}" for r in results))
    for key in ROWS:
        print(f"{key:16}" + "".join(f"{r.ms[key]:12.2f} {r.ratio(key):8.2f}x" for r in results))
    print("\nimgembed.rebuild_model on the copies 0.4.0 stored: largest difference / vector length, lowest cosine")
    for name, (same, difference, cosine) in rebuilt.items():
        print(f"  {name:20} {difference:9.1e} {cosine:.9f}  {'same vectors: generation kept' if same else 'new generation'}")
    by_name = {r.name: r for r in results}
    checks = [(f"{r.name}: backfill {r.ratio('backfill'):.2f}x the python loop <= {BACKFILL_TARGET:.2f}x",
               r.ratio("backfill") <= BACKFILL_TARGET) for r in results]
    if "resnet50" in by_name and "resnet50-int8" in by_name:
        fp32, int8 = by_name["resnet50"], by_name["resnet50-int8"]
        speedup = fp32.ms["backfill"] / int8.ms["backfill"]
        print(f"\nINT8 end-to-end speed-up (backfill): {speedup:.2f}x; with 0.4.0's prefix "
              f"{fp32.ms['backfill_0_4_0'] / int8.ms['backfill_0_4_0']:.2f}x; network alone {fp32.ms['net'] / int8.ms['net']:.2f}x")
        checks.append((f"INT8 end-to-end speed-up {speedup:.2f}x >= 2.5x", speedup >= 2.5))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="server with pg_imgembed installed (default: a throwaway local cluster)")
    parser.add_argument("--images", type=int, default=16, help="photos (default 16)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement, median taken (default 5)")
    args = parser.parse_args()
    started = time.perf_counter()
    with ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(LocalCluster()).dsn
        results, rebuilt = measure(fresh_database(dsn, "imgembed_small_models"), args.images, args.repeat)
    checks = report(results, rebuilt, args.images, args.repeat)
    print("\ntargets")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    print(f"  wall time {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
