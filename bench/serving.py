#!/usr/bin/env python3
"""Inference in the backends vs through ``pg-imgembed serve`` (Triton), in one run (prints a table; not a test).

The same architecture-exact ResNet-50 (random weights, bench/resnet50.py; template
torchvision-resnet) and 640x480 JPEGs (bench/throughput.py's photos), measured side by side:

- **row by row, 8 connections:** each INSERTs its share of the photos one row per statement into
  a table with a sync embedding trigger; images/s in-process and through serve, and the memory
  (PSS, /proc/PID/smaps_rollup) the 8 backends grew by beyond a backend with the runtime loaded
  (``imgembed.runtime()``: the client code, which any call loads), and of the server's processes
  (tritonserver and its Python stub);
- **the hop:** one ``img_embedding`` of a 224x224 photo (no resize work), in-process (with as many
  onnxruntime threads as serve) and through serve, alternated call by call; the difference of
  medians, with p10-p90 of each;
- **the worker:** concurrency 2, batch 16, draining a queue in-process and through serve.

Each figure is the median of ``--repeat`` rounds, each round running both placements in turn;
the spread is min-max over rounds. Uses a throwaway local cluster unless --dsn names one (run as
root: reads other processes' PSS). In-process backends use imgembed.intra_op_threads = 1 (8 of
them share the cores); serve runs one instance with as many onnxruntime threads as cores, since it
is the one process that infers for the host.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import psycopg
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import resnet50
from bench.throughput import photo
from pg_imgembed.client.worker import Options, Worker
from tests.devcluster import LocalCluster, free_port, fresh_database

MODEL = "resnet50"
CONNECTIONS = 8


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid] + [d for c in children for d in descendants(int(c))]


class Serve:
    def __init__(self, dsn: str, venv: str, queue_delay_us: int, model: str = MODEL, provider: str = "auto") -> None:
        self.ports = [free_port() for _ in range(3)]
        self.url = f"http://127.0.0.1:{self.ports[0]}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, "serve", model, "--triton-venv", venv,
             "--threads", str(os.cpu_count() or 1), "--queue-delay-us", str(queue_delay_us), "--provider", provider,
             "--http-port", str(self.ports[0]), "--grpc-port", str(self.ports[1]), "--metrics-port", str(self.ports[2])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit("pg-imgembed serve did not start") from None
                time.sleep(0.5)

    def pss_mib(self) -> float:
        """The server's processes other than the serve CLI itself (which only holds the repository's bytes)."""
        return sum(pss_kib(p) for p in descendants(self.process.pid)[1:]) / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def connect(dsn: str, server: str, threads: int = 1) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(f"SET imgembed.intra_op_threads = {threads}")
    if server:
        conn.execute(f"SET imgembed.inference_server = '{server}'")
    return conn


def row_by_row(dsn: str, server: str, photos: list[bytes], connections: int = CONNECTIONS, model: str = MODEL,
               dimensions: int = 2048, memory: bool = True) -> tuple[float, float]:
    """(images/s, MiB of PSS the backends grew by beyond the runtime (the package, numpy, Pillow,
    onnxruntime: what any call loads) after their first call and the run; 0 without ``memory``:
    other users' /proc/PID/smaps_rollup needs root with CAP_SYS_PTRACE, which containers drop)."""
    conns = [connect(dsn, server) for _ in range(connections)]
    for c in conns:
        c.execute("SELECT imgembed.runtime()")
    pss = pss_kib if memory else (lambda pid: 0)
    idle = statistics.median(pss(c.info.backend_pid) for c in conns)
    for n, c in enumerate(conns):
        c.execute(f"DROP TABLE IF EXISTS rows_{n}")
        c.execute(f"CREATE TABLE rows_{n} (id serial PRIMARY KEY, photo bytea, embedding vector({dimensions}))")
        c.execute("SELECT imgembed.create_embedding_trigger('rows_{}', 'photo', 'embedding', {})".format(n, f"'{model}'"))
        c.execute("SELECT img_embedding(%s, %s)", (photos[0], model))  # the first call: model (or client) ready
    start = threading.Barrier(connections + 1)

    def insert(n: int) -> None:
        start.wait()
        for p in photos[n::connections]:
            conns[n].execute(f"INSERT INTO rows_{n} (photo) VALUES (%s)", (p,))

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    rate = len(photos) / (time.perf_counter() - began)
    grown = sum(pss(c.info.backend_pid) - idle for c in conns) / 1024
    for c in conns:
        c.close()
    return rate, grown


def hop_ms(dsn: str, server: str, small: bytes, calls: int) -> tuple[list[float], list[float]]:
    local, remote = connect(dsn, "", os.cpu_count() or 1), connect(dsn, server)  # the same onnxruntime threads as serve's
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(calls + 5):
        for conn, out in ((local, times[0]), (remote, times[1])):
            image = small + i.to_bytes(4, "big")  # a new image each call: no memo
            began = time.perf_counter()
            conn.execute("SELECT img_embedding(%s, %s) IS NULL", (image, MODEL))
            if i >= 5:
                out.append((time.perf_counter() - began) * 1000)
    local.close()
    remote.close()
    return times


def worker_rate(dsn: str, server: str, photos: list[bytes], model: str = MODEL, dimensions: int = 2048) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS queued")
        conn.execute(f"CREATE TABLE queued (id serial PRIMARY KEY, photo bytea, embedding vector({dimensions}))")
        conn.execute(f"SELECT imgembed.create_embedding_trigger('queued', 'photo', 'embedding', '{model}', mode => 'async')")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO queued (photo) VALUES (%s)", [(p,) for p in photos])
    worker = Worker(dsn, Options(concurrency=2, batch_size=16, once=True, inference_server=server))
    began = time.perf_counter()
    worker.run()
    assert worker.done == len(photos), worker.done
    return len(photos) / (time.perf_counter() - began)


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="server with pg_imgembed installed (default: a throwaway local cluster)")
    parser.add_argument("--triton-venv", default=os.environ.get("PG_IMGEMBED_TRITON_VENV", ".triton-venv"))
    parser.add_argument("--images", type=int, default=96, help="photos per row-by-row and worker round (default 96)")
    parser.add_argument("--calls", type=int, default=60, help="img_embedding calls per placement for the hop (default 60)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--queue-delay-us", type=int, default=2000,
                        help="serve's wait for requests to batch (default 2000; it adds to a lone call's latency)")
    args = parser.parse_args()
    photos = [photo(640, 480, i) for i in range(16)]
    photos = [photos[i % len(photos)] + i.to_bytes(4, "big") for i in range(args.images)]  # distinct bytes, same pixels
    buf = io.BytesIO()
    Image.open(io.BytesIO(photos[0])).convert("RGB").resize((224, 224)).save(buf, format="JPEG", quality=90)
    with ExitStack() as stack:
        dsn = fresh_database(args.dsn or stack.enter_context(LocalCluster(settings={"max_connections": "40"})).dsn,
                            "imgembed_serving")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_imgembed CASCADE")
            conn.execute("SELECT * FROM imgembed.load_model(%s, %s, '{\"template\": \"torchvision-resnet\"}'::jsonb)",
                         (MODEL, resnet50.build()))
        serve = Serve(dsn, os.path.abspath(args.triton_venv), args.queue_delay_us)
        stack.callback(serve.stop)
        rows: dict[str, list[float]] = {k: [] for k in ("rows_local", "rows_serve", "mem_local", "mem_serve", "worker_local",
                                                         "worker_serve")}
        hops: tuple[list[float], list[float]] = ([], [])
        for _ in range(args.repeat):
            for place, server in (("local", ""), ("serve", serve.url)):
                rate, grown = row_by_row(dsn, server, photos)
                rows[f"rows_{place}"].append(rate)
                rows[f"mem_{place}"].append(grown)
                rows[f"worker_{place}"].append(worker_rate(dsn, server, photos))
            local, remote = hop_ms(dsn, serve.url, buf.getvalue(), args.calls)
            hops[0].extend(local)
            hops[1].extend(remote)
        server_mib = serve.pss_mib()
    ratio = [s / c for s, c in zip(rows["rows_serve"], rows["rows_local"])]
    wratio = [s / c for s, c in zip(rows["worker_serve"], rows["worker_local"])]
    q = lambda v: statistics.quantiles(v, n=10)
    print(f"ResNet-50 (random weights), {args.images} photos 640x480, {args.repeat} rounds, serve --queue-delay-us "
          f"{args.queue_delay_us}; median (min-max over rounds)")
    print(f"{'':44} {'in-process':>18} {'through serve':>18} {'serve / in-process':>20}")
    print(f"{'8 connections, sync trigger, images/s':44} {spread(rows['rows_local']):>18} {spread(rows['rows_serve']):>18} "
          f"{spread(ratio, '{:.2f}'):>20}")
    print(f"{'  8 backends beyond the runtime, MiB PSS':44} {spread(rows['mem_local']):>18} {spread(rows['mem_serve']):>18}")
    print(f"{'  per backend, MiB PSS':44} {statistics.median(rows['mem_local']) / CONNECTIONS:>18.1f} "
          f"{statistics.median(rows['mem_serve']) / CONNECTIONS:>18.1f}")
    print(f"{'  server processes, MiB PSS':44} {'-':>18} {server_mib:>18.0f}")
    print(f"{'worker (2 x batch 16), images/s':44} {spread(rows['worker_local']):>18} {spread(rows['worker_serve']):>18} "
          f"{spread(wratio, '{:.2f}'):>20}")
    local_q, remote_q = q(hops[0]), q(hops[1])
    print(f"{'one img_embedding at 224x224, ms (p10-p90)':44} "
          f"{statistics.median(hops[0]):>8.2f} ({local_q[0]:.1f}-{local_q[-1]:.1f}) "
          f"{statistics.median(hops[1]):>8.2f} ({remote_q[0]:.1f}-{remote_q[-1]:.1f})")
    print(f"{'  the hop: median through serve - in-process':44} {statistics.median(hops[1]) - statistics.median(hops[0]):>18.2f} ms")


if __name__ == "__main__":
    main()
