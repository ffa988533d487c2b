"""pg_imgembed: image embeddings computed inside PostgreSQL with ONNX models stored in a table.

The package is what the extension's PL/Python functions call; it never imports ``plpy`` at module
level, so everything except the thin server boundary (``server.py``) runs in a plain process too.
"""

import os as _os
import sys as _sys

__version__ = "0.6.0"

if "plpy" in _sys.modules:
    # Inside PL/Python, the runtime's pinned packages must win over the system's dist-packages,
    # whatever put this package on sys.path (0.1.0's install script appended it last): otherwise
    # the version check that names the upgrade commands would fail on Debian's numpy first.
    _site = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _sys.path[:] = [_site] + [entry for entry in _sys.path if entry != _site]
