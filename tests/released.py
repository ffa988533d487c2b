"""Released versions' own code, for comparing what they stored with what this version does."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_0_4_0 = "9e21f94"  # the release commit of 0.4.0, the last version with the old preprocessing prefix

Builder = Callable[[bytes, dict], bytes]  # (plain model, config as load_model takes it) -> pipeline bytes


@contextmanager
def pipeline_builder(commit: str, workdir: Path) -> Iterator[Builder]:
    """The release's build_pipeline, its package imported from ``commit`` under a name of its own.
    Raises OSError or CalledProcessError where git or the commit is missing."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "pg_imgembed"], capture_output=True, check=True).stdout
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(workdir)
    package = f"pg_imgembed_{uuid.uuid4().hex[:8]}"
    (workdir / "pg_imgembed").rename(workdir / package)
    sys.path.insert(0, str(workdir))
    try:
        pipeline, config, templates = (importlib.import_module(f"{package}.{m}") for m in ("pipeline", "model_config", "templates"))
        yield lambda plain, raw: pipeline.build_pipeline(plain, config.parse_config(templates.expand_template(raw)))
    finally:
        sys.path.remove(str(workdir))
