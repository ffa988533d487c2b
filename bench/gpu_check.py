#!/usr/bin/env python3
"""A prepared check for a host with an NVIDIA GPU (and onnxruntime-gpu): the embedding paths that
need no database, on CUDA. For each photo size it prints images/s through ``embed_many`` as a
backend runs it and as a worker thread runs it (with the decode threads each uses), the GPU memory
one session takes, and the cosine between CUDA and CPU vectors (minimum over the photos). It exits
2 if CUDA was asked for and the session runs on the CPU (onnxruntime falls back with only a log
line). With ``--provider cpu`` it runs the same paths on the CPU, which is how it is tested here.

``--serve`` checks the shared engine instead: one ``pg-imgembed serve`` (Triton, ``--triton-venv``)
on the provider, for a throwaway local cluster (the extension installed): images/s of 16
connections embedding row by row (sync trigger INSERTs) and of a worker, both through it at
640x480, the GPU memory of that one process, and the cosine to in-process CPU vectors. Exit 2
when serve cannot run its model on the provider.

    python bench/gpu_check.py                      # ResNet-50 (random weights), 100 photos, CUDA
    python bench/gpu_check.py --serve              # the same model through pg-imgembed serve on CUDA
    python bench/gpu_check.py --provider cpu --model tiny --photos 8 --sizes 64x48
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pg_imgembed.errors import ImgEmbedError
from pg_imgembed.image.model_config import parse_config
from pg_imgembed.image.tower import ImageTower
from pg_imgembed.serving.batch import embed_many
from pg_imgembed.settings import Settings
from tests import images, onnx_models
from tests.helpers import vector

SIZES = "640x480,1920x1080,4000x3000"


def gpu_memory_mib() -> int | None:
    """Memory in use on GPU 0, from nvidia-smi where there is one."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else None


def load(model: str) -> tuple[bytes, dict]:
    if model == "tiny":
        return onnx_models.conv_net(), {"preprocess": {"resize": {"height": 16, "width": 16}}}
    from bench import resnet50

    config = {"preprocess": {"resize": {"shortest_edge": 256}, "center_crop": {"height": 224, "width": 224},
                             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    return resnet50.cached().read_bytes(), config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--model", choices=["resnet50", "tiny"], default="resnet50")
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--sizes", default=SIZES, help=f"WxH,... (default {SIZES})")
    parser.add_argument("--serve", action="store_true", help="through one pg-imgembed serve instead (a local cluster)")
    parser.add_argument("--triton-venv", default=os.environ.get("PG_IMGEMBED_TRITON_VENV", ".triton-venv"))
    args = parser.parse_args()

    onnx, raw_config = load(args.model)
    if args.serve:
        return check_serve(args, onnx, raw_config)
    config = parse_config(raw_config)
    before = gpu_memory_mib()
    try:
        model = ImageTower(onnx, config, threads=1, provider=args.provider)
    except ImgEmbedError as exc:
        print(f"FAIL: {exc.message} ({exc.hint})")
        return 2
    after = gpu_memory_mib()
    if model.provider != args.provider:
        print(f"FAIL: {args.provider} was asked for, the session runs on {model.provider}")
        return 2
    reference = ImageTower(onnx, config, threads=1, provider="cpu")
    memory = f"{after - before} MiB" if before is not None and after is not None else "n/a (no nvidia-smi)"
    print(f"model {args.model}, session on {model.provider}, GPU memory for the session: {memory}")

    settings = Settings()
    cores = os.cpu_count() or 1
    paths = {"backend (embed_many)": settings.threads, "worker thread (embed_many)": cores}
    print(f"{'photo size':>12} {'path':28} {'decode threads':>14} {'images/s':>9} {'min cosine vs CPU':>18}")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        photos = [images.jpeg(images.photo_like(width, height, seed=i)) for i in range(args.photos)]
        expected = embed_many(reference, photos, settings)
        for path, decode_threads in paths.items():
            start = time.perf_counter()
            vectors = embed_many(model, photos, settings, decode_threads=decode_threads)
            rate = len(photos) / (time.perf_counter() - start)
            cosine = min(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
                         for a, b in zip(vectors, expected) if a is not None and b is not None)
            print(f"{size:>12} {path:28} {decode_threads:>14} {rate:9.1f} {cosine:18.6f}")
    return 0


def check_serve(args: argparse.Namespace, onnx: bytes, raw_config: dict) -> int:
    from contextlib import ExitStack

    import psycopg

    from bench.serving import Serve, row_by_row, worker_rate
    from tests.devcluster import LocalCluster, fresh_database

    photos = [images.jpeg(images.photo_like(640, 480, seed=i)) for i in range(args.photos)]
    with ExitStack() as stack:
        dsn = fresh_database(stack.enter_context(LocalCluster(settings={"max_connections": "40"})).dsn, "imgembed_gpu_check")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_imgembed CASCADE")
            conn.execute("SELECT * FROM imgembed.load_model(%s, %s, %s::jsonb)", (args.model, onnx, json.dumps(raw_config)))
            dimensions = conn.execute("SELECT dimensions FROM imgembed.models WHERE name = %s", (args.model,)).fetchone()[0]
            conn.execute("SET imgembed.execution_provider = 'cpu'")
            expected = [vector(conn.execute("SELECT img_embedding(%s, %s)::text", (p, args.model)).fetchone()[0]) for p in photos]
        before = gpu_memory_mib()
        try:
            serve = Serve(dsn, os.path.abspath(args.triton_venv), 2000, args.model, args.provider)
        except SystemExit:
            print(f"FAIL: pg-imgembed serve --provider {args.provider} did not start (its log: run it by hand)")
            return 2
        stack.callback(serve.stop)
        after = gpu_memory_mib()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"SET imgembed.inference_server = '{serve.url}'")
            served = [vector(conn.execute("SELECT img_embedding(%s, %s)::text", (p, args.model)).fetchone()[0]) for p in photos]
        cosine = min(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(served, expected))
        rows, _ = row_by_row(dsn, serve.url, photos, connections=16, model=args.model, dimensions=dimensions, memory=False)
        worker = worker_rate(dsn, serve.url, photos, args.model, dimensions)
    memory = f"{after - before} MiB" if before is not None and after is not None else "n/a (no nvidia-smi)"
    print(f"model {args.model} through pg-imgembed serve --provider {args.provider}, GPU memory of serve: {memory}")
    print(f"{'path (640x480)':36} {'images/s':>9} {'min cosine vs CPU':>18}")
    print(f"{'16 connections, sync trigger':36} {rows:9.1f} {cosine:18.6f}")
    print(f"{'worker (2 x batch 16)':36} {worker:9.1f} {cosine:18.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
