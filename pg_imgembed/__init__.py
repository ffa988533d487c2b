"""pg_imgembed: image embeddings computed inside PostgreSQL with ONNX models stored in a table.

The package is what the extension's PL/Python functions call; it never imports ``plpy`` at module
level, so everything except the thin server boundary (``server.py``) runs in a plain process too.
"""

__version__ = "0.2.0"
