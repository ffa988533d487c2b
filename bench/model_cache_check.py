#!/usr/bin/env python3
"""What verifying a cached model file costs: the first use in a backend (size + sha256) against a
later one (the file's identity is remembered) and against opening the file unchecked, on a
100 MB file. Medians of several runs; prints a table, not a test."""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from pg_imgembed.onnx.file_cache import ModelFileCache

SIZE = 100 * 2**20
RUNS = 7


def median_ms(action, runs: int = RUNS) -> tuple[float, float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    data = os.urandom(SIZE)
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory() as root:
        directory = Path(root) / "cache"
        files = ModelFileCache(directory)
        with files.open_verified(sha, SIZE, lambda: data) as path:  # writes the file
            assert path is not None

        def first_use() -> None:
            files._verified.clear()  # a new backend: nothing verified yet
            with files.open_verified(sha, SIZE, lambda: data) as path:
                assert path is not None

        def later_use() -> None:
            with files.open_verified(sha, SIZE, lambda: data) as path:
                assert path is not None

        def unchecked() -> None:
            fd = os.open(directory / f"{sha}.onnx", os.O_RDONLY)
            os.fstat(fd)
            os.close(fd)

        def read_whole() -> None:  # what loading the model reads anyway
            Path(directory / f"{sha}.onnx").read_bytes()

        rows = [("open, unchecked (reference)", median_ms(unchecked)),
                ("read the whole file (what onnxruntime does next)", median_ms(read_whole)),
                ("first use in a backend: checks + sha256", median_ms(first_use)),
                ("later use in the same backend: checks, identity remembered", median_ms(later_use))]
    print(f"{SIZE / 2**20:.0f} MiB model file, {RUNS} runs each, page cache warm\n")
    print(f"{'':62} {'median ms':>10} {'min':>8} {'max':>8}")
    for label, (median, low, high) in rows:
        print(f"{label:62} {median:10.2f} {low:8.2f} {high:8.2f}")
    print(f"\nfirst use / reading the file: {rows[2][1][0] / rows[1][1][0]:.2f}x")


if __name__ == "__main__":
    main()
