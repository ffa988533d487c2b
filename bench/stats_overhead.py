#!/usr/bin/env python3
"""What imgembed.model_stats costs per call, against a 224x224 embedding, in one run (not a test).

- the recording alone, inside a backend: a Meter, the three timed steps and the ctypes call into
  shared memory, per call (µs), over many calls;
- img_embedding() of distinct 224x224 JPEGs with the architecture-exact ResNet-50 of
  bench/resnet50.py, the statistics on and off (``serving.stats = None``) in alternating rounds of
  the same session: median ms per image of each, their spread, and the ratio.

Needs a server where the statistics are on: PostgreSQL 17, or 15/16 with the preload (the
default throwaway cluster has it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg

from tests.devcluster import LocalCluster, fresh_database

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' and bench's model builders
from bench import resnet50
from tests import images

RECORD_US = """
CREATE OR REPLACE FUNCTION pg_temp.record_us(n integer) RETURNS float8 LANGUAGE plpython3u AS $$
import time
from pg_imgembed.model_stats import Meter, timed
stats = GD["imgembed"].serving.stats
if stats is None:
    plpy.error("the statistics are off in this server")
def once():
    meter = Meter()
    with timed(meter, "decode"):
        pass
    with timed(meter, "preprocess"):
        pass
    with timed(meter, "inference", 1):
        pass
    meter.images += 1
    stats.record("resnet50", "image", "function", meter)
start = time.perf_counter()
for _ in range(n):
    once()
return (time.perf_counter() - start) / n * 1e6
$$"""
STATS_ON = ("DO $$\nfrom pg_imgembed.model_stats import SharedStats\n"
            "GD['imgembed'].serving.stats = SharedStats.attached()\n$$ LANGUAGE plpython3u")
STATS_OFF = "DO $$\nGD['imgembed'].serving.stats = None\n$$ LANGUAGE plpython3u"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="server with pg_imgembed installed (default: a throwaway local cluster)")
    parser.add_argument("--images", type=int, default=24, help="distinct photos per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each, alternating")
    args = parser.parse_args()
    with ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(LocalCluster(settings={"shared_preload_libraries": "'pg_imgembed'"})).dsn
        run(fresh_database(dsn, "imgembed_bench_stats"), args.images, args.rounds)


def run(dsn: str, count: int, rounds: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_imgembed CASCADE")
        conn.execute("SELECT imgembed.load_model('resnet50', %s, '{\"template\": \"torchvision-resnet\"}')",
                     (resnet50.cached().read_bytes(),))
        conn.execute("CREATE TABLE photos (photo bytea)")
        for i in range(count):
            conn.execute("INSERT INTO photos VALUES (%s)", (images.jpeg(images.photo_like(224, 224, seed=i), quality=90),))
        query = "SELECT sum(vector_dims(img_embedding(photo, 'resnet50'))) FROM photos"
        conn.execute(query)  # warm: session, caches
        conn.execute(RECORD_US)
        record_us = [conn.execute("SELECT pg_temp.record_us(20000)").fetchone()[0] for _ in range(5)]
        timings: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(rounds):
            for state, switch in (("on", STATS_ON), ("off", STATS_OFF)):
                conn.execute(switch)
                start = time.perf_counter()
                conn.execute(query)
                timings[state].append((time.perf_counter() - start) / count * 1000)
        conn.execute(STATS_ON)
        (calls,) = conn.execute("SELECT sum(calls) FROM imgembed.model_stats").fetchone()

    on, off = statistics.median(timings["on"]), statistics.median(timings["off"])
    us = statistics.median(record_us)
    print(f"recording per call: {us:.2f} µs median of {len(record_us)} runs of 20000 "
          f"(spread {min(record_us):.2f}–{max(record_us):.2f})")
    print(f"img_embedding 224x224 ResNet-50, ms per image, median of {rounds} rounds of {count} photos:")
    print(f"  statistics on:  {on:.2f} (spread {min(timings['on']):.2f}–{max(timings['on']):.2f})")
    print(f"  statistics off: {off:.2f} (spread {min(timings['off']):.2f}–{max(timings['off']):.2f})")
    print(f"  on/off: {on / off:.4f}; recording alone / embedding: {us / 1000 / off:.5f} ({100 * us / 1000 / off:.3f}%)")
    print(f"  calls counted by the view: {calls}")


if __name__ == "__main__":
    main()
