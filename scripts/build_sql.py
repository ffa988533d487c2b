#!/usr/bin/env python3
"""Assemble the extension's install script from sql/*.sql.

Replaces each ``#bootstrap`` line in PL/Python bodies with the preamble below, and fills in the
version and the default runtime directory. The preamble runs once per backend: it refuses
to start in parallel mode (SPI there breaks the backend), loads the settings module, reads
``imgembed.runtime_dir``, puts the runtime's site-packages first on ``sys.path`` and keeps the
package's ``Server`` in ``GD``.
"""

import argparse
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pg_imgembed.catalog import CATALOG  # noqa: E402  (pure data modules: no heavy imports)
from pg_imgembed.templates import TEMPLATES  # noqa: E402
PARTS = ["schema.sql", "functions.sql"]

PREAMBLE = '''\
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "@VERSION@", _root)'''


def version() -> str:
    text = (ROOT / "pg_imgembed" / "__init__.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def data_views() -> str:
    """imgembed.templates and imgembed.catalog, from the package's own lists."""
    templates = ",\n  ".join(
        f"({literal(t.name)}, {literal(t.description)}, {literal(json.dumps(t.config))}::jsonb)" for t in TEMPLATES.values())
    catalog = ",\n  ".join(
        "(" + ", ".join(literal(v) for v in (m.model_id, m.template, m.dimensions, m.license, m.onnx_file, m.output, m.notes)) + ")"
        for m in CATALOG)
    return (f"CREATE VIEW imgembed.templates AS SELECT * FROM (VALUES\n  {templates}\n) t(name, description, config);\n"
            "COMMENT ON VIEW imgembed.templates IS 'Preprocessing templates: load_model(..., config => ''{\"template\": \"clip\"}'')';\n"
            "GRANT SELECT ON imgembed.templates TO PUBLIC;\n"
            f"CREATE VIEW imgembed.catalog AS SELECT * FROM (VALUES\n  {catalog}\n) "
            "c(model_id, template, dimensions, license, onnx_file, output, notes);\n"
            "COMMENT ON VIEW imgembed.catalog IS 'Known models: pg-imgembed models load NAME --catalog MODEL_ID';\n"
            "GRANT SELECT ON imgembed.catalog TO PUBLIC;\n")


def build(runtime_dir: str) -> str:
    header = '\\echo Use "CREATE EXTENSION pg_imgembed CASCADE" to load this file. \\quit\n'
    body = "\n".join((ROOT / "sql" / part).read_text() for part in PARTS)
    body = re.sub(r"^#bootstrap$", PREAMBLE, body, flags=re.M)
    body = body.replace("-- @data_views@", data_views())
    return header + body.replace("@VERSION@", version()).replace("@RUNTIME_DIR@", runtime_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runtime-dir", default="/usr/local/lib/pg_imgembed")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--output", type=pathlib.Path)
    args = parser.parse_args()
    if args.version:
        print(version())
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        new = build(args.runtime_dir)
        if not args.output.exists() or args.output.read_text() != new:
            args.output.write_text(new)
