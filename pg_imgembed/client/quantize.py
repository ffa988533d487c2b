"""INT8 pipeline models: a stored pipeline quantized statically (QDQ) by onnxruntime's quantization
tools, calibrated on the user's own images, stored as a new model, with a report measured on images
held out from the calibration.

Runs beside the database, not in it (``pip install 'pg_imgembed[client,build]'``): it needs onnx and
onnxruntime's quantizer, seconds of CPU and twice the model in memory, none of which belongs in a
backend. The images come from the user's query; they are decoded and preprocessed by the pipeline's
own code, so calibration sees exactly what the model will see.

Choices, measured on ResNet-50 here: unsigned 8-bit activations with signed 8-bit weights,
per-channel, MinMax calibration (3x faster than fp32 on VNNI CPUs; signed activations ran only
1.3x faster; Percentile and Entropy calibration took 2-2.5x longer for no better cosine). The
pipeline's own pre- and post-processing stays float (it is cheap and exact). On CPUs without VNNI,
``reduce_range`` keeps 8-bit products from saturating (onnxruntime's guidance), at some accuracy.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from ..errors import ImageError, InvalidConfig
from ..image.model_config import ModelConfig
from ..image.pipeline import one_opset_per_domain
from ..image.pipeline_spec import DERIVED_KEY
from ..image.tower import ImageTower
from ..onnx.optimized_graphs import cpu_features
from .models import LoadedModel, export_model, load_model

MIN_CALIBRATION = 8
MIN_HELD_OUT = 8
VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")
WRAPPER = "pg_imgembed/"  # tensors of the pipeline's own pre- and post-processing (pipeline.py)


@dataclass(frozen=True)
class QuantizationReport:
    source: str
    model: LoadedModel
    calibration_images: int
    held_out_images: int
    cosine_min: float
    cosine_median: float
    top10_overlap: float
    fp32_ms: float
    int8_ms: float
    instruction_set: str
    reduce_range: bool
    fp32_bytes: int
    int8_bytes: int

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms

    def lines(self) -> list[str]:
        return [
            f"quantized {self.source} -> {self.model.name}: {self.fp32_bytes / 1e6:.1f} MB -> {self.int8_bytes / 1e6:.1f} MB, "
            f"sha256 {self.model.sha256}",
            f"calibrated on {self.calibration_images} images; measured on {self.held_out_images} held-out images:",
            f"  cosine to {self.source}: min {self.cosine_min:.4f}, median {self.cosine_median:.4f}",
            f"  top-10 retrieval overlap with {self.source}: {self.top10_overlap:.3f}",
            f"  inference, batch 1: {self.fp32_ms:.1f} ms -> {self.int8_ms:.1f} ms ({self.speedup:.2f}x), "
            f"on {self.instruction_set}" + (" (reduce_range: no VNNI)" if self.reduce_range else ""),
        ]


def quantize_model(conn: psycopg.Connection[Any], source: str, name: str, calibrate: str, *, samples: int = 64,
                   held_out: int = 64, replace: bool = False, threads: int = 2,
                   progress: Callable[[str], None] | None = None) -> QuantizationReport:
    """Quantize stored model ``source`` into a new model ``name``, calibrated on the images the
    query ``calibrate`` returns (its first column, bytea): ``samples`` of them calibrate, up to
    ``held_out`` further ones measure the result."""
    say = progress or (lambda message: None)
    if samples < MIN_CALIBRATION or held_out < MIN_HELD_OUT:
        raise InvalidConfig(f"calibrate on at least {MIN_CALIBRATION} images and measure on at least {MIN_HELD_OUT}, "
                            f"not {samples} and {held_out}")
    with tempfile.TemporaryDirectory(prefix="pg_imgembed-quantize-") as tmp:
        work = Path(tmp)
        size, sha = export_model(conn, source, work / "fp32.onnx")
        fp32 = ImageTower(work / "fp32.onnx", ModelConfig(), threads=threads)
        if fp32.pipeline_spec is None:
            raise InvalidConfig(f'model "{source}" is not a pipeline model', hint="Load it again with imgembed.load_model.")
        tensors = calibration_tensors(conn, fp32, calibrate, samples + held_out)
        count = len(tensors)
        if count < MIN_CALIBRATION + MIN_HELD_OUT:
            raise InvalidConfig(
                f"the calibration query gave {count} usable images; quantizing needs at least "
                f"{MIN_CALIBRATION + MIN_HELD_OUT}: {MIN_CALIBRATION} to calibrate and {MIN_HELD_OUT} to measure the result on",
                hint="Widen the query (more rows, or rows whose first column is an image).")
        calibration = tensors[:min(samples, count - MIN_HELD_OUT)]
        evaluation = tensors[len(calibration):len(calibration) + held_out]
        vnni = next((flag for flag in VNNI if flag in cpu_features()), None)
        say(f"calibrating on {len(calibration)} images ...")
        derived = {"model": source, "sha256": sha,
                   "method": "onnxruntime static QDQ, uint8 activations, int8 per-channel weights, MinMax",
                   "calibration": {"query": calibrate, "images": len(calibration)}}
        int8_bytes = quantize_pipeline(work, fp32, calibration, reduce_range=vnni is None, derived=derived)
        int8 = ImageTower(int8_bytes, ModelConfig(), threads=threads)
        say(f"measuring on {len(evaluation)} held-out images ...")
        cosine, overlap, fp32_ms, int8_ms = compare(fp32, int8, evaluation)
        loaded = load_model(conn, name, int8_bytes, replace=replace)
    instruction_set = vnni or "no VNNI (" + (", ".join(cpu_features()) or "no vector extensions found") + ")"
    return QuantizationReport(source, loaded, len(calibration), len(evaluation), float(cosine.min()), float(np.median(cosine)),
                              overlap, fp32_ms, int8_ms, instruction_set, vnni is None, size, len(int8_bytes))


def calibration_tensors(conn: psycopg.Connection[Any], model: ImageTower, query: str, limit: int) -> list[np.ndarray]:
    """The pipeline inputs of the query's first ``limit`` images (first column), decoded as the
    model decodes; NULLs and unusable images are skipped. A server-side cursor streams the rows,
    so a query over a whole table reads only what is used."""
    tensors: list[np.ndarray] = []
    with conn.transaction(), conn.cursor(name="pg_imgembed_calibration") as cur:
        cur.itersize = 16
        cur.execute(query)
        for (data, *_) in cur:
            if data is None:
                continue
            if not isinstance(data, bytes | memoryview | bytearray):
                raise InvalidConfig(f"the calibration query's first column is {type(data).__name__}, not bytea images")
            try:
                tensors.append(model.preprocess(model.decode(bytes(data), max_pixels=100_000_000)))
            except ImageError:
                continue
            if len(tensors) >= limit:
                break
    return tensors


def quantize_pipeline(work: Path, fp32: ImageTower, calibration: Sequence[np.ndarray], *, reduce_range: bool,
                      derived: dict[str, Any]) -> bytes:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(work / "fp32.onnx"))
    one_opset_per_domain(model)  # pipelines stored by 0.1.0 list their opset twice
    for i, node in enumerate(model.graph.node):  # the quantizer excludes nodes by name
        node.name = node.name or f"node_{i}"
    wrapper = [node.name for node in model.graph.node if any(o.startswith(WRAPPER) for o in node.output)]
    input_name = fp32.geometry.name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            tensor = next(self.items, None)
            return None if tensor is None else {input_name: tensor[None]}

    # The quantizer logs advice on the root logger ("consider pre-processing": the pipeline's graph
    # is quantized as built, which measured as accurate); a CLI should print only the report.
    logging.disable(logging.WARNING)
    try:
        quantize_static(model, work / "int8.onnx", Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=wrapper)
    finally:
        logging.disable(logging.NOTSET)
    quantized = onnx.load(str(work / "int8.onnx"))
    properties = {p.key: p.value for p in fp32_metadata(work / "fp32.onnx")}
    properties[DERIVED_KEY] = json.dumps(derived)
    onnx.helper.set_model_props(quantized, properties)
    return quantized.SerializeToString()


def fp32_metadata(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).metadata_props)


def compare(fp32: ImageTower, int8: ImageTower, tensors: Sequence[np.ndarray]) -> tuple[np.ndarray, float, float, float]:
    """Cosine per image, mean top-10 overlap of each image's neighbours among the others, and the
    median inference time of each model (batch 1, interleaved so both see the same machine)."""
    times: dict[int, list[float]] = {0: [], 1: []}
    vectors: dict[int, list[np.ndarray]] = {0: [], 1: []}
    for tensor in tensors:
        for i, model in enumerate((fp32, int8)):
            start = time.perf_counter()
            vectors[i].append(model.run([tensor])[0])
            times[i].append(time.perf_counter() - start)
    a, b = np.array(vectors[0]), np.array(vectors[1])
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    k = min(10, len(tensors) - 1)
    overlaps = []
    for q in range(len(tensors)):
        near_a = [i for i in np.argsort(-(a @ a[q])) if i != q][:k]
        near_b = [i for i in np.argsort(-(b @ b[q])) if i != q][:k]
        overlaps.append(len(set(near_a) & set(near_b)) / k)
    return cosine, float(np.mean(overlaps)), statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000
