#!/usr/bin/env python3
"""The preprocessing prefix of pipeline models: this version's against 0.4.0's (prints a table; not a test).

For every template and a Hugging Face processor config, both builders wrap the same plain model;
the prefix (uint8 NHWC ``image`` -> the model's input) is cut out of each pipeline and timed on
one onnxruntime thread, batch 8 of 224x224 images, and compared with the same arithmetic in
float64 numpy. Then onnxruntime's profiler shows where a whole small pipeline spends its time,
before and after. No database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pg_imgembed.image.model_config import parse_config
from pg_imgembed.image.pipeline import build_pipeline
from pg_imgembed.image.templates import TEMPLATES, expand_template
from tests import clip_models, onnx_models
from tests.released import PIPELINE_0_4_0, pipeline_builder

SIZE, BATCH = 224, 8
CONFIGS = {name: {"template": name, "output": {"pooling": "auto"}} for name in TEMPLATES}
CONFIGS["hf CLIPImageProcessor"] = clip_models.CLIP_PREPROCESSOR


def options(profile: Path | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    if profile is not None:
        opts.enable_profiling, opts.profile_file_prefix = True, str(profile)
    return opts


def prefix_of(pipeline: bytes) -> bytes:
    model = onnx.load_from_string(pipeline)
    return onnx.utils.Extractor(model).extract_model(["image"], ["pg_imgembed/pixels"]).SerializeToString()


def time_ms(session: ort.InferenceSession, feed: dict, runs: int) -> list[float]:
    for _ in range(5):
        session.run(None, feed)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        timings.append((time.perf_counter() - start) / BATCH * 1000)
    return timings


def reference(config: dict, pixels: np.ndarray) -> np.ndarray:
    pre = parse_config(expand_template(config)).preprocess
    x = pixels.astype(np.float64) * (1.0 if pre.rescale is None else pre.rescale)
    x = (x - np.array(pre.mean or (0, 0, 0))) / np.array(pre.std or (1, 1, 1))
    if pre.channel_order == "BGR":
        x = x[..., ::-1]
    return x.transpose(0, 3, 1, 2) if (pre.layout or "NCHW") == "NCHW" else x


def plain_for(config: dict) -> bytes:
    nhwc = expand_template(config).get("preprocess", {}).get("layout") == "NHWC"
    return onnx_models.conv_net(SIZE, SIZE, layout="NHWC" if nhwc else "NCHW")


def profile(pipeline: bytes, workdir: Path, tag: str, pixels: np.ndarray) -> dict[str, float]:
    """Microseconds per image by node type over 20 runs (onnxruntime's own profiler)."""
    session = ort.InferenceSession(pipeline, options(workdir / tag), providers=["CPUExecutionProvider"])
    for _ in range(20):
        session.run(None, {"image": pixels})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 20 / len(pixels)
    return by_op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per prefix (default 30)")
    args = parser.parse_args()
    pixels = np.random.default_rng(0).integers(0, 256, (BATCH, SIZE, SIZE, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="pg_imgembed-prefix-") as tmp, pipeline_builder(PIPELINE_0_4_0, Path(tmp)) as old_builder:
        workdir = Path(tmp)
        print(f"prefix ms/image, 1 thread, batch {BATCH} of {SIZE}x{SIZE}: median (min-max) over {args.runs} runs; "
              "max abs difference to float64 numpy\n")
        print(f"{'config':26}{'0.4.0':>22}{'this version':>22}{'ratio':>8}{'max abs 0.4.0':>15}{'max abs now':>13}")
        ratios, worst = [], 0.0
        for name, config in CONFIGS.items():
            plain, parsed = plain_for(config), parse_config(expand_template(config))
            want = reference(config, pixels)
            row = []
            for pipeline in (old_builder(plain, config), build_pipeline(plain, parsed)):
                session = ort.InferenceSession(prefix_of(pipeline), options(), providers=["CPUExecutionProvider"])
                timings = time_ms(session, {"image": pixels}, args.runs)
                error = float(np.abs(session.run(None, {"image": pixels})[0] - want).max())
                row.append((statistics.median(timings), min(timings), max(timings), error))
            (old, old_lo, old_hi, old_err), (new, new_lo, new_hi, new_err) = row
            ratios.append(old / new)
            worst = max(worst, new)
            print(f"{name:26}{old:8.3f} ({old_lo:.3f}-{old_hi:.3f}){new:8.3f} ({new_lo:.3f}-{new_hi:.3f})"
                  f"{old / new:7.1f}x{old_err:15.1e}{new_err:13.1e}")

        config = {"template": "torchvision-resnet"}
        plain = onnx_models.conv_net(SIZE, SIZE)
        print(f"\nprofile of a whole pipeline (a one-layer conv net at {SIZE}x{SIZE}, {config}), us/image by node type:")
        before = profile(old_builder(plain, config), workdir, "before", pixels)
        after = profile(build_pipeline(plain, parse_config(expand_template(config))), workdir, "after", pixels)
        for op in sorted(set(before) | set(after), key=lambda o: -max(before.get(o, 0), after.get(o, 0))):
            print(f"  {op:22}{before.get(op, 0):9.1f}{after.get(op, 0):9.1f}")
        print(f"  {'total':22}{sum(before.values()):9.1f}{sum(after.values()):9.1f}")
    print("\ntargets")
    print(f"  {'PASS' if worst <= 0.3 else 'FAIL'}  slowest prefix {worst:.3f} ms/image <= 0.3 ms")
    print(f"  speed-up over 0.4.0's prefix: {min(ratios):.1f}x to {max(ratios):.1f}x")


if __name__ == "__main__":
    main()
