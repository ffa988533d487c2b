#!/usr/bin/env python3
"""Should ``preprocess.decode`` default to "fast" or "exact"? Evidence from a real model (prints
tables; not a test).

"fast" lets libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale (``Image.draft``), never below twice the
size the resize step needs, instead of decoding every pixel and then downscaling, and resamples only
what the centre crop keeps. That saves most of the decode time of a large photo, but the pixels
reaching the model differ slightly (DCT-domain downscaling, then a shorter resize), so the
embedding moves. Whether that matters is a question of
retrieval, so this measures, on a set of real photos re-encoded at 0.3, 2 and 12 MP, with
crops/flips/rotations/grain as near-duplicates:

- speed: median ms per image for decode+preprocess alone (what the mode changes) and for the whole
  embed (decode+preprocess+inference), exact vs fast;
- drift: cosine between the exact and the fast embedding of each photo (min / median per size);
- retrieval: every photo queries the others (top-10 by cosine). Rankings from fast embeddings,
  and from the mixed case (a database embedded in one mode queried in the other), are compared
  with the all-exact ranking: mean top-10 overlap and the share of queries whose top-1 is
  unchanged. Also the share of each top-10 that is the query's own base photo (quality, not
  agreement).

Caveat: the base photos are small (225-1000 px), so the 2 and 12 MP versions are LANCZOS
upscales, smoother than real camera output; the "grain" variant adds pixel noise to restore some
high-frequency content, the part that DCT-scaled decoding treats differently.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pg_imgembed.image.model_config import parse_config
from pg_imgembed.image.tower import ImageTower

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"0.3MP": 640 * 480, "2MP": 1920 * 1080, "12MP": 4000 * 3000}  # target pixel counts
MAX_PIXELS = 10**8
TOP_K = 10


def _crop(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.crop((int(w * 0.10), int(h * 0.05), int(w * 0.85), int(h * 0.80)))


def _rotate(img: Image.Image) -> Image.Image:
    w, h = img.size  # rotate 4 degrees, then cut away the black corners
    rotated = img.rotate(4, resample=Image.Resampling.BICUBIC)
    return rotated.crop((int(w * 0.06), int(h * 0.06), int(w * 0.94), int(h * 0.94)))


def _grain(img: Image.Image) -> Image.Image:
    pixels = np.asarray(img, dtype=np.float32)
    noise = np.random.default_rng(0).normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), img.mode)


VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "orig": lambda img: img, "crop": _crop, "flip": ImageOps.mirror, "rot4": _rotate,
    "grain": lambda img: img,  # the noise is added at the target size (``_grain``), not upscaled
}


@dataclass(frozen=True)
class Photo:
    base: str  # the source photo: images of one base are near-duplicates
    variant: str
    size: str
    data: bytes


def build_photo_set(sources: list[Path], out_dir: Path) -> list[Photo]:
    """Each source x variant x size, JPEG quality 90; grain is added at the target size."""
    photos = []
    for src in sources:
        base = Image.open(src)
        base = base.convert("RGB") if base.mode not in ("RGB", "L") else base
        for variant, make in VARIANTS.items():
            content = make(base)
            for size, pixels in SIZES.items():
                w, h = content.size
                scale = (pixels / (w * h)) ** 0.5
                img = content.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
                if variant == "grain":
                    img = _grain(img)
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=90)
                (out_dir / f"{src.stem}-{variant}-{size}.jpg").write_bytes(buf.getvalue())
                photos.append(Photo(src.stem, variant, size, buf.getvalue()))
    return photos


@dataclass
class Result:
    vectors: np.ndarray  # (N, D), L2-normalised
    prep_ms: list[float]  # decode + preprocess
    total_ms: list[float]  # decode + preprocess + inference
    decoded: list[tuple[int, int]]  # size of the decoded image


def embed_all(model: ImageTower, photos: list[Photo], exact: bool, repeat: int) -> Result:
    vectors, prep_ms, total_ms, decoded = [], [], [], []
    for photo in photos:
        best_prep = best_total = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            img = model.decode(photo.data, max_pixels=MAX_PIXELS, exact=exact)
            tensor = model.preprocess(img)
            mid = time.perf_counter()
            vector = model.run([tensor])[0]
            end = time.perf_counter()
            best_prep, best_total = min(best_prep, mid - start), min(best_total, end - start)
        vectors.append(vector)
        prep_ms.append(best_prep * 1000)
        total_ms.append(best_total * 1000)
        decoded.append(img.size)
    return Result(np.stack(vectors), prep_ms, total_ms, decoded)


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of each query's k nearest corpus rows by cosine, the query itself excluded."""
    sims = queries @ corpus.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def compare(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Mean top-k overlap and share of unchanged top-1 between two rankings."""
    overlap = np.mean([len(set(a) & set(b)) / a.size for a, b in zip(reference, other)])
    return float(overlap), float(np.mean(reference[:, 0] == other[:, 0]))


def same_base_precision(ranking: np.ndarray, photos: list[Photo]) -> tuple[float, float]:
    """Share of the top-k, and of the top-1, that is a near-duplicate of the query."""
    hits = np.array([[photos[j].base == photos[i].base for j in row] for i, row in enumerate(ranking)])
    return float(hits.mean()), float(hits[:, 0].mean())


def _median(values: list[float], idx: list[int]) -> float:
    return statistics.median(values[i] for i in idx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / ".demo/efficientnet-lite0.onnx")
    parser.add_argument("--config", type=Path, default=ROOT / ".demo/efficientnet-lite0.json")
    parser.add_argument("--photos", type=Path, default=ROOT / ".demo/photos", help="folder of base JPEGs")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--repeat", type=int, default=2, help="timing runs per image (the fastest counts)")
    parser.add_argument("--min-overlap", type=float, default=0.95, help="fast is recommended above this ...")
    parser.add_argument("--min-cosine", type=float, default=0.999, help="... and this")
    args = parser.parse_args()

    config = parse_config(json.loads(args.config.read_text())).with_preprocess(decode="fast")
    model = ImageTower(args.model.read_bytes(), config, threads=args.threads)
    sources = sorted(args.photos.glob("*.jpg"))
    with tempfile.TemporaryDirectory(prefix="fast_decode_") as tmp:
        start = time.perf_counter()
        photos = build_photo_set(sources, Path(tmp))
        print(f"{len(photos)} JPEGs ({len(sources)} photos x {len(VARIANTS)} variants x {len(SIZES)} sizes) "
              f"built in {time.perf_counter() - start:.0f} s; model {args.model.name}, "
              f"draft size {model.draft_size}, onnxruntime threads={args.threads}\n")
    model.embed(photos[0].data, max_pixels=MAX_PIXELS)  # warm-up
    exact = embed_all(model, photos, exact=True, repeat=args.repeat)
    fast = embed_all(model, photos, exact=False, repeat=args.repeat)
    cosines = np.sum(exact.vectors * fast.vectors, axis=1)

    print(f"{'size':6} {'n':>3} {'fast decodes at':>16} | {'decode+preprocess ms':^26} | "
          f"{'end-to-end embed ms':^26} | {'cos(exact, fast)':^17}")
    print(f"{'':6} {'':>3} {'scale:images':>16} | {'exact':>8} {'fast':>8} {'speedup':>8} | "
          f"{'exact':>8} {'fast':>8} {'speedup':>8} | {'min':>8} {'median':>8}")
    speedups: dict[str, float] = {}
    for size in SIZES:
        idx = [i for i, p in enumerate(photos) if p.size == size]
        scales = Counter(round(exact.decoded[i][0] / fast.decoded[i][0]) for i in idx)
        scale_text = " ".join(f"1/{k}:{n}" for k, n in sorted(scales.items()))
        prep = (_median(exact.prep_ms, idx), _median(fast.prep_ms, idx))
        total = (_median(exact.total_ms, idx), _median(fast.total_ms, idx))
        speedups[size] = total[0] / total[1]
        print(f"{size:6} {len(idx):3} {scale_text:>16} | "
              f"{prep[0]:8.1f} {prep[1]:8.1f} {prep[0] / prep[1]:7.1f}x | "
              f"{total[0]:8.1f} {total[1]:8.1f} {speedups[size]:7.1f}x | "
              f"{cosines[idx].min():8.5f} {np.median(cosines[idx]):8.5f}")

    worst = int(np.argmin(cosines))
    print(f"\nlowest cosine {cosines[worst]:.5f}: {photos[worst].base}-{photos[worst].variant}-{photos[worst].size}")
    for variant in VARIANTS:
        idx = [i for i, p in enumerate(photos) if p.variant == variant and p.size != "0.3MP"]
        print(f"  {variant:5} (2 + 12 MP): min cosine {cosines[idx].min():.5f}, median {np.median(cosines[idx]):.5f}")

    by_key = {(p.base, p.variant, p.size): i for i, p in enumerate(photos)}
    same_content = np.array([exact.vectors[by_key[(p.base, p.variant, "2MP")]] @ exact.vectors[i]
                             for i, p in enumerate(photos) if p.size == "12MP"])
    print(f"  for scale, exact 2 MP vs exact 12 MP JPEG of the same content: min cosine "
          f"{same_content.min():.5f}, median {np.median(same_content):.5f}")

    reference = top_k(exact.vectors, exact.vectors)
    cases = {
        "exact query, exact corpus (reference)": reference,
        "fast query, fast corpus": top_k(fast.vectors, fast.vectors),
        "fast query, exact corpus (mixed)": top_k(fast.vectors, exact.vectors),
        "exact query, fast corpus (mixed)": top_k(exact.vectors, fast.vectors),
    }
    print(f"\nretrieval, {len(photos)} queries, top-{TOP_K} among the other photos "
          f"(each photo has {len(photos) // len(sources) - 1} near-duplicates)")
    print(f"{'ranking (vs the reference)':40} {'top-10 overlap':>14} {'top-1 same':>11} "
          f"{'near-dup precision@10':>22} {'@1':>6}")
    overlaps = []
    for name, ranking in cases.items():
        overlap, top1 = compare(reference, ranking)
        if ranking is not reference:
            overlaps.append(overlap)
        precision, precision_1 = same_base_precision(ranking, photos)
        print(f"{name:40} {overlap:14.3f} {top1:11.3f} {precision:22.3f} {precision_1:6.3f}")

    min_overlap, min_cos = min(overlaps), float(cosines.min())
    ok = min_overlap >= args.min_overlap and min_cos >= args.min_cosine
    print(f"\nrecommendation: default decode = {'fast' if ok else 'exact'} — worst mean top-10 overlap "
          f"{min_overlap:.3f} (need >= {args.min_overlap}), min cosine {min_cos:.5f} (need >= {args.min_cosine}), "
          f"end-to-end speedup at 12 MP {speedups['12MP']:.1f}x")


if __name__ == "__main__":
    main()
