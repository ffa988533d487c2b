"""pg_imgembed: image embeddings computed inside PostgreSQL with ONNX models stored in a table.

The package is what the extension's PL/Python functions call; it never imports ``plpy`` at module
level, so everything except the thin server boundary (``backend/``) runs in a plain process too.

Layers, top to bottom; a module imports only from its own layer or the ones below it
(tests/test_layers.py checks both rules):

- ``client/``  outside PostgreSQL: the Python API, the CLI, the worker, ``serve``;
- ``backend/`` inside PostgreSQL only, the one layer that sees ``plpy``: the SQL functions' entry
  points (``backend.server``), triggers and backfill;
- ``serving/`` model name -> session -> vectors; the one caller of batches;
- ``store/``   every query on the extension's tables, over the ``Database`` protocol;
- ``text/``    the text tower;
- ``image/``   the image tower: decode, preprocessing, pipeline models;
- ``onnx/``    onnxruntime sessions, external data, model file cache, optimized graphs;
- the ground floor, imported by all: ``errors``, ``settings``, ``vectors``, ``json_checks``, ``model_stats``,
  ``catalog`` (data only: scripts/build_sql.py reads it without the client's dependencies).

SQL is written only in ``store/``, ``backend/`` and ``client/`` (the client's own connection to
the database); image, text, onnx, serving and the ground floor never query. ``server.py`` here
is only the entry point of the released, frozen install scripts (see its docstring).

A warm ``SELECT img_embedding(photo)``, file by file (``bench/call_paths.py`` lists them): the
PL/Python body calls ``backend/server.py``, which reads the settings (``settings.py``, through
``backend/postgres.py``'s ctypes view of the backend) and hands the call to
``serving/serving.py``; that looks the model up (``store/model_store.py``, one prepared query),
takes its cached session, counts the call (``model_stats.py``) and runs the image tower
(``image/tower.py``: ``image/decode.py``, then resize and crop in ``image/transforms.py``, then
onnxruntime); ``vectors.py`` writes the vector's text.
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
