"""``pg-imgembed``: manage the models of a database from the command line.

    pg-imgembed models build  MODEL.onnx|--from-dir DIR [--config JSON|--template T] -o PIPELINE.onnx
    pg-imgembed models load   NAME MODEL.onnx|--from-dir DIR|--catalog ID [--config|--template] [--replace] [--default]
    pg-imgembed models list | export NAME FILE | drop NAME | catalog | templates

The database is named the libpq way: ``--dsn`` or the ``PG*`` environment variables.
Transfers go in chunks with a progress bar, so a large model shows how far it got.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .. import known_models as catalog
from ..errors import ImgEmbedError, InvalidConfig
from ..templates import TEMPLATES

CHUNK = 4 << 20  # 4 MiB per round trip


class Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.live = sys.stderr.isatty()

    def advance(self, n: int) -> None:
        self.done += n
        if self.live:
            filled = int(30 * self.done / max(self.total, 1))
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                             f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write(("\r" if self.live else "") + f"{self.label}: {self.total / 1e6:.1f} MB\n")


def connect(dsn: str | None):
    try:
        import psycopg
    except ImportError:
        raise SystemExit("pg-imgembed: psycopg is needed to talk to the database: pip install 'pg_imgembed[client]'") from None
    return psycopg.connect(dsn or "", autocommit=True)


def model_source(args: argparse.Namespace) -> tuple[bytes, dict[str, Any] | None]:
    """The ONNX bytes and config named by --from-dir / --catalog / a file, with --config/--template."""
    from .model_dir import download, read_model_dir

    config: dict[str, Any] | None = None
    found: dict[str, Any] | None
    if args.config:
        text = Path(args.config[1:]).read_text() if args.config.startswith("@") else args.config
        config = json.loads(text)
    if getattr(args, "catalog", None):
        entry = catalog.find(args.catalog)
        directory = download(args.catalog)
        onnx, found = read_model_dir(directory, onnx_file=entry.onnx_file if entry else None,
                                     output=entry.output if entry else None, template=args.template)
    elif args.from_dir:
        onnx, found = read_model_dir(Path(args.from_dir), template=args.template)
    elif args.onnx:
        onnx, found = Path(args.onnx).read_bytes(), ({"template": args.template} if args.template else None)
    else:
        raise InvalidConfig("name the model: an ONNX file, --from-dir DIR or --catalog MODEL_ID")
    return onnx, config if config is not None else found


def cmd_build(args: argparse.Namespace) -> None:
    from ..model_config import parse_config
    from ..pipeline import prepare_pipeline
    from ..templates import expand_template

    onnx, config = model_source(args)
    # The same build and check as load_model: the pipeline must agree with the plain model.
    pipeline, _, _ = prepare_pipeline(onnx, parse_config(expand_template(config)) if config is not None else None, threads=1)
    Path(args.output).write_bytes(pipeline)
    print(f"{args.output}: pipeline model, {len(pipeline)} bytes, sha256 {hashlib.sha256(pipeline).hexdigest()}")


def cmd_load(args: argparse.Namespace) -> None:
    onnx, config = model_source(args)
    with connect(args.dsn) as conn:
        conn.execute("CREATE TEMP TABLE pg_imgembed_upload (n int, chunk bytea)")
        progress = Progress(f"upload {args.name}", len(onnx))
        for n, start in enumerate(range(0, len(onnx), CHUNK)):
            chunk = onnx[start:start + CHUNK]
            conn.execute("INSERT INTO pg_imgembed_upload VALUES (%s, %s)", (n, chunk))
            progress.advance(len(chunk))
        progress.close()
        row = conn.execute(
            "SELECT name, dimensions, input, sha256 FROM imgembed.load_model(%s, "
            "(SELECT string_agg(chunk, ''::bytea ORDER BY n) FROM pg_imgembed_upload), %s::jsonb, %s)",
            (args.name, json.dumps(config) if config is not None else None, args.replace)).fetchone()
        if args.default:
            conn.execute("SELECT imgembed.set_default_model(%s)", (args.name,))
    print(f"loaded {row[0]}: {row[1]} dimensions, input {row[2]}, sha256 {row[3]}" + (" (default)" if args.default else ""))


def cmd_export(args: argparse.Namespace) -> None:
    with connect(args.dsn) as conn:
        found = conn.execute("SELECT bytes, sha256 FROM imgembed.model_store WHERE name = %s", (args.name,)).fetchone()
        if found is None:
            raise InvalidConfig(f'model "{args.name}" does not exist')
        size, sha = found
        progress = Progress(f"export {args.name}", size)
        digest = hashlib.sha256()
        with open(args.file, "wb") as out:
            # substring() of an uncompressed (STORAGE EXTERNAL) value reads only the chunks it needs.
            for start in range(0, size, CHUNK):
                (chunk,) = conn.execute("SELECT substring(onnx FROM %s FOR %s) FROM imgembed.model_store WHERE name = %s",
                                        (start + 1, CHUNK, args.name)).fetchone()
                out.write(chunk)
                digest.update(chunk)
                progress.advance(len(chunk))
        progress.close()
    if digest.hexdigest() != sha:
        raise InvalidConfig(f"exported bytes have sha256 {digest.hexdigest()}, the table says {sha}")
    print(f"{args.file}: {size} bytes, sha256 {sha}")


def cmd_list(args: argparse.Namespace) -> None:
    with connect(args.dsn) as conn:
        rows = conn.execute("SELECT name, dimensions, input, bytes, left(sha256, 12), is_default FROM imgembed.models ORDER BY name").fetchall()
    table([("name", "dims", "input", "bytes", "sha256", "default")] + [tuple("*" if v is True else "" if v is False else v for v in r) for r in rows])


def cmd_drop(args: argparse.Namespace) -> None:
    with connect(args.dsn) as conn:
        conn.execute("SELECT imgembed.drop_model(%s)", (args.name,))
    print(f"dropped {args.name}")


def cmd_catalog(args: argparse.Namespace) -> None:
    table([("model_id", "template", "dims", "license", "onnx", "notes")] +
          [(m.model_id, m.template, m.dimensions, m.license, m.onnx_file or "-", m.notes) for m in catalog.CATALOG])


def cmd_templates(args: argparse.Namespace) -> None:
    for t in TEMPLATES.values():
        print(f"{t.name}\n  {t.description}\n  {json.dumps(t.config)}")


def table(rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pg-imgembed", description=__doc__.split("\n\n")[0])
    root.add_argument("--version", action="version", version=f"pg-imgembed {__version__}")
    root.add_argument("--dsn", help="libpq connection string or URI (default: PG* environment variables)")
    groups = root.add_subparsers(dest="group", required=True)
    worker = groups.add_parser("worker", help="embed the rows async triggers queued")
    from .worker import add_arguments, run_from_args

    add_arguments(worker)
    worker.set_defaults(run=lambda args: run_from_args(args.dsn, args))
    models = groups.add_parser("models", help="manage models").add_subparsers(dest="command", required=True)

    def sourced(p: argparse.ArgumentParser, with_catalog: bool) -> None:
        p.add_argument("onnx", nargs="?", help="a plain or pipeline ONNX file")
        p.add_argument("--from-dir", help="a Hugging Face style model directory")
        if with_catalog:
            p.add_argument("--catalog", metavar="MODEL_ID", help="a catalog model, downloaded from the hub")
        p.add_argument("--config", help="config JSON, or @FILE")
        p.add_argument("--template", choices=sorted(TEMPLATES), help="a named preprocessing template")

    build = models.add_parser("build", help="build a pipeline model file (offline, no database)")
    sourced(build, with_catalog=False)
    build.add_argument("-o", "--output", required=True)
    build.set_defaults(run=cmd_build)
    load = models.add_parser("load", help="load a model into the database")
    load.add_argument("name")
    sourced(load, with_catalog=True)
    load.add_argument("--replace", action="store_true", help="replace a model of the same name")
    load.add_argument("--default", action="store_true", help="make it the default model")
    load.set_defaults(run=cmd_load)
    export = models.add_parser("export", help="write a stored (pipeline) model to a file")
    export.add_argument("name")
    export.add_argument("file")
    export.set_defaults(run=cmd_export)
    drop = models.add_parser("drop", help="remove a model")
    drop.add_argument("name")
    drop.set_defaults(run=cmd_drop)
    models.add_parser("list", help="models in the database").set_defaults(run=cmd_list)
    models.add_parser("catalog", help="preconfigured models").set_defaults(run=cmd_catalog)
    models.add_parser("templates", help="preprocessing templates").set_defaults(run=cmd_templates)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except ImgEmbedError as exc:
        print(f"pg-imgembed: error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 1
    except Exception as exc:
        diag = getattr(exc, "diag", None)
        if type(exc).__module__.startswith("psycopg"):
            # The server's message, detail and hint; not its CONTEXT (a PL/Python traceback).
            parts = [f"pg-imgembed: error: {(diag and diag.message_primary) or str(exc).strip()}"]
            parts += [f"{label}: {text}" for label, text in (("detail", diag and diag.message_detail),
                                                              ("hint", diag and diag.message_hint)) if text]
            print("\n".join(parts), file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
