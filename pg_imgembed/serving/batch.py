"""Embedding many images with one session: decoding overlapped with inference.

Pillow releases the GIL while it decodes and resizes, so a small thread pool prepares the next
images while onnxruntime runs on the current ones. Threads only touch Python and Pillow, never
the server's API.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..errors import ImageError
from ..image.tower import ImageTower
from ..model_stats import Meter
from ..settings import Settings

RUN_BATCH = 8  # images per onnxruntime call: enough to amortise the call, small in memory


def embed_many(model: ImageTower, images: Sequence[bytes | None], settings: Settings,
               failures: list[tuple[int, ImageError]] | None = None,
               decode_threads: int | None = None, meter: Meter | None = None) -> list[np.ndarray | None]:
    """One vector per image, None where the image is None. A bad image raises its ImageError
    with the 1-based array position in the detail, or, if ``failures`` is given, gets None and
    its (position, error) is appended there (and refused in ``meter``). Decoding uses
    ``decode_threads`` threads, by default as many as onnxruntime (at most 4: a backend shares
    the host)."""

    def prepare(position: int) -> np.ndarray | None:
        data = images[position]
        if data is None:
            return None
        try:
            img = model.decode(data, max_pixels=settings.max_image_pixels, exact=settings.force_exact_decode, meter=meter)
            return model.preprocess(img, exact=settings.force_exact_decode, meter=meter)
        except ImageError as exc:
            if failures is not None:
                failures.append((position, exc))
                if meter is not None:
                    meter.refuse(exc.sqlstate)
                return None
            exc.add_detail(f"array element {position + 1}")
            raise

    out: list[np.ndarray | None] = [None] * len(images)
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if pending:
            for (position, _), vector in zip(pending, model.run([t for _, t in pending], meter)):
                out[position] = vector
            if meter is not None:
                meter.images += len(pending)
            pending.clear()

    workers = max(1, decode_threads or min(settings.threads, 4))
    window = workers + RUN_BATCH  # decoded tensors in flight: bounded memory for any array size
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgembed-decode") as pool:
        in_flight: deque[tuple[int, Future[np.ndarray | None]]] = deque()

        def take_oldest() -> None:
            position, future = in_flight.popleft()
            tensor = future.result()  # re-raises the image's error, in array order
            if tensor is not None:
                pending.append((position, tensor))
            if len(pending) >= RUN_BATCH:
                flush()

        for position in range(len(images)):
            in_flight.append((position, pool.submit(prepare, position)))
            if len(in_flight) > window:
                take_oldest()
        while in_flight:
            take_oldest()
        flush()
    return out
