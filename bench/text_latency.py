#!/usr/bin/env python3
"""text_embedding() latency for a CLIP ViT-B/32-sized text tower (12 layers, width 512, context 77,
random weights, bench/architectures.py) with CLIP's real tokenizer, on a throwaway local cluster.

Measured side by side, in one run:
- the first text_embedding in a new connection (the runtime is imported by a first cheap call,
  so this is the tower's session plus the query), and the imports of that first call;
- warm: distinct queries in one connection (the backend's last-query memo never answers);
- onnxruntime alone on the same ids, in this process, with the backend's threads: the floor;
- tokenization alone (tokenizers on the stored tokenizer.json).
Prints medians with min-max and ratios; run as root (it starts a cluster). A report, not a test.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from architectures import clip_text_b32

from tests import clip_models
from tests.devcluster import LocalCluster

QUERIES = [f"a photo of {what} {where}" for what in ("a dog", "a red bicycle", "two cats", "a receipt", "a mountain lake",
                                                      "a city street", "a birthday cake", "an old car")
           for where in ("on a beach", "at night", "in the snow", "next to a window", "from above", "in a museum")]
THREADS = 2  # imgembed.intra_op_threads as set below


def spread(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.2f} ms  [{min(values) * 1000:.2f}-{max(values) * 1000:.2f}]"


def main() -> None:
    tokenizer_json = (clip_models.tokenizer_dir() / "tokenizer.json").read_bytes()
    text_onnx = clip_text_b32()
    with LocalCluster() as cluster, psycopg.connect(cluster.dsn, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION pg_imgembed CASCADE")
        admin.execute(f"ALTER DATABASE {admin.info.dbname} SET imgembed.intra_op_threads = {THREADS}")
        admin.execute("SELECT imgembed.load_model('clip', %s, %s::jsonb)",
                      (clip_models.image_tower(512), json.dumps(clip_models.CLIP_PREPROCESSOR)))
        admin.execute("SELECT imgembed.load_text_model('clip', %s, %s, '{\"tokenizer\": {\"max_length\": 77}}')",
                      (text_onnx, tokenizer_json))
        imports, firsts = [], []
        for i in range(5):
            with psycopg.connect(cluster.dsn, autocommit=True) as conn:
                start = time.perf_counter()
                conn.execute("SELECT imgembed.version()")  # the runtime: interpreter and imports
                conn.execute("SELECT imgembed.runtime()")
                imports.append(time.perf_counter() - start)
                start = time.perf_counter()
                conn.execute("SELECT text_embedding('clip', %s)", (QUERIES[i],))
                firsts.append(time.perf_counter() - start)
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute("SELECT text_embedding('clip', 'warm up')")
            warm = []
            for query in QUERIES:
                start = time.perf_counter()
                conn.execute("SELECT text_embedding('clip', %s)", (query,))
                warm.append(time.perf_counter() - start)

    from pg_imgembed.text.config import parse_text_config
    from pg_imgembed.text.tower import TextModel

    model = TextModel(text_onnx, tokenizer_json, parse_text_config({"tokenizer": {"max_length": 77}}), threads=THREADS)
    feeds = [model.ids([q]) for q in QUERIES]
    alone, tokenize = [], []
    for _ in range(2):
        for query, feed in zip(QUERIES, feeds):
            start = time.perf_counter()
            model.session.run(["text_embeds"], feed)
            alone.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.tokenizer.encode(query)
            tokenize.append(time.perf_counter() - start)
    tokens = [int(f["attention_mask"].sum()) for f in feeds]
    print(f"text tower: CLIP ViT-B/32 shape, {len(text_onnx) / 1e6:.0f} MB, {THREADS} threads; "
          f"{len(QUERIES)} queries of {min(tokens)}-{max(tokens)} tokens\n")
    floor = statistics.median(alone)
    rows = [("imports of a new connection (first call)", imports), ("first text_embedding after them", firsts),
            ("text_embedding, warm", warm), ("onnxruntime alone on the ids", alone), ("tokenization alone", tokenize)]
    for label, values in rows:
        print(f"{label:42} {spread(values)}  {statistics.median(values) / floor:6.2f}x onnxruntime alone")
    print(f"\nwarm per query minus onnxruntime alone: {(statistics.median(warm) - floor) * 1000:.2f} ms "
          "(round trip, SQL wrapper, tokenization, vector text)")
    np.testing.assert_array_equal(model.ids([QUERIES[0]])["input_ids"], feeds[0]["input_ids"])


if __name__ == "__main__":
    main()
