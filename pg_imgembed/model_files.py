"""A per-server file cache of model bytes, keyed by sha256.

The first backend that needs a model writes it once to ``<data_directory>/pg_imgembed_models``
(mode 0600: only the server's user reads it); every later backend lets onnxruntime load the file
directly. That skips reading the bytea through SPI into Python (a second and third copy of the
model in the backend), which is most of the cold-start time and memory. Files are written to a
temporary name and renamed, so a reader never sees half a model; the sha256 is checked before
the rename.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

SUFFIX = ".onnx"


class ModelFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, sha256: str) -> Path:
        return self.directory / f"{sha256}{SUFFIX}"

    def get(self, sha256: str, fetch: Callable[[], bytes]) -> Path | None:
        """The cached file, written from ``fetch()`` if missing; None if it cannot be written."""
        path = self.path(sha256)
        if path.is_file():
            return path
        data = fetch()
        if hashlib.sha256(data).hexdigest() != sha256:
            return None  # never cache bytes that are not what the table says
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            temporary = self.directory / f".{sha256}.{os.getpid()}.tmp"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
            return path
        except OSError:
            return None  # a read-only or full disk: load from the bytes instead

    def discard(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def prune(self, keep: Iterable[str]) -> None:
        """Remove files of models no longer in the table."""
        wanted = {f"{sha}{SUFFIX}" for sha in keep}
        if self.directory.is_dir():
            for entry in self.directory.iterdir():
                if entry.suffix == SUFFIX and entry.name not in wanted:
                    entry.unlink(missing_ok=True)
