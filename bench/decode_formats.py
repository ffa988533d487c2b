#!/usr/bin/env python3
"""Decode cost of phone formats: the same 12 MP pixels as JPEG, HEIC and AVIF (prints a table; not a test).

The photos are bench/throughput.py's 12 MP JPEGs (quality 90), re-encoded from their decoded
pixels as an iPhone writes HEIC (4032x3024 in 512-pixel tiles, quality 80; pillow-heif's x265,
a dev-only encoder) and as AVIF (Pillow, quality 75, speed 6). For each format:

- decode ms: ``decode_image`` alone in this process (the runtime's decoder), median per image; HEIC
  with libheif decoding its tiles on 1 thread and on its default (pi-heif: up to 4);
- backfill ms/image: ``CALL imgembed.backfill`` of a table of those photos with the ResNet-50 of
  bench/throughput.py, with ``imgembed.intra_op_threads`` 1 (one decode thread, one inference
  thread) and 2 (this bench's default: 2 decode threads, 2 inference threads).

Run alone: ``python bench/decode_formats.py`` (a throwaway cluster; the installed extension).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import psycopg
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import resnet50
from pg_imgembed.image.decode import decode_image, heif_decoder
from tests.devcluster import LocalCluster, fresh_database

SIZE = (4032, 3024)  # an iPhone's 12 MP
FORMATS = ("JPEG", "HEIC", "AVIF")
CACHE = resnet50.CACHE_DIR / "formats-v1"
MODEL = "resnet50"


def photos(count: int) -> dict[str, list[bytes]]:
    """``count`` photos in each format, the same pixels (cached: a 12 MP HEIC takes ~20 s to encode)."""
    from bench.throughput import photo

    out: dict[str, list[bytes]] = {fmt: [] for fmt in FORMATS}
    for i in range(count):
        jpeg = photo(*SIZE, i)
        out["JPEG"].append(jpeg)
        for fmt, encode in (("HEIC", _heic), ("AVIF", _avif)):
            path = CACHE / f"{i}.{fmt.lower()}"
            if not path.exists():
                CACHE.mkdir(parents=True, exist_ok=True)
                path.with_suffix(".tmp").write_bytes(encode(Image.open(io.BytesIO(jpeg)).convert("RGB")))
                path.with_suffix(".tmp").replace(path)
            out[fmt].append(path.read_bytes())
    return out


def _heic(img: Image.Image) -> bytes:
    import pillow_heif  # dev-only (GPL x265): makes the files, never decodes them here

    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, quality=80, tile_size=512, thumbnails=[320])
    return buf.getvalue()


def _avif(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="AVIF", quality=75, speed=6)
    return buf.getvalue()


def median_ms(run: Callable[[], object], per: int, repeat: int, reset: Callable[[], object] | None = None) -> tuple[float, float]:
    """Median and spread (max - min) of ``repeat`` runs, in ms per item."""
    totals = []
    for _ in range(repeat):
        if reset is not None:
            reset()
        start = time.perf_counter()
        run()
        totals.append((time.perf_counter() - start) / per * 1000)
    return statistics.median(totals), max(totals) - min(totals)


def measure(dsn: str, count: int, repeat: int) -> list[tuple[str, str, float, float]]:
    files = photos(count)
    heif = heif_decoder()
    rows: list[tuple[str, str, float, float]] = []
    default_threads = heif.options.DECODE_THREADS
    for fmt in FORMATS:
        for threads in ((1, default_threads) if fmt == "HEIC" else (None,)):
            if threads is not None:
                heif.options.DECODE_THREADS = threads
            decode_image(files[fmt][0], max_pixels=10**9)  # warm
            label = f"decode_image, libheif {threads} thread{'s' if threads != 1 else ''}" if threads else "decode_image"
            rows.append((fmt, label, *median_ms(lambda f=fmt: [decode_image(d, max_pixels=10**9) for d in files[f]],
                                                count, repeat)))
        heif.options.DECODE_THREADS = default_threads
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS pg_imgembed CASCADE")
        db.execute("SELECT * FROM imgembed.load_model(%s, %b, %s::jsonb)",
                   (MODEL, resnet50.cached().read_bytes(), json.dumps({"template": "torchvision-resnet"})))
        for fmt in FORMATS:
            table = f"photos_{fmt.lower()}"
            db.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, photo bytea, e vector(2048))")
            db.execute(f"ALTER TABLE {table} ALTER COLUMN photo SET STORAGE EXTERNAL")
            with db.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} VALUES (%s, %b)", list(enumerate(files[fmt])))
            for threads in (1, 2):
                db.execute(f"SET imgembed.intra_op_threads = {threads}")
                db.execute(f"CALL imgembed.backfill('{table}', 'photo', 'e', '{MODEL}')")  # warm
                rows.append((fmt, f"CALL backfill, intra_op_threads {threads}", *median_ms(
                    lambda t=table: db.execute(f"CALL imgembed.backfill('{t}', 'photo', 'e', '{MODEL}')"), count, repeat,
                    reset=lambda t=table: db.execute(f"UPDATE {t} SET e = NULL"))))
    return rows


def report(rows: list[tuple[str, str, float, float]], files: dict[str, list[bytes]]) -> None:
    sizes = ", ".join(f"{fmt} {statistics.mean(map(len, files[fmt])) / 2**20:.2f} MiB" for fmt in FORMATS)
    print(f"\ndecode of 12 MP photos ({SIZE[0]}x{SIZE[1]}), the same pixels in each format ({sizes}); "
          "ms per image, median (spread) of the runs\n")
    width = max(len(label) for _, label, _, _ in rows)
    for fmt, label, ms, spread in rows:
        print(f"  {fmt:5} {label:{width}} {ms:9.1f}  ({spread:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="server with pg_imgembed installed (default: a throwaway local cluster)")
    parser.add_argument("--images", type=int, default=3, help="photos per format (default 3)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, median taken (default 3)")
    args = parser.parse_args()
    with ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(LocalCluster()).dsn
        rows = measure(fresh_database(dsn, "imgembed_decode_formats"), args.images, args.repeat)
    report(rows, photos(args.images))


if __name__ == "__main__":
    main()
