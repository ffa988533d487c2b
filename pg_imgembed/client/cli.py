"""pg-imgembed: manage the models of a database, fill embedded columns, run the async worker.

    pg-imgembed models build  MODEL.onnx|--from-dir DIR [--config JSON|--template T] -o PIPELINE.onnx
    pg-imgembed models load   NAME MODEL.onnx|--from-dir DIR|--catalog ID [--config|--template] [--replace] [--default]
    pg-imgembed models quantize NAME --as NEW_NAME --calibrate "SELECT photo FROM ..." [--samples N]
    pg-imgembed models rebuild [NAME ...]
    pg-imgembed models list | export NAME FILE | export NAME DIR --triton | drop NAME | catalog | templates
    pg-imgembed backfill TABLE IMAGE_COLUMN VECTOR_COLUMN [--model M] [--batch-size N]
    pg-imgembed status [--watch [SECONDS]]
    pg-imgembed worker [--concurrency N] [--inference-server URL] [--metrics-port N] ...
    pg-imgembed serve NAME [NAME ...] [--provider auto|cpu|cuda] [--http-port 8000] ...

The database is named the libpq way: --dsn (before or after the command) or the PG* environment
variables. Transfers and backfills show a progress bar on a terminal and plain lines otherwise.
Exit status: 0 done, 1 the database refused, 2 a usage or input error.

argparse is kept deliberately: the client install stays at psycopg + pgvector, and what a CLI
library would add here (global options anywhere, errors that list the commands) is a few lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from .. import __version__, catalog
from ..errors import ImgEmbedError
from ..image.templates import TEMPLATES
from ..settings import EXECUTION_PROVIDERS
from .model_dir import TextTower

# Server hints name SQL arguments; here they are options.
SQL_TO_CLI = {"replace => true": "--replace", "switch_model => true": "--switch-model",
              "Load one with imgembed.load_model(name, onnx_bytes, config).": "Load one with pg-imgembed models load NAME MODEL.onnx.",
              "Call imgembed.set_default_model('name'), or name the model: img_embedding(image, 'name').":
                  "Name a model (--model NAME), or make one the default: pg-imgembed models load NAME MODEL.onnx --default."}


class UsageError(ImgEmbedError):
    """The command line itself is wrong (exit status 2, like argparse's own errors)."""


class Progress:
    """One line redrawn on a terminal; elsewhere (logs, pipes) only whole lines."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.live = self.stream.isatty()
        self.drawn = False

    def show(self, done: int, total: int, text: str) -> None:
        if self.live:
            filled = int(30 * done / max(total, 1))
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {text}\x1b[K")
            self.stream.flush()
            self.drawn = True

    def line(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.drawn else "") + text + "\n")
        self.stream.flush()
        self.drawn = False

    def bytes(self, done: int, total: int) -> None:
        self.show(done, total, f"{done / 1e6:.1f}/{total / 1e6:.1f} MB")


def connect(args: argparse.Namespace) -> Any:
    import psycopg

    return psycopg.connect(getattr(args, "dsn", None) or "", autocommit=True)


def read_config(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    where = "--config"
    if value.startswith("@"):
        where = value[1:]
        try:
            value = Path(where).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the config file {where}: {exc.strerror}") from None
    try:
        config = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{where} must be a JSON object, not {type(config).__name__}")
    return config


def model_source(args: argparse.Namespace) -> tuple[bytes | None, Any, TextTower | None]:
    """What --from-dir / --catalog / a file names: an image tower (ONNX bytes and config, with
    --config/--template), a text tower (a directory with tokenizer.json), or both (a whole CLIP directory)."""
    from .model_dir import download, holds_image_tower, read_model_dir, read_text_dir
    from .models import read_model_source

    config = read_config(args.config)
    if getattr(args, "catalog", None):
        entry = catalog.find(args.catalog)
        directory = download(args.catalog)
        if entry is not None and entry.modality == "text":
            return None, None, read_text_dir(directory, onnx_file=entry.onnx_file)
        onnx, found = read_model_dir(directory, onnx_file=entry.onnx_file if entry else None,
                                     output=entry.output if entry else None, template=args.template)
        return onnx, config if config is not None else found, None
    given = [name for name, value in (("an ONNX file", args.onnx), ("--from-dir", args.from_dir)) if value]
    if len(given) != 1:
        raise UsageError("name the model: an ONNX file, --from-dir DIR" + (" or --catalog MODEL_ID" if hasattr(args, "catalog") else "")
                         if not given else "give an ONNX file or --from-dir, not both")
    if args.from_dir:
        directory = Path(args.from_dir)
        if not directory.is_dir():
            raise UsageError(f"--from-dir {args.from_dir}: {'not a directory' if directory.exists() else 'no such directory'}")
        text = read_text_dir(directory)
        if not holds_image_tower(directory):
            return None, None, text
        onnx, image_config = read_model_source(directory, config=config, template=args.template)
        return onnx, image_config, text
    if not Path(args.onnx).is_file():
        raise UsageError(f"{args.onnx}: {'not a file' if Path(args.onnx).exists() else 'no such file'}")
    onnx, image_config = read_model_source(args.onnx, config=config, template=args.template)
    return onnx, image_config, None


def cmd_build(args: argparse.Namespace) -> None:
    import hashlib

    if args.onnx and not Path(args.onnx).is_file():  # before the imports a client-only install lacks
        raise UsageError(f"{args.onnx}: {'not a file' if Path(args.onnx).exists() else 'no such file'}")
    try:
        from ..image.model_config import parse_config
        from ..image.pipeline import prepare_pipeline
        from ..image.templates import expand_template
    except ImportError as exc:  # a client-only install
        raise UsageError(f"building a pipeline model needs onnx, onnxruntime and Pillow ({exc})",
                         hint="pip install 'pg_imgembed[client,build]'") from None

    onnx, config, _ = model_source(args)
    if onnx is None:
        raise UsageError("this directory holds a text tower; models build makes image pipeline models")
    # The same build and check as load_model: the pipeline must agree with the plain model.
    pipeline, _, _ = prepare_pipeline(onnx, parse_config(expand_template(config)) if config is not None else None, threads=1)
    Path(args.output).write_bytes(pipeline)
    print(f"{args.output}: pipeline model, {len(pipeline)} bytes, sha256 {hashlib.sha256(pipeline).hexdigest()}")


def cmd_load(args: argparse.Namespace) -> None:
    from .models import load_model, load_text_model

    onnx, config, text = model_source(args)
    loaded = []
    with connect(args) as conn:
        for tower, data in (("image", onnx), ("text", text.onnx if text else None)):
            if data is None:
                continue
            progress = Progress(f"upload {args.name} ({tower})")
            if tower == "image":
                loaded.append(load_model(conn, args.name, data, config=config, replace=args.replace, default=args.default,
                                         progress=progress.bytes))
            else:
                assert text is not None
                loaded.append(load_text_model(conn, args.name, text.onnx, tokenizer=text.tokenizer, config=text.config,
                                              replace=args.replace, progress=progress.bytes))
            progress.line(f"upload {args.name} ({tower}): {len(data) / 1e6:.1f} MB")
    for model in loaded:
        print(f"loaded {model.name}" + (" (text tower)" if model.modality == "text" else "")
              + f": {model.dimensions} dimensions, input {model.input}, sha256 {model.sha256}"
              + (" (default)" if args.default and model.modality == "image" else ""))


def cmd_export(args: argparse.Namespace) -> None:
    from .models import export_model, export_text_model

    progress = Progress(f"export {args.name}")
    with connect(args) as conn:
        if args.triton:
            from .models import export_triton

            names = export_triton(conn, args.name, args.file, max_batch_size=args.max_batch_size, instances=args.instances,
                                  gpu=not args.cpu, tensorrt_fp16=args.tensorrt_fp16, warn=progress.line)
            print(f"{args.file}: Triton model repository of {', '.join(names)} (platform onnxruntime_onnx)")
            return
        if args.text:
            directory = export_text_model(conn, args.name, args.file, progress=progress.bytes)
            progress.line(f"export {args.name} (text tower): {directory}")
            print(f"{directory}: model.onnx, tokenizer.json, tokenizer_config.json, pg_imgembed_text.json")
            return
        size, sha = export_model(conn, args.name, args.file, progress=progress.bytes)
    progress.line(f"export {args.name}: {size / 1e6:.1f} MB")
    print(f"{args.file}: {size} bytes, sha256 {sha}")


def cmd_quantize(args: argparse.Namespace) -> None:
    try:
        from .quantize import quantize_model
    except ImportError as exc:  # a client-only install
        raise UsageError(f"quantizing needs onnx and onnxruntime's quantization tools ({exc})",
                         hint="pip install 'pg_imgembed[client,build]'") from None
    with connect(args) as conn:
        report = quantize_model(conn, args.name, args.new_name, args.calibrate, samples=args.samples, held_out=args.held_out,
                                replace=args.replace, progress=lambda message: print(message, file=sys.stderr))
    print("\n".join(report.lines()))


def cmd_list(args: argparse.Namespace) -> None:
    with connect(args) as conn:
        rows = conn.execute("SELECT name, modality, dimensions, input, bytes, left(sha256, 12), is_default FROM imgembed.models "
                            "ORDER BY name, modality").fetchall()
    table(("name", "tower", "dims", "input", "bytes", "sha256", "default"),
          [tuple("*" if v is True else "" if v is False else v for v in r) for r in rows],
          empty="no models loaded (pg-imgembed models load NAME MODEL.onnx)")


def cmd_drop(args: argparse.Namespace) -> None:
    with connect(args) as conn:
        conn.execute("SELECT imgembed.drop_model(%s)", (args.name,))
    print(f"dropped {args.name}")


def cmd_rebuild(args: argparse.Namespace) -> None:
    with connect(args) as conn:  # one transaction per model: a failure keeps the models rebuilt before it
        names = args.names or [r[0] for r in conn.execute("SELECT name FROM imgembed.models WHERE modality = 'image' ORDER BY name")]
        for name in names:
            _, rebuilt, old, new, generation, same, difference, cosine = conn.execute(
                "SELECT * FROM imgembed.rebuild_model(%s)", (name,)).fetchone()
            if not rebuilt:
                print(f"{name}: already current (sha256 {old[:12]})")
                continue
            verdict = (f"vectors unchanged (largest difference {difference:.1e} of their length), generation {generation} kept"
                       if same else f"vectors changed (largest difference {difference:.1e}, lowest cosine {cosine:.7f}): "
                       f"generation {generation}, columns it made are stale until backfilled")
            print(f"{name}: rebuilt, sha256 {old[:12]} -> {new[:12]}; {verdict}")


def cmd_catalog(args: argparse.Namespace) -> None:
    table(("model_id", "tower", "template", "dims", "license", "onnx", "notes"),
          [(m.model_id, m.modality, m.template or "-", m.dimensions, m.license, m.onnx_file or "-", m.notes) for m in catalog.CATALOG])


def cmd_templates(args: argparse.Namespace) -> None:
    for t in TEMPLATES.values():
        print(f"{t.name}\n  {t.description}\n  {json.dumps(t.config)}")


def backfill_progress(detail: str | None) -> dict[str, Any] | None:
    """A backfill progress NOTICE's DETAIL (a JSON object), else None."""
    if not detail or not detail.startswith('{"backfill"'):
        return None
    try:
        found = json.loads(detail)
    except ValueError:
        return None
    return found if isinstance(found, dict) and isinstance(found.get("done"), int) and isinstance(found.get("total"), int) else None


def cmd_backfill(args: argparse.Namespace) -> None:
    progress = Progress(f"backfill {args.table}")
    started = time.monotonic()
    last: list[str] = []

    def on_notice(diag: Any) -> None:
        text = diag.message_primary or ""
        found = backfill_progress(diag.message_detail)
        if found is None:
            progress.line(f"notice: {text}")
            return
        last[:] = [text]
        if progress.live:
            eta = int(found["eta_s"])
            progress.show(found["done"], found["total"], f"{found['done']}/{found['total']} rows, "
                          f"{found['images_per_s']} images/s, ETA {eta // 60}m{eta % 60:02d}s")
        else:
            progress.line(text)

    with connect(args) as conn:
        conn.add_notice_handler(on_notice)
        conn.execute("CALL imgembed.backfill(%s, %s, %s, model => %s, batch_size => %s, on_error => %s, switch_model => %s)",
                     (args.table, args.image_column, args.vector_column, args.model, args.batch_size, args.on_error,
                      args.switch_model))
    if progress.live:
        progress.line(last[0] if last else f"backfill {args.table}: nothing to do")
    print(f"backfill {args.table}.{args.vector_column}: done in {time.monotonic() - started:.1f} s")


def cmd_worker(args: argparse.Namespace) -> None:
    try:
        from .worker import run_from_args
    except ImportError as exc:  # a client-only install
        raise UsageError(f"the worker computes vectors itself and needs onnxruntime, numpy and Pillow ({exc})",
                         hint="pip install 'pg_imgembed[worker]' (the server runtime's versions)") from None
    if args.metrics_port is not None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise UsageError("--metrics-port needs the prometheus_client package",
                             hint="pip install 'pg_imgembed[worker]'") from None
    run_from_args(getattr(args, "dsn", None), args)


def cmd_serve(args: argparse.Namespace) -> None:
    from .serve import run_from_args

    run_from_args(getattr(args, "dsn", None), args)


def cmd_status(args: argparse.Namespace) -> None:
    if args.watch is not None and not args.watch > 0:
        raise UsageError(f"--watch takes a number of seconds above 0, not {args.watch:g}")
    with connect(args) as conn:
        if args.watch is None:
            print(status_text(conn, None)[0], end="")
            return
        previous = None
        try:
            while True:
                text, previous = status_text(conn, previous)
                if sys.stdout.isatty():
                    print("\x1b[H\x1b[2J", end="")  # clear the screen, cursor home
                print(f"{time.strftime('%H:%M:%S')}  every {args.watch:g} s, Ctrl-C to stop\n{text}", flush=True)
                time.sleep(args.watch)
        except KeyboardInterrupt:
            pass


Sample = tuple[float, dict[tuple[str, str, str], int]]  # when, images per (model, tower, path)


def status_text(conn: Any, previous: Sample | None) -> tuple[str, Sample]:
    """The status report; per-model images/s from the images counted since ``previous``."""
    queue = conn.execute("SELECT tbl::text, vector_column, queued, in_progress, failed, done, "
                         "date_trunc('second', oldest_pending_age)::text, rate_per_s, date_trunc('second', eta)::text "
                         "FROM imgembed.queue_status ORDER BY 1, 2").fetchall()
    workers = conn.execute("SELECT worker, role, CASE WHEN alive THEN 'yes' ELSE 'NO' END, leases_held, "
                           "date_trunc('second', now() - last_seen)::text || ' ago', done, failed "
                           "FROM imgembed.worker_status ORDER BY alive DESC, worker").fetchall()
    notices: list[str] = []  # the statistics are off: model_stats says why

    def notice(diag: Any) -> None:
        notices.append(diag.message_primary or "")

    conn.add_notice_handler(notice)
    models = conn.execute("SELECT model, tower, path, calls, images, refused, "
                          "round((total_decode_ms + total_preprocess_ms + total_inference_ms) / nullif(images, 0), 2) "
                          "FROM imgembed.model_stats ORDER BY 1, 2, 3").fetchall()
    conn.remove_notice_handler(notice)
    lineage = conn.execute("SELECT tbl::text, vector_column, model, left(produced_by, 12), produced_by_generation, "
                           "current_generation, CASE WHEN stale THEN 'STALE' ELSE 'fresh' END, "
                           "CASE WHEN reembedding THEN 'yes' ELSE '' END, date_trunc('second', updated_at)::text "
                           "FROM imgembed.vector_lineage ORDER BY 1, 2").fetchall()
    now = time.monotonic()
    sample = (now, {(m[0] or "(other)", m[1] or "", m[2] or ""): m[4] for m in models})

    def rate(key: tuple[str, str, str], images: int) -> str:
        if previous is None or now <= previous[0]:
            return ""
        return f"{max(images - previous[1].get(key, 0), 0) / (now - previous[0]):.1f}"

    lines: list[str] = []
    out = lines.append
    out("queue (imgembed.queue_status)")
    table(("table", "column", "queued", "in_progress", "failed", "done", "oldest_pending", "jobs/s", "eta"), queue,
          empty="no async columns with jobs", indent="  ", out=out)
    out("\nworkers (imgembed.worker_status)")
    table(("worker", "role", "alive", "leases", "last_heartbeat", "done", "failed"), workers,
          empty="no worker has run", indent="  ", out=out)
    out("\nmodels (imgembed.model_stats)")
    rows = [(*m[:6], m[6], rate((m[0] or "(other)", m[1] or "", m[2] or ""), m[4])) for m in models]
    table(("model", "tower", "path", "calls", "images", "refused", "ms/image", "images/s"), rows,
          empty=notices[0] if notices else "nothing embedded since the statistics were reset", indent="  ", out=out)
    out("\nlineage (imgembed.vector_lineage)")
    table(("table", "column", "model", "sha256", "generation", "current", "state", "reembedding", "updated_at"), lineage,
          empty="no embedded columns yet", indent="  ", out=out)
    return "\n".join(lines) + "\n", sample


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "", indent: str = "",
          out: Callable[[str], object] = print) -> None:
    if not rows and empty:
        out(f"{indent}({empty})")
        return
    shown = [tuple(header)] + [tuple("" if v is None else v for v in r) for r in rows]
    widths = [max(len(str(r[i])) for r in shown) for i in range(len(header))]
    for row in shown:
        out(indent + "  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


# ------------------------------------------------------------------ the parser


class Parser(argparse.ArgumentParser):
    """argparse, with errors that say what was wrong and what there is to run."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^the following arguments are required: (COMMAND|{.*})$", "name a command", message)
        commands = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if commands is not None:
            names = ", ".join(commands.choices)
            follow = f"commands: {names}\nrun '{self.prog} COMMAND --help' for a command's options"
        else:
            follow = f"{self.format_usage().strip()}\nrun '{self.prog} --help' for more"
        self.exit(2, f"{self.prog}: error: {message}\n{follow}\n")


def parser() -> argparse.ArgumentParser:
    # --dsn is accepted before or after any command: every parser has it, the innermost value wins.
    common = Parser(add_help=False)
    common.add_argument("--dsn", default=argparse.SUPPRESS,
                        help="libpq connection string or URI (default: the PG* environment variables)")
    root = Parser(prog="pg-imgembed", description=__doc__.split("\n\n")[0].split(": ", 1)[1], parents=[common],
                  formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    root.add_argument("--version", action="version", version=f"pg-imgembed {__version__}")
    commands = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(group: Any, name: str, help: str, run: Callable[[argparse.Namespace], None],
                connects: bool = True) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", parents=[common] if connects else [])
        sub.set_defaults(run=run)
        return sub

    models_parser = commands.add_parser("models", help="manage the models of the database", parents=[common])
    models_parser.set_defaults(run=lambda args: models_parser.error("name a command"))
    models = models_parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=Parser)

    def sourced(p: argparse.ArgumentParser, with_catalog: bool) -> None:
        p.add_argument("onnx", nargs="?", metavar="MODEL.onnx", help="a plain or pipeline ONNX file")
        p.add_argument("--from-dir", metavar="DIR",
                       help="a model directory laid out as on Hugging Face or by fastembed: an image tower (model.onnx, "
                            "preprocessor_config.json), a text tower (model.onnx, tokenizer.json) or both")
        if with_catalog:
            p.add_argument("--catalog", metavar="MODEL_ID", help="a catalog model (pg-imgembed models catalog), downloaded from the hub")
        p.add_argument("--config", metavar="JSON", help="the preprocessing config as JSON, or @FILE to read it from a file")
        p.add_argument("--template", choices=sorted(TEMPLATES), help="a named preprocessing template (pg-imgembed models templates)")

    build = command(models, "build", "build a pipeline model file (offline, no database)", cmd_build, connects=False)
    sourced(build, with_catalog=False)
    build.add_argument("-o", "--output", required=True, metavar="PIPELINE.onnx", help="where to write the pipeline model")
    load = command(models, "load", "load a model into the database", cmd_load)
    load.add_argument("name", metavar="NAME", help="the model's name in the database")
    sourced(load, with_catalog=True)
    load.add_argument("--replace", action="store_true", help="replace a model of the same name")
    load.add_argument("--default", action="store_true", help="make it the default model")
    export = command(models, "export", "write a stored pipeline model to a file (--text: its text tower to a directory)", cmd_export)
    export.add_argument("name", metavar="NAME", help="the model's name in the database")
    export.add_argument("file", metavar="PATH", help="the ONNX file to write (--text: the directory)")
    export.add_argument("--text", action="store_true",
                        help="export the text tower as fastembed lays it out (model.onnx, tokenizer.json, tokenizer_config.json)")
    export.add_argument("--triton", action="store_true",
                        help="write a Triton model repository into the directory PATH (NAME/config.pbtxt, NAME/<generation>/model.onnx; "
                             "the text tower as NAME.text) for NVIDIA's Triton images")
    export.add_argument("--max-batch-size", type=int, default=16, help="--triton: max_batch_size (default 16)")
    export.add_argument("--instances", type=int, default=1, help="--triton: model instances per GPU (default 1)")
    export.add_argument("--cpu", action="store_true", help="--triton: instances on the CPU (default: KIND_GPU)")
    export.add_argument("--tensorrt-fp16", action="store_true", help="--triton: run through TensorRT in FP16 (its vectors differ slightly)")
    drop = command(models, "drop", "remove a model from the database", cmd_drop)
    drop.add_argument("name", metavar="NAME", help="the model's name in the database")
    rebuild = command(models, "rebuild", "re-emit models stored by earlier versions with this version's faster preprocessing",
                      cmd_rebuild)
    rebuild.add_argument("names", nargs="*", metavar="NAME", help="the models to rebuild (default: every model you can see)")
    quantize = command(models, "quantize", "store an INT8 copy of a model, calibrated on your images, with a quality report",
                       cmd_quantize)
    quantize.add_argument("name", metavar="NAME", help="the stored (fp32) model to quantize")
    quantize.add_argument("--as", dest="new_name", required=True, metavar="NEW_NAME", help="the name of the INT8 model")
    quantize.add_argument("--calibrate", required=True, metavar="QUERY",
                          help="a SELECT whose first column is images (bytea) like those the model will embed")
    quantize.add_argument("--samples", type=int, default=64, help="images that calibrate (default 64)")
    quantize.add_argument("--held-out", type=int, default=64,
                          help="further images the report is measured on (default 64; at least 8)")
    quantize.add_argument("--replace", action="store_true", help="replace a model named NEW_NAME")
    command(models, "list", "list the models in the database", cmd_list)
    command(models, "catalog", "list the preconfigured models", cmd_catalog, connects=False)
    command(models, "templates", "list the preprocessing templates", cmd_templates, connects=False)

    backfill = command(commands, "backfill", "embed the rows whose vector is NULL or stale (CALL imgembed.backfill)", cmd_backfill)
    backfill.add_argument("table", metavar="TABLE", help="the table, optionally schema-qualified")
    backfill.add_argument("image_column", metavar="IMAGE_COLUMN", help="its bytea column of images")
    backfill.add_argument("vector_column", metavar="VECTOR_COLUMN", help="its vector column to fill")
    backfill.add_argument("--model", help="the model (default: the column's trigger's, else the default model)")
    backfill.add_argument("--batch-size", type=int, default=32, help="rows embedded and committed at a time (default 32)")
    backfill.add_argument("--on-error", choices=("error", "null"), help="a bad image stops it (error) or leaves NULL (null); "
                          "default: the trigger's policy")
    backfill.add_argument("--switch-model", action="store_true", help="re-embed with --model although the trigger names another, "
                          "and rebind the trigger")
    status = command(commands, "status", "show the async queue with its ETA, the workers, the models' statistics and "
                     "the lineage of embedded columns", cmd_status)
    status.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until Ctrl-C, with per-model images/s")

    worker_arguments(command(commands, "worker", "embed the rows async triggers queued", cmd_worker))
    serve = command(commands, "serve", "serve models of the database over KServe V2 (HTTP, gRPC) with Triton Inference Server",
                    cmd_serve)
    serve.add_argument("names", nargs="*", metavar="NAME",
                       help="the models to serve, with their text towers (default: every model this role may use, "
                       "and those loaded later)")
    serve.add_argument("--triton-venv", metavar="DIR",
                       help="the venv with nvidia-pytriton (default: $PG_IMGEMBED_TRITON_VENV, else this Python's)")
    serve.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, default=8000, help="V2 over HTTP (default 8000)")
    serve.add_argument("--grpc-port", type=int, default=8001, help="V2 over gRPC (default 8001)")
    serve.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics (default 8002)")
    serve.add_argument("--provider", choices=EXECUTION_PROVIDERS, default="auto",
                       help="onnxruntime execution provider (default auto: CUDA where onnxruntime-gpu can run it, else CPU)")
    serve.add_argument("--threads", type=int, default=0, help="onnxruntime threads per model instance (default: half the cores, 1 to 4)")
    serve.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    serve.add_argument("--max-batch-size", type=int, default=16, help="largest batch Triton forms (default 16)")
    serve.add_argument("--queue-delay-us", type=int, default=2000,
                       help="how long Triton waits for more requests to batch, in microseconds (default 2000)")
    serve.add_argument("--poll", type=float, default=5.0, help="seconds between checks for replaced models (default 5)")
    return root


def worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, default=1, help="worker threads, one connection each (default 1)")
    parser.add_argument("--batch-size", type=int, default=16, help="jobs claimed at a time (default 16)")
    parser.add_argument("--lease", type=float, default=120.0, help="seconds a claim lasts (default 120)")
    parser.add_argument("--max-attempts", type=int, default=5, help="tries before a job is given up (default 5)")
    parser.add_argument("--retry-base", type=float, default=2.0, help="first retry delay in seconds, doubling (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per worker thread (default 1)")
    parser.add_argument("--provider", choices=EXECUTION_PROVIDERS, default="auto",
                        help="onnxruntime execution provider (default auto: CUDA where onnxruntime-gpu can run it, else CPU)")
    parser.add_argument("--decode-threads", type=int, default=0,
                        help="image decoding threads per worker thread (default: cores / concurrency)")
    parser.add_argument("--once", action="store_true", help="exit when no job is ready")
    parser.add_argument("--inference-server", metavar="URL", default=os.environ.get("PG_IMGEMBED_INFERENCE_SERVER") or None,
                        help="an Open Inference Protocol (KServe V2) server that runs the models, http(s):// or grpc(s):// "
                             "(pg-imgembed serve, Triton); default: $PG_IMGEMBED_INFERENCE_SERVER, else onnxruntime in this process")
    parser.add_argument("--inference-token-file", metavar="FILE", help="a file holding the bearer token for --inference-server")
    parser.add_argument("--inference-timeout-ms", type=int, default=30_000,
                        help="longest wait for one answer of --inference-server (default 30000)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics on this port (default: none)")
    parser.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                        help="address the metrics are served on (default 127.0.0.1; 0.0.0.0: every interface)")
    parser.add_argument("--allow-version-mismatch", action="store_true",
                        help="start although onnxruntime, numpy or Pillow differ from the server's runtime (vectors may differ)")


def cli_wording(text: str) -> str:
    for sql, option in SQL_TO_CLI.items():
        text = text.replace(sql, option)
    return text.removeprefix("pg_imgembed: ")


def fail(status: int, message: str, detail: str | None = None, hint: str | None = None) -> int:
    lines = [f"pg-imgembed: error: {cli_wording(message)}"]
    lines += [f"{label}: {cli_wording(text)}" for label, text in (("detail", detail), ("hint", hint)) if text]
    print("\n".join(lines), file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    root = parser()
    args = root.parse_args(argv)
    if args.command is None:
        root.error("name a command")
    try:
        args.run(args)
    except ImgEmbedError as exc:  # found here, before (or without) the database: the input is wrong
        return fail(2, exc.message, exc.detail, exc.hint)
    except OSError as exc:
        return fail(2, f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
    except Exception as exc:
        if not type(exc).__module__.startswith("psycopg"):
            raise
        diag = getattr(exc, "diag", None)
        if diag is None or diag.sqlstate is None:  # never reached the server, or lost it
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = re.sub(r"^(connection is bad|connection failed): ", "", reason)
            return fail(1, f"cannot reach the database: {reason}",
                        hint="Check --dsn or the PG* variables (PGHOST, PGPORT, PGDATABASE, PGUSER) and that the server is running.")
        # The server's message, detail and hint; not its CONTEXT (a PL/Python traceback).
        return fail(1, diag.message_primary or str(exc).strip(), diag.message_detail, diag.message_hint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
