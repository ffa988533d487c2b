"""Where the server's Python packages come from: the runtime's pinned ones, never the system's.

PL/Python embeds the system's Python, whose ``dist-packages`` may hold Debian's numpy, Pillow or
protobuf. The bootstrap puts the runtime first on ``sys.path``; a package imported before it (by
another PL/Python function of the same session) or found elsewhere is an environment fault,
reported as such (SQLSTATE 58P01, naming the module and the path it came from), never as a bad
model or image later.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from ..errors import RuntimeShadowed

# Import names of the packages the runtime pins (requirements-runtime.txt) and what they pull in.
RUNTIME_MODULES = ("numpy", "PIL", "pi_heif", "onnxruntime", "onnx", "google.protobuf", "tokenizers")


def site_packages() -> str:
    """The runtime's site-packages: where this package itself was imported from."""
    import pg_imgembed

    return os.path.dirname(os.path.dirname(os.path.abspath(pg_imgembed.__file__)))


def origin(module: str) -> str | None:
    """The file a module was (or would be) imported from, without importing it."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        return getattr(loaded, "__file__", None)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None else None


def from_runtime(path: str | None, site: str) -> bool:
    return path is not None and os.path.abspath(path).startswith(site + os.sep)


def check_isolated() -> None:
    """Raise RuntimeShadowed for the first runtime module that would not come from the runtime."""
    site = site_packages()
    for module in RUNTIME_MODULES:
        path = origin(module)
        if not from_runtime(path, site):
            raise RuntimeShadowed(
                f"the runtime's Python module {module} comes from {path or 'nowhere'}, not from {site}",
                detail="Another copy (for example Debian's python3-* package) would be used instead of the pinned one.",
                hint="If another PL/Python function imported it first in this session, reconnect and call "
                "pg_imgembed first; otherwise run make install to repair the runtime.",
            )


def packages() -> dict[str, dict[str, object]]:
    """Version and origin of each runtime module (imported), flagging any not from the runtime."""
    site = site_packages()
    report: dict[str, dict[str, object]] = {}
    for module in RUNTIME_MODULES:
        path = origin(module)
        try:
            version = getattr(importlib.import_module(module), "__version__", None)
        except ImportError as exc:
            version = f"cannot import: {exc}"
        report[module] = {"version": version, "path": path, "from_runtime": from_runtime(path, site)}
    return report
