#!/usr/bin/env python3
"""Assemble the extension's scripts from sql/.

sql/ is split the way pgai splits its extension:

- ``incremental/NNN-<version>.sql``: tables, their changes, grants and policies; each file runs
  exactly once in a database's life, in order (a fresh install runs them all);
- ``idempotent/*.sql``: functions and views by feature, ``CREATE OR REPLACE``, run by every
  install and every update;
- ``upgrade/<from>--<to>.sql``: what an update must drop before the idempotent part recreates it
  with another signature;
- ``released/pg_imgembed--<version>.sql``: install scripts of released versions, frozen.

Frozen means byte for byte: ``frozen.txt`` holds the sha256 of every released install script and
of every incremental file of a released version (``sha256sum`` format, paths under sql/), and the
build refuses to run when one differs or is missing. A release adds its files with
``scripts/build_sql.py --freeze sql/incremental/NNN-<version>.sql sql/released/pg_imgembed--<version>.sql``.

Built: ``pg_imgembed--<current>.sql`` (incremental + idempotent), every released install script,
and ``pg_imgembed--<released>--<current>.sql`` for each released version (its upgrade drops, the
incremental files after it, idempotent). Each ``#bootstrap`` line in PL/Python bodies becomes the
preamble below; the version and the default runtime directory are filled in. The preamble runs once per backend: it refuses
to start in parallel mode (SPI there breaks the backend), loads the settings module, reads
``imgembed.runtime_dir``, puts the runtime's site-packages first on ``sys.path`` and keeps the
package's ``Server`` in ``GD``.
"""

import argparse
import hashlib
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pg_imgembed.catalog import CATALOG
from pg_imgembed.image.templates import TEMPLATES

SQL = ROOT / "sql"
FROZEN = SQL / "frozen.txt"
# Order matters only where one feature's objects use another's: the models view comes first.
IDEMPOTENT = ["models.sql", "privileges.sql", "embedding.sql", "text.sql", "triggers.sql", "lineage.sql", "queue.sql",
              "stats.sql"]
HEADER = '\\echo Use "CREATE EXTENSION pg_imgembed CASCADE" to load this file. \\quit\n'

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
        from pg_imgembed.backend import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "@VERSION@", _root)'''


# "#reraise" in a PL/pgSQL wrapper: re-raise pg_imgembed's own errors (PL/Python prefixed them
# with "pg_imgembed: " and put the Python traceback in CONTEXT) clean, with SQLSTATE, detail and
# hint; any other error unchanged. "#raise_clean" is the raising part alone.
RAISE_CLEAN = """IF detail = '' AND hint = '' THEN
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
ELSIF detail = '' THEN
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
ELSIF hint = '' THEN
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
ELSE
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
END IF;"""
RERAISE = """EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        #raise_clean
    END;"""


def expand(body: str, marker: str, text: str) -> str:
    """Replace each line holding only ``marker`` with ``text``, indented as the marker was."""
    return re.sub(rf"^( *){marker}$", lambda m: "\n".join(m.group(1) + line for line in text.splitlines()), body, flags=re.M)


def version() -> str:
    text = (ROOT / "pg_imgembed" / "__init__.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


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
        "(" + ", ".join(literal(v) for v in (m.model_id, m.template, m.dimensions, m.license, m.onnx_file, m.output, m.notes, m.modality)) + ")"
        for m in CATALOG)
    return (f"CREATE OR REPLACE VIEW imgembed.templates AS SELECT * FROM (VALUES\n  {templates}\n) t(name, description, config);\n"
            "COMMENT ON VIEW imgembed.templates IS 'Preprocessing templates: load_model(..., config => ''{\"template\": \"clip\"}'')';\n"
            "GRANT SELECT ON imgembed.templates TO PUBLIC;\n"
            f"CREATE OR REPLACE VIEW imgembed.catalog AS SELECT * FROM (VALUES\n  {catalog}\n) "
            "c(model_id, template, dimensions, license, onnx_file, output, notes, modality);\n"
            "COMMENT ON VIEW imgembed.catalog IS 'Known models: pg-imgembed models load NAME --catalog MODEL_ID';\n"
            "GRANT SELECT ON imgembed.catalog TO PUBLIC;\n")


def incremental(after: str | None = None) -> list[pathlib.Path]:
    """Incremental files in order; with ``after``, only those of later versions."""
    files = sorted((SQL / "incremental").glob("*.sql"))
    return [f for f in files if after is None or version_key(f.stem.split("-", 1)[1]) > version_key(after)]


def released() -> list[str]:
    return sorted((f.name.removeprefix("pg_imgembed--").removesuffix(".sql") for f in (SQL / "released").glob("*.sql")),
                  key=version_key)


def upgrade_drops(start: str) -> list[pathlib.Path]:
    """The upgrade/ files of every step from ``start`` on."""
    steps = [f for f in (SQL / "upgrade").glob("*--*.sql")]
    return sorted((f for f in steps if version_key(f.stem.split("--")[0]) >= version_key(start)),
                  key=lambda f: version_key(f.stem.split("--")[0]))


def frozen() -> dict[str, str]:
    """Path under sql/ -> the sha256 it was frozen with."""
    lines = FROZEN.read_text().splitlines() if FROZEN.exists() else []
    return {path: digest for digest, path in (line.split(None, 1) for line in lines if line.strip())}


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def must_be_frozen() -> list[str]:
    """Released install scripts and the incremental files of released versions (paths under sql/)."""
    versions = released()
    files = [SQL / "released" / f"pg_imgembed--{v}.sql" for v in versions]
    files += [f for f in incremental() if f.stem.split("-", 1)[1] in versions]
    return [f.relative_to(SQL).as_posix() for f in files]


def check_frozen() -> list[str]:
    """What breaks the freeze, one sentence each; empty when every released file is as frozen."""
    hashes = frozen()
    problems = [f"sql/{path} changed since it was frozen (sql/frozen.txt): released SQL never changes; "
                "put the change in a new incremental file or in sql/idempotent/"
                for path, digest in hashes.items() if (SQL / path).exists() and sha256(SQL / path) != digest]
    problems += [f"sql/{path} is frozen (sql/frozen.txt) but missing" for path in hashes if not (SQL / path).exists()]
    problems += [f"sql/{path} belongs to a released version but is not frozen: run scripts/build_sql.py --freeze sql/{path}"
                 for path in must_be_frozen() if path not in hashes]
    return problems


def freeze(paths: list[pathlib.Path]) -> None:
    """Add files to sql/frozen.txt; one frozen with other bytes is refused."""
    hashes = frozen()
    for path in paths:
        name = path.resolve().relative_to(SQL).as_posix()
        if hashes.get(name, sha256(SQL / name)) != sha256(SQL / name):
            sys.exit(f"sql/{name} is already frozen with other bytes: released SQL never changes")
        hashes[name] = sha256(SQL / name)
    FROZEN.write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(hashes.items())))


def finish(parts: list[pathlib.Path], runtime_dir: str) -> str:
    body = "\n".join(part.read_text() for part in parts)
    body = re.sub(r"^#bootstrap$", PREAMBLE, body, flags=re.M)
    body = expand(expand(body, "#reraise", RERAISE), "#raise_clean", RAISE_CLEAN)
    body = body.replace("-- @data_views@", data_views())
    return HEADER + body.replace("@VERSION@", version()).replace("@RUNTIME_DIR@", runtime_dir)


def scripts(runtime_dir: str) -> dict[str, str]:
    """File name -> text of every script ``make install`` installs."""
    current = version()
    idempotent = [SQL / "idempotent" / name for name in IDEMPOTENT]
    out = {f"pg_imgembed--{current}.sql": finish(incremental() + idempotent, runtime_dir)}
    for old in released():
        if old == current:
            continue
        frozen = (SQL / "released" / f"pg_imgembed--{old}.sql").read_text()
        out[f"pg_imgembed--{old}.sql"] = frozen.replace("@RUNTIME_DIR@", runtime_dir)
        out[f"pg_imgembed--{old}--{current}.sql"] = finish(upgrade_drops(old) + incremental(after=old) + idempotent,
                                                           runtime_dir)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime-dir", default="/usr/local/lib/pg_imgembed")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--list", action="store_true", help="print the names of the scripts built and exit")
    parser.add_argument("--output", type=pathlib.Path, help="directory to write the scripts to")
    parser.add_argument("--freeze", type=pathlib.Path, nargs="+", metavar="FILE",
                        help="record released SQL files' sha256 in sql/frozen.txt and exit")
    args = parser.parse_args()
    if args.version:
        print(version())
    elif args.list:
        print(" ".join(sorted(scripts(args.runtime_dir))))
    elif args.freeze:
        freeze(args.freeze)
    elif problems := check_frozen():
        sys.exit("build_sql.py: " + "\nbuild_sql.py: ".join(problems))
    else:
        args.output.mkdir(parents=True, exist_ok=True)
        for name, text in scripts(args.runtime_dir).items():
            path = args.output / name
            if not path.exists() or path.read_text() != text:  # unchanged files keep their mtime
                path.write_text(text)
