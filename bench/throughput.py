#!/usr/bin/env python3
"""Throughput of every embedding path with a real-size model on photo-sized JPEGs (prints a table; not a test).

What costs the database adds is only visible next to what the same work costs without it. So
one run measures, side by side, on the same JPEGs (0.3, 2 and 12 MP, quality 90) and the same
architecture-exact ResNet-50 (random weights, ~94 MB, bench/resnet50.py):

- (a) onnxruntime alone on ready 224x224 tensors, 2 threads, batch 1: the compute limit;
- (b) fastembed's ImageEmbedding on the files (same ONNX, torchvision resize 256 / crop 224);
- (c) the obvious client code: fetch the bytea rows, decode + onnxruntime in the client, UPDATE
  row by row;
- (d) ``UPDATE t SET e = img_embedding(photo)`` and ``SELECT sum(vector_dims(img_embedding(photo)))``;
- (e) INSERT into a table with a sync embedding trigger;
- (f) INSERT without a trigger and with an async trigger, then ``pg-imgembed worker`` draining the
  queue (concurrency 2, batch 16, 1 onnxruntime thread per worker thread);
- (g) ``imgembed.embed_batch(model, array_agg(photo))``; (h) ``CALL imgembed.backfill(...)``;
- (i) the engine of (g) and (h) in this process, without the database (``batch.embed_many`` on the
  same bytes, same threads): what separates (h) from (i) is the database's share, and (i) from
  the machine limit the engine's;
- (d) and (h) again with a copy of the model whose ``preprocess.decode`` is "fast" (what that
  changes in the vectors needs trained weights: bench/fast_decode.py measures it);
- then the small-model section (bench/small_models.py): EfficientNet-Lite0, MobileNetV2 and the
  INT8 ResNet-50 on one thread against the same work in a Python loop (``--skip-small``);
- then the decode section (bench/decode_formats.py): 12 MP photos as JPEG, HEIC and AVIF, decode
  ms and backfill ms/image (``--skip-formats`` leaves it out).

In-database paths run with ``imgembed.intra_op_threads = 2``; (a) and (c) use the extension's
onnxruntime session options (2 threads, idle threads do not spin). ms/image is the median over
``--repeat`` runs of wall time / images. Paths compared by a ratio target (the sync trigger with
the SELECT, async with plain INSERT) run in turn within each repeat, and every timed INSERT starts
after a checkpoint and an OS sync. The queue paths (f) use ``--queue-rows`` rows (the photos
repeated), so both worker threads get whole batches; the two INSERTs run 3x ``--repeat`` times.
The worker is compared with the machine limit, cores / (single-thread inference + single-thread
decode and preprocess), since it is the path meant to keep every core busy; next to it the run
prints how far decoding and inference really scale when every core does its own. The model and photos are cached under /tmp/pg_imgembed-bench.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import psycopg
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import decode_formats, resnet50
from pg_imgembed.client.quantize import QuantizationReport, quantize_model
from pg_imgembed.client.worker import Options, Worker
from pg_imgembed.image.model_config import ModelConfig, parse_config
from pg_imgembed.image.tower import ImageTower
from pg_imgembed.onnx.session import make_session
from pg_imgembed.serving.batch import embed_many
from pg_imgembed.settings import Settings
from tests.devcluster import LocalCluster, fresh_database

if TYPE_CHECKING:
    from fastembed import ImageEmbedding

MODEL = "resnet50"
CONFIG = {"template": "torchvision-resnet"}
FAST_MODEL = "resnet50-fast"  # the same network, preprocess.decode "fast"
INT8_MODEL = "resnet50-int8"  # pg-imgembed models quantize, calibrated on CALIBRATION photos
CALIBRATION = 96
FAST_CONFIG = {**CONFIG, "preprocess": {"decode": "fast"}}
SIZES = ((640, 480), (1920, 1080), (4000, 3000))
SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
PHOTO_DIR = resnet50.CACHE_DIR / "photos-v2"
NOISE = 5.0  # sensor-like noise (sigma, 8-bit levels): 12 MP photos of ~2 MB at quality 90
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
THREADS = 2
CORES = os.cpu_count() or 1
WORKER = Options(concurrency=2, batch_size=16, once=True, threads=1)
# fastembed's spelling of "shortest side to int(224 / 0.875) = 256, center crop 224" (bilinear).
FASTEMBED_PREPROCESSOR = {
    "image_processor_type": "ConvNextFeatureExtractor", "crop_pct": 0.875, "size": {"shortest_edge": 224},
    "resample": 2, "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": MEAN.tolist(), "image_std": STD.tolist(),
}

# (key, label) in table order; the ratio column divides by "a".
PATHS = (
    ("a", "(a) onnxruntime alone, ready tensors"),
    ("b", "(b) fastembed ImageEmbedding, files"),
    ("c", "(c) client: fetch, PIL + ort, UPDATE per row"),
    ("d_update", "(d) UPDATE t SET e = img_embedding(photo)"),
    ("d_select", "(d) SELECT sum(vector_dims(img_embedding()))"),
    ("e", "(e) INSERT, sync trigger"),
    ("f_plain", "(f) INSERT, no trigger"),
    ("f_async", "(f) INSERT, async trigger"),
    ("f_worker", "(f) worker drains the queue (wall / N)"),
    ("g", "(g) embed_batch(array_agg(photo))"),
    ("h", "(h) CALL imgembed.backfill"),
    ("i", "(i) its engine in-process, no database"),
    ("d_update_fast", "(d) UPDATE img_embedding, decode fast"),
    ("h_fast", "(h) backfill, decode fast"),
    ("a_int8", "(a) INT8 pipeline alone, ready tensors"),
    ("d_update_int8", "(d) UPDATE img_embedding, INT8"),
    ("h_int8", "(h) backfill, INT8"),
)
LIMIT_LABEL = "machine limit: cores / (1-thread infer + decode)"
BULK_TARGETS = {"640x480": 1.10, "1920x1080": 1.25, "4000x3000": 1.60}  # backfill / UPDATE vs (a)


# ---------------------------------------------------------------- inputs


def photo(width: int, height: int, index: int) -> bytes:
    """A bundled scikit-image photo cropped to the aspect, LANCZOS-resized, with mild sensor-like
    noise so it compresses like a camera JPEG rather than an upscaled smooth image."""
    path = PHOTO_DIR / f"{width}x{height}-{index}.jpg"
    if path.exists():
        return path.read_bytes()
    import skimage.data

    img = Image.fromarray(getattr(skimage.data, SOURCES[index % len(SOURCES)])()).convert("RGB")
    if (index // len(SOURCES)) % 2:
        img = ImageOps.mirror(img)
    img = ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(img, dtype=np.uint8).copy()
    rng = np.random.default_rng(index)
    for top in range(0, height, 256):  # in strips: a 12 MP float buffer is 144 MB
        strip = pixels[top:top + 256].astype(np.float32)
        strip += rng.normal(0.0, NOISE, strip.shape).astype(np.float32)
        pixels[top:top + 256] = np.clip(strip, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=90)
    PHOTO_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return buf.getvalue()


def client_tensor(data: bytes) -> np.ndarray:
    """What a user writes: PIL decode, resize 256 (bilinear), center crop 224, ImageNet mean/std, CHW."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    scale = 256 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    return ((np.asarray(img, dtype=np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)


def vector_literal(vec: np.ndarray) -> str:
    return "[" + ",".join(map(str, vec.tolist())) + "]"


# ---------------------------------------------------------------- timing


def per_image_ms(run: Callable[[], object], images: int, repeat: int,
                 reset: Callable[[], object] | None = None) -> float:
    """Median over ``repeat`` runs of wall time / images; ``reset`` runs untimed before each."""
    totals = []
    for _ in range(repeat):
        if reset is not None:
            reset()
        start = time.perf_counter()
        run()
        totals.append(time.perf_counter() - start)
    return statistics.median(totals) / images * 1000


def interleaved_ms(runs: dict[str, tuple[Callable[[], object], Callable[[], object] | None]], images: int,
                   repeat: int) -> dict[str, float]:
    """``per_image_ms`` for paths compared by a ratio: each repeat runs every path once, in turn,
    so the slow drifts of a shared VM (page cache writeback, neighbours) hit both sides alike."""
    totals: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeat):
        for key, (run, reset) in runs.items():
            if reset is not None:
                reset()
            start = time.perf_counter()
            run()
            totals[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) / images * 1000 for key, t in totals.items()}


def parallel_ms(run: Callable[[object], object], items: list, threads: int) -> float:
    """Wall time per item with ``threads`` threads each running every item: 1-thread time over
    this is how well the work scales to the cores."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: [run(item) for item in items], range(threads)))  # warm
        start = time.perf_counter()
        list(pool.map(lambda _: [run(item) for item in items], range(threads)))
        return (time.perf_counter() - start) / (len(items) * threads) * 1000


def median_ms(run: Callable[[object], object], items: list) -> float:
    timings = []
    for item in items:
        start = time.perf_counter()
        run(item)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000


@dataclass
class SizeResult:
    label: str
    photo_kb: float
    ms: dict[str, float] = field(default_factory=dict)
    infer_1t_ms: float = 0.0
    decode_1t_ms: float = 0.0
    infer_nt_ms: float = 0.0  # per image, every core running its own single-thread inference
    decode_nt_ms: float = 0.0  # per image, every core decoding its own images

    @property
    def machine_limit(self) -> float:
        """Images/s with every core busy and nothing but single-thread decode + inference."""
        return CORES / ((self.infer_1t_ms + self.decode_1t_ms) / 1000)

    @property
    def worker_rate(self) -> float:
        return 1000 / self.ms["f_worker"]

    def ratio(self, key: str) -> float:
        return self.ms[key] / self.ms["a"]


# ---------------------------------------------------------------- the run


class Bench:
    def __init__(self, dsn: str, images: int, queue_rows: int, repeat: int, workdir: Path) -> None:
        self.dsn, self.images, self.queue_rows, self.repeat, self.workdir = dsn, images, queue_rows, repeat, workdir
        self.onnx_path = resnet50.cached()
        self.db = psycopg.connect(dsn, autocommit=True)
        self.db.execute("CREATE EXTENSION IF NOT EXISTS pg_imgembed CASCADE")
        for name, config in ((MODEL, CONFIG), (FAST_MODEL, FAST_CONFIG)):
            self.db.execute("SELECT * FROM imgembed.load_model(%s, %b, %s::jsonb)",
                            (name, self.onnx_path.read_bytes(), json.dumps(config)))
        self.db.execute(f"SET imgembed.intra_op_threads = {THREADS}")
        self.runtime = json.loads(self.db.execute("SELECT imgembed.runtime()::text").fetchone()[0])
        onnx, config = self.db.execute("SELECT onnx, config::text FROM imgembed.model_store WHERE name = %s",
                                       (MODEL,)).fetchone()
        self.pipeline = ImageTower(bytes(onnx), parse_config(json.loads(config)), threads=1)
        self.engine = ImageTower(bytes(onnx), parse_config(json.loads(config)), threads=THREADS)
        self.session = make_session(self.onnx_path, THREADS)
        self.quantized = self._quantize()
        (int8,) = self.db.execute("SELECT onnx FROM imgembed.model_store WHERE name = %s", (INT8_MODEL,)).fetchone()
        self.int8 = ImageTower(bytes(int8), ModelConfig(), threads=THREADS)
        self.spinning_ms = 0.0
        self.fastembed = self._fastembed()
        self.worker = Worker(dsn, WORKER, name="bench")
        self._warm_up()

    def _quantize(self) -> QuantizationReport:
        """The INT8 copy, calibrated on 64 photos and measured on 32 others (640x480, not the timed ones)."""
        self.db.execute("CREATE TABLE calibration (id int PRIMARY KEY, photo bytea)")
        with self.db.cursor() as cur:
            cur.executemany("INSERT INTO calibration VALUES (%s, %b)",
                            [(i, photo(640, 480, 1000 + i)) for i in range(CALIBRATION)])
        return quantize_model(self.db, MODEL, INT8_MODEL, "SELECT photo FROM calibration ORDER BY id", samples=64,
                              held_out=CALIBRATION - 64, threads=THREADS)

    def _fastembed(self) -> ImageEmbedding:
        from fastembed import ImageEmbedding

        repo = self.workdir / "resnet50-onnx"
        repo.mkdir()
        (repo / "model.onnx").symlink_to(self.onnx_path)
        (repo / "preprocessor_config.json").write_text(json.dumps(FASTEMBED_PREPROCESSOR))
        return ImageEmbedding("Qdrant/resnet50-onnx", cache_dir=str(self.workdir / "cache"), threads=THREADS,
                              specific_model_path=str(repo))

    def _warm_up(self) -> None:
        """Model sessions in this backend, the worker and the client; nothing timed pays a first call."""
        small = [photo(640, 480, i) for i in range(2)]
        for name in (MODEL, FAST_MODEL, INT8_MODEL):
            self.db.execute("SELECT vector_dims(img_embedding(%b, %s))", (small[0], name))
        self.db.execute("CREATE TABLE warm (id int PRIMARY KEY, photo bytea, e vector(2048))")
        self.db.execute("SELECT imgembed.create_embedding_trigger('warm', 'photo', 'e', %s, mode => 'async')", (MODEL,))
        with self.db.cursor() as cur:
            cur.executemany("INSERT INTO warm (id, photo) VALUES (%s, %b)", list(enumerate(small)))
        self.worker.run()
        tensor = client_tensor(small[0])[None]
        self.session.run(None, {"pixel_values": tensor})
        self.pipeline.embed(small[0], max_pixels=10**9)
        self.engine.embed(small[0], max_pixels=10**9)
        list(self.fastembed.embed([Image.open(io.BytesIO(small[0]))]))
        spinning = ort.InferenceSession(str(self.onnx_path), providers=["CPUExecutionProvider"],
                                        sess_options=_threads(THREADS))
        spinning.run(None, {"pixel_values": tensor})
        self.spinning_ms = median_ms(lambda _: spinning.run(None, {"pixel_values": tensor}), list(range(10)))

    def table(self, name: str, trigger: str | None = None) -> str:
        self.db.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, photo bytea, e vector(2048))")
        # As create_embedding_trigger does: every table compared stores images uncompressed.
        self.db.execute(f"ALTER TABLE {name} ALTER COLUMN photo SET STORAGE EXTERNAL")
        if trigger:
            self.db.execute("SELECT imgembed.create_embedding_trigger(%s, 'photo', 'e', %s, mode => %s)",
                            (name, MODEL, trigger))
        return name

    def settle(self, statement: str | None = None) -> None:
        """Before a timed INSERT: a checkpoint, and the OS page cache written back, so no run
        pays for the writeback of the one before (12 MP rows write ~150 MB)."""
        if statement:
            self.db.execute(statement)
        self.db.execute("CHECKPOINT")
        os.sync()

    def insert(self, table: str, rows: list[tuple[int, bytes]]) -> None:
        with self.db.transaction(), self.db.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} (id, photo) VALUES (%s, %b)", rows)

    def measure(self, width: int, height: int) -> SizeResult:
        n, repeat, db = self.images, self.repeat, self.db
        files = [photo(width, height, i) for i in range(n)]
        rows = list(enumerate(files))
        result = SizeResult(f"{width}x{height}", sum(map(len, files)) / n / 1024)
        suffix = f"{width}x{height}"

        # (a) compute only, and the single-thread references for the machine limit
        tensors = [client_tensor(f)[None] for f in files]
        result.ms["a"] = per_image_ms(lambda: [self.session.run(None, {"pixel_values": t}) for t in tensors], n, repeat)
        ready = [self.pipeline.preprocess(self.pipeline.decode(f, max_pixels=10**9)) for f in files]
        prepare = lambda f: self.pipeline.preprocess(self.pipeline.decode(f, max_pixels=10**9))
        infer = lambda t: self.pipeline.run([t])
        # Measured alike on 1 thread and on every core, so their ratio is the scaling.
        result.infer_1t_ms, result.infer_nt_ms = (parallel_ms(infer, ready, k) for k in (1, CORES))
        result.decode_1t_ms, result.decode_nt_ms = (parallel_ms(prepare, files, k) for k in (1, CORES))

        # (b) fastembed on the files
        paths = []
        for i, data in enumerate(files):
            paths.append(self.workdir / f"{suffix}-{i}.jpg")
            paths[-1].write_bytes(data)
        result.ms["b"] = per_image_ms(lambda: list(self.fastembed.embed([str(p) for p in paths])), n, repeat)

        # (c) the naive client
        photos = self.table(f"photos_{suffix}")
        self.insert(photos, rows)

        def client() -> None:
            with psycopg.connect(self.dsn) as conn:
                for id_, data in conn.execute(f"SELECT id, photo FROM {photos} ORDER BY id").fetchall():
                    (out,) = self.session.run(None, {"pixel_values": client_tensor(data)[None]})
                    vec = out[0] / np.linalg.norm(out[0])
                    conn.execute(f"UPDATE {photos} SET e = %s::vector WHERE id = %s", (vector_literal(vec), id_))

        result.ms["c"] = per_image_ms(client, n, repeat)

        # (d) img_embedding in UPDATE and in SELECT; (e) the sync trigger, in turn with the SELECT
        result.ms["d_update"] = per_image_ms(
            lambda: db.execute(f"UPDATE {photos} SET e = img_embedding(photo, %s)", (MODEL,)), n, repeat)
        sync = self.table(f"sync_{suffix}", "sync")
        result.ms.update(interleaved_ms({
            "d_select": (lambda: db.execute(f"SELECT sum(vector_dims(img_embedding(photo, %s))) FROM {photos}",
                                            (MODEL,)), None),
            "e": (lambda: self.insert(sync, rows), lambda: self.settle(f"TRUNCATE {sync}")),
        }, n, repeat))

        # (f) plain and async INSERT of the queue rows, in turn, then the worker drains the queue
        queue_rows = [(i, files[i % n]) for i in range(self.queue_rows)]
        plain, queued = self.table(f"plain_{suffix}"), self.table(f"async_{suffix}", "async")

        def clear_queue() -> None:
            db.execute("DELETE FROM imgembed.queue WHERE tbl = %s::regclass", (queued,))
            self.settle(f"TRUNCATE {queued}")

        def enqueue() -> None:
            clear_queue()
            self.insert(queued, queue_rows)
            self.settle()

        # Cheap runs (32 ms at 640x480) that a commit's flush can double: 3x the repeats.
        result.ms.update(interleaved_ms({
            "f_plain": (lambda: self.insert(plain, queue_rows), lambda: self.settle(f"TRUNCATE {plain}")),
            "f_async": (lambda: self.insert(queued, queue_rows), clear_queue),
        }, len(queue_rows), 3 * repeat))
        result.ms["f_worker"] = per_image_ms(self.worker.run, len(queue_rows), repeat, reset=enqueue)
        (left,) = db.execute(f"SELECT count(*) FROM {queued} WHERE e IS NULL").fetchone()
        if left:
            raise RuntimeError(f"the worker left {left} rows of {queued} without a vector")

        # (g) embed_batch, (h) backfill
        result.ms["g"] = per_image_ms(lambda: db.execute(
            f"SELECT cardinality(imgembed.embed_batch(%s, array_agg(photo ORDER BY id))) FROM {photos}", (MODEL,)),
            n, repeat)
        result.ms["h"] = per_image_ms(
            lambda: db.execute("CALL imgembed.backfill(%s, 'photo', 'e', %s)", (photos, MODEL)), n, repeat,
            reset=lambda: db.execute(f"UPDATE {photos} SET e = NULL"))

        result.ms["i"] = per_image_ms(lambda: embed_many(self.engine, files, Settings(intra_op_threads=THREADS)), n, repeat)

        # the bulk paths again with decode "fast", on a table of their own (lineage is per column)
        fast = self.table(f"fast_{suffix}")
        self.insert(fast, rows)
        result.ms["d_update_fast"] = per_image_ms(
            lambda: db.execute(f"UPDATE {fast} SET e = img_embedding(photo, %s)", (FAST_MODEL,)), n, repeat)
        result.ms["h_fast"] = per_image_ms(
            lambda: db.execute("CALL imgembed.backfill(%s, 'photo', 'e', %s)", (fast, FAST_MODEL)), n, repeat,
            reset=lambda: db.execute(f"UPDATE {fast} SET e = NULL"))

        # and with the INT8 copy (pg-imgembed models quantize), also on a table of its own
        result.ms["a_int8"] = per_image_ms(lambda: [self.int8.run([t]) for t in ready], n, repeat)
        int8 = self.table(f"int8_{suffix}")
        self.insert(int8, rows)
        result.ms["d_update_int8"] = per_image_ms(
            lambda: db.execute(f"UPDATE {int8} SET e = img_embedding(photo, %s)", (INT8_MODEL,)), n, repeat)
        result.ms["h_int8"] = per_image_ms(
            lambda: db.execute("CALL imgembed.backfill(%s, 'photo', 'e', %s)", (int8, INT8_MODEL)), n, repeat,
            reset=lambda: db.execute(f"UPDATE {int8} SET e = NULL"))
        return result


def _threads(n: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = n
    return options


# ---------------------------------------------------------------- report


def report(results: list[SizeResult], bench: Bench, elapsed: float) -> None:
    width = max(len(label) for _, label in (*PATHS, ("", LIMIT_LABEL)))
    head = "".join(f"{r.label:>12}" for r in results)
    print(f"\nms/image (median of {bench.repeat} runs; {bench.images} photos per size, "
          f"{bench.queue_rows} rows for (f)) and x (a)\n")
    print(f"{'path':{width}}{head}  |{''.join(f'{r.label:>12}' for r in results)}")
    for key, label in PATHS:
        cells = "".join(f"{r.ms[key]:12.1f}" for r in results)
        ratios = "".join(f"{r.ratio(key):11.2f}x" for r in results)
        print(f"{label:{width}}{cells}  |{ratios}")
    limits = [1000 / r.machine_limit for r in results]
    cells = "".join(f"{ms:12.1f}" for ms in limits)
    ratios = "".join(f"{ms / r.ms['a']:11.2f}x" for ms, r in zip(limits, results))
    print(f"{LIMIT_LABEL:{width}}{cells}  |{ratios}")

    cores = CORES
    print("\nreference numbers")
    print(f"  machine: {cores} cores, {cpu_model()}; python {platform.python_version()}; "
          f"client onnxruntime {ort.__version__}; server runtime: onnxruntime {bench.runtime.get('onnxruntime')}, "
          f"pillow {bench.runtime.get('pillow')}, numpy {bench.runtime.get('numpy')}")
    print(f"  model: ResNet-50, random weights, {bench.onnx_path.stat().st_size / 2**20:.1f} MiB "
          f"({bench.onnx_path}); config {json.dumps(CONFIG)}")
    print(f"  (a) with onnxruntime's default spinning threads (2): {bench.spinning_ms:.1f} ms/image")
    print("  INT8 copy: " + "\n    ".join(bench.quantized.lines()))
    for r in results:
        print(f"  {r.label:>10}: JPEG {r.photo_kb:7.0f} KiB avg; 1 thread: inference {r.infer_1t_ms:6.1f} ms, "
              f"decode+preprocess {r.decode_1t_ms:6.1f} ms; machine limit {r.machine_limit:5.1f} img/s; "
              f"worker {r.worker_rate:5.1f} img/s = {r.worker_rate / r.machine_limit:.2f} of it")
        scaled = r.infer_nt_ms + r.decode_nt_ms  # the same limit with the scaling this machine has
        print(f"  {'':>10}  {cores} threads at once scale inference {r.infer_1t_ms / r.infer_nt_ms:.2f}x, "
              f"decode+preprocess {r.decode_1t_ms / r.decode_nt_ms:.2f}x (the limit assumes {cores}x); "
              f"with that scaling the limit is {scaled:.1f} ms/image, worker = {scaled / r.ms['f_worker']:.2f} of it")
    print("  sync trigger INSERT / (plain INSERT + SELECT img_embedding): "
          + ", ".join(f"{r.label} {r.ms['e'] / (r.ms['f_plain'] + r.ms['d_select']):.3f}" for r in results))
    print(f"  wall time of the run: {elapsed:.0f} s")

    checks: list[tuple[str, bool]] = []
    for r in results:
        limit = BULK_TARGETS.get(r.label)
        if limit is not None:
            for key, name in (("h", "backfill"), ("d_update", "UPDATE img_embedding"),
                              ("h_fast", "backfill, decode fast"), ("d_update_fast", "UPDATE, decode fast")):
                checks.append((f"{r.label}: {name} {r.ratio(key):.2f}x (a) <= {limit:.2f}x", r.ratio(key) <= limit))
        sync = r.ms["e"] / r.ms["d_select"]
        checks.append((f"{r.label}: sync trigger INSERT {sync:.3f}x SELECT img_embedding <= 1.05x", sync <= 1.05))
        async_ = r.ms["f_async"] / r.ms["f_plain"]
        checks.append((f"{r.label}: async INSERT {async_:.2f}x plain INSERT <= 1.20x", async_ <= 1.20))
        share = r.worker_rate / r.machine_limit
        checks.append((f"{r.label}: worker {share:.2f} of the machine limit >= 0.90", share >= 0.90))
    print("\ntargets")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="server with pg_imgembed installed (default: a throwaway local cluster)")
    parser.add_argument("--images", type=int, default=8, help="photos per size (default 8)")
    parser.add_argument("--queue-rows", type=int, default=2 * WORKER.concurrency * WORKER.batch_size,
                        help="rows inserted for (f), the photos repeated (default: 2 batches per worker thread)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement, median taken (default 5)")
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES), help="comma-separated WxH")
    parser.add_argument("--skip-small", action="store_true", help="leave out the small-model section")
    parser.add_argument("--skip-formats", action="store_true", help="leave out the decode section (JPEG, HEIC, AVIF)")
    args = parser.parse_args()
    if args.images < 2:
        parser.error("--images must be at least 2 (img_embedding reuses the vector of a repeated image)")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    started = time.perf_counter()
    with ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(LocalCluster()).dsn
        dsn = fresh_database(dsn, "imgembed_throughput")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pg_imgembed-throughput-")))
        bench = Bench(dsn, args.images, max(args.queue_rows, args.images), args.repeat, workdir)
        stack.callback(bench.db.close)
        results = []
        for width, height in sizes:
            results.append(bench.measure(width, height))
            print(f"measured {width}x{height} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        report(results, bench, time.perf_counter() - started)
        if not args.skip_small:
            from bench import small_models  # it reuses this file's photos and timing

            small, rebuilt = small_models.measure(fresh_database(dsn, "imgembed_small_models"), 16, args.repeat)
            print("\nsmall-model targets")
            for text, ok in small_models.report(small, rebuilt, 16, args.repeat):
                print(f"  {'PASS' if ok else 'FAIL'}  {text}")
        if not args.skip_formats:
            rows = decode_formats.measure(fresh_database(dsn, "imgembed_decode_formats"), 3, 3)
            decode_formats.report(rows, decode_formats.photos(3))


if __name__ == "__main__":
    main()
