"""pg-imgembed: build, load (file, model directory, template), list, export round trip, drop, catalog."""

import argparse
import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import psycopg
import pytest

from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, embed, load_tiny

PHOTO = images.jpeg(images.photo_like(80, 60, seed=2))
# A ViT-style Hugging Face processor config for a 16x16 model.
HF_CONFIG = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 16, "width": 16},
             "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
             "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def cli(dsn, *args, ok=True):
    done = subprocess.run([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, *map(str, args)],
                          capture_output=True, text=True)
    assert (done.returncode == 0) == ok, done.stderr
    return done


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(onnx_models.conv_net())
    return path


def test_load_list_export_reload_drop(dsn, conn, onnx_file, tmp_path):
    out = cli(dsn, "models", "load", "tiny", onnx_file, "--config", json.dumps(TINY_CONFIG), "--default").stdout
    assert out.startswith("loaded tiny: 4 dimensions, input NCHW 3x16x16, sha256 ")
    assert "tiny" in cli(dsn, "models", "list").stdout

    exported = tmp_path / "exported.onnx"
    cli(dsn, "models", "export", "tiny", exported)
    (sha,) = conn.execute("SELECT sha256 FROM imgembed.models WHERE name = 'tiny'").fetchone()
    assert hashlib.sha256(exported.read_bytes()).hexdigest() == sha

    cli(dsn, "models", "load", "again", exported)  # database -> file -> database
    (again,) = conn.execute("SELECT sha256 FROM imgembed.models WHERE name = 'again'").fetchone()
    assert again == sha
    np.testing.assert_array_equal(embed(conn, PHOTO, "again"), embed(conn, PHOTO, "tiny"))

    cli(dsn, "models", "drop", "again")
    assert conn.execute("SELECT count(*) FROM imgembed.models").fetchone()[0] == 1


def test_export_in_chunks_reassembles_large_models(dsn, conn, tmp_path, monkeypatch):
    from pg_imgembed.client import cli as cli_module
    from pg_imgembed.client import models

    conn.execute("SELECT imgembed.load_model('wide', %s, %s::jsonb)",
                 (onnx_models.conv_net(extra_dims=4000), json.dumps(TINY_CONFIG)))
    monkeypatch.setattr(models, "CHUNK", 1000)  # many round trips
    assert cli_module.main(["--dsn", dsn, "models", "export", "wide", str(tmp_path / "w.onnx")]) == 0
    (sha,) = conn.execute("SELECT sha256 FROM imgembed.models WHERE name = 'wide'").fetchone()
    assert hashlib.sha256((tmp_path / "w.onnx").read_bytes()).hexdigest() == sha


@pytest.mark.parametrize("layout", ["model.onnx", "onnx/model.onnx"])
def test_load_from_a_hugging_face_style_directory(dsn, conn, tmp_path, layout):
    (tmp_path / layout).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / layout).write_bytes(onnx_models.conv_net())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(HF_CONFIG))
    (tmp_path / "config.json").write_text("{}")
    cli(dsn, "models", "load", "vitlike", "--from-dir", tmp_path)
    (pre,) = conn.execute("SELECT preprocess FROM imgembed.models").fetchone()
    assert pre["mean"] == [0.5, 0.5, 0.5] and pre["resample"] == "bilinear"
    assert embed(conn, PHOTO, "vitlike").shape == (4,)


def test_directory_without_processor_config_needs_a_template(dsn, tmp_path):
    (tmp_path / "model.onnx").write_bytes(onnx_models.conv_net(224, 224))
    err = cli(dsn, "models", "load", "m", "--from-dir", tmp_path, ok=False).stderr
    assert f"pg-imgembed: error: {tmp_path} has no preprocessor_config.json" in err
    assert "hint: Name a template" in err
    assert "loaded m: 4 dimensions" in cli(dsn, "models", "load", "m", "--from-dir", tmp_path, "--template", "clip").stdout


def test_build_offline_then_load_keeps_the_file(dsn, conn, onnx_file, tmp_path):
    pipeline = tmp_path / "pipeline.onnx"
    out = cli(dsn, "models", "build", onnx_file, "--config", json.dumps(TINY_CONFIG), "-o", pipeline).stdout
    sha = hashlib.sha256(pipeline.read_bytes()).hexdigest()
    assert sha in out
    cli(dsn, "models", "load", "built", pipeline)
    assert conn.execute("SELECT sha256 FROM imgembed.models").fetchone()[0] == sha


def test_catalog_lists_the_known_models(dsn, conn):
    out = cli(dsn, "models", "catalog").stdout
    for model_id in ("Qdrant/resnet50-onnx", "Qdrant/clip-ViT-B-32-vision", "google/vit-base-patch16-224",
                     "facebook/convnext-tiny-224", "openai/clip-vit-base-patch32", "facebook/dinov2-small"):
        assert model_id in out
    (n,) = conn.execute("SELECT count(*) FROM imgembed.catalog WHERE model_id = 'facebook/dinov2-small' "
                        "AND template = 'dinov2' AND dimensions = 384").fetchone()
    assert n == 1


def test_catalog_download_offline_names_the_alternative(dsn):
    err = cli(dsn, "models", "load", "r", "--catalog", "Qdrant/resnet50-onnx", ok=False).stderr
    assert "pg-imgembed: error:" in err
    assert "--from-dir DIR" in err


def test_repository_without_onnx_says_how_to_export(dsn):
    err = cli(dsn, "models", "load", "v", "--catalog", "google/vit-base-patch16-224", ok=False).stderr
    assert "google/vit-base-patch16-224 ships no ONNX file" in err
    assert "optimum-cli export onnx" in err


def test_database_errors_are_reported_without_traceback(dsn, onnx_file):
    err = cli(dsn, "models", "drop", "nope", ok=False).stderr
    assert err.startswith('pg-imgembed: error: model "nope" does not exist')
    assert "Traceback" not in err


def test_templates_in_sql_and_config(dsn, conn):
    names = [r[0] for r in conn.execute("SELECT name FROM imgembed.templates ORDER BY name")]
    assert names == ["clip", "convnext", "dinov2", "keras-caffe", "torchvision-resnet", "vit"]
    conn.execute("SELECT imgembed.load_model('k', %s, '{\"template\": \"keras-caffe\"}')",
                 (onnx_models.conv_net(224, 224, layout="NHWC"),))
    (pre,) = conn.execute("SELECT preprocess FROM imgembed.models WHERE name = 'k'").fetchone()
    assert (pre["channel_order"], pre["layout"], pre["resample"], pre["rescale"]) == ("BGR", "NHWC", "nearest", None)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown template 'resnet'"):
        conn.execute("SELECT imgembed.load_model('x', %s, '{\"template\": \"resnet\"}')", (onnx_models.conv_net(),))


# ------------------------------------------------------------------ rough edges, with exact output

COMMANDS = ("commands: models, backfill, status, worker, serve\n"
            "run 'pg-imgembed COMMAND --help' for a command's options\n")


def bare(*args):
    """The CLI without a database option (usage and input errors come before any connection)."""
    return subprocess.run([sys.executable, "-m", "pg_imgembed.client.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("args, first_line", [
    ((), "pg-imgembed: error: name a command"),
    (("--wrong",), "pg-imgembed: error: unrecognized arguments: --wrong"),
])
def test_no_command_or_a_wrong_option_lists_the_commands(args, first_line):
    done = bare(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"{first_line}\n{COMMANDS}"


def test_a_group_without_its_command_lists_its_commands():
    done = bare("models")
    assert done.returncode == 2
    assert done.stderr == ("pg-imgembed models: error: name a command\n"
                           "commands: build, load, export, drop, rebuild, quantize, list, catalog, templates\n"
                           "run 'pg-imgembed models COMMAND --help' for a command's options\n")


def test_every_argument_has_help_and_no_rst_markup():
    from pg_imgembed.client.cli import parser

    seen = 0
    pending = [parser()]
    while pending:
        p = pending.pop()
        text = p.format_help()
        assert "``" not in text and ":func:" not in text, p.prog
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            else:
                assert action.help, f"{p.prog}: {action.option_strings or action.dest} has no help"
                seen += 1
    assert seen > 40


@pytest.mark.parametrize("args, expected", [
    (("models", "load", "m", "{tmp}/missing.onnx"), "pg-imgembed: error: {tmp}/missing.onnx: no such file\n"),
    (("models", "load", "m", "--from-dir", "{tmp}/missing"), "pg-imgembed: error: --from-dir {tmp}/missing: no such directory\n"),
    (("models", "build", "{onnx}", "--config", "{{not json", "-o", "{tmp}/o.onnx"),
     "pg-imgembed: error: --config is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)\n"),
    (("models", "build", "{onnx}", "--config", "@{tmp}/nofile.json", "-o", "{tmp}/o.onnx"),
     "pg-imgembed: error: cannot read the config file {tmp}/nofile.json: No such file or directory\n"),
    (("models", "build", "{onnx}", "--config", '{{"template": "resnet"}}', "-o", "{tmp}/o.onnx"),
     "pg-imgembed: error: unknown template 'resnet'; templates: vit, convnext, clip, torchvision-resnet, keras-caffe, dinov2\n"),
    (("models", "build", "-o", "{tmp}/o.onnx"), "pg-imgembed: error: name the model: an ONNX file, --from-dir DIR\n"),
])
def test_input_errors_are_one_line_with_status_2(args, expected, onnx_file, tmp_path):
    done = bare(*(a.format(tmp=tmp_path, onnx=onnx_file) for a in args))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == expected.format(tmp=tmp_path)


def test_dsn_goes_before_or_after_the_command(dsn, conn):
    load_tiny(conn)
    after = bare("models", "list", "--dsn", dsn)
    assert after.returncode == 0 and after.stdout.splitlines()[1].startswith("tiny ")
    worker = bare("worker", "--dsn", dsn, "--concurrency", "2", "--once")  # the README's own line
    assert worker.returncode == 0, worker.stderr
    assert "stopped: 0 embedded, 0 failed" in worker.stderr


def test_server_hints_use_the_cli_options_and_no_double_prefix(dsn, conn, onnx_file):
    load_tiny(conn)
    done = cli(dsn, "models", "load", "tiny", onnx_file, "--config", json.dumps(TINY_CONFIG), ok=False)
    assert done.returncode == 1
    assert done.stderr == ('pg-imgembed: error: model "tiny" already exists\n'
                           "hint: Pass --replace to replace it; sessions pick up the new model at their next call.\n")
    conn.execute("CREATE ROLE cli_reader LOGIN")
    try:
        denied = bare("--dsn", psycopg.conninfo.make_conninfo(dsn, user="cli_reader"), "models", "drop", "tiny")
        assert denied.returncode == 1 and not denied.stderr.startswith("pg-imgembed: error: pg_imgembed:")
        assert denied.stderr.startswith("pg-imgembed: error: permission denied for function drop_model")
    finally:
        conn.execute("DROP ROLE cli_reader")


def test_export_of_a_missing_model_lists_the_loaded_ones(dsn, conn, tmp_path):
    load_tiny(conn)
    done = cli(dsn, "models", "export", "nosuch", tmp_path / "x.onnx", ok=False)
    assert done.returncode == 2
    assert done.stderr == 'pg-imgembed: error: model "nosuch" does not exist\nhint: Loaded models: tiny.\n'
    assert not (tmp_path / "x.onnx").exists()


def backfill_table(conn, rows: int = 40) -> None:
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.cursor().executemany("INSERT INTO items VALUES (%s, %s)", [(i, images.jpeg(images.photo_like(64, 48, seed=i))) for i in range(rows)])


def test_backfill_prints_plain_progress_lines_off_a_terminal(dsn, conn):
    backfill_table(conn)
    done = cli(dsn, "backfill", "items", "photo", "embedding", "--model", "tiny", "--batch-size", "8")
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"backfill items: 40/40 rows \(100\.0%\), [\d.]+ images/s, ETA 0m00s", last), done.stderr
    assert "\r" not in done.stderr
    assert re.fullmatch(r"backfill items\.embedding: done in [\d.]+ s\n", done.stdout)
    assert conn.execute("SELECT count(*) FROM items WHERE embedding IS NULL").fetchone() == (0,)
    np.testing.assert_array_equal(embed(conn, images.jpeg(images.photo_like(64, 48, seed=3)), "tiny"),
                                  np.array(json.loads(conn.execute("SELECT embedding::text FROM items WHERE id = 3").fetchone()[0]),
                                           dtype=np.float32))


def test_backfill_draws_a_progress_bar_on_a_terminal(dsn, conn):
    import os
    import pty

    backfill_table(conn)
    leader, follower = pty.openpty()
    done = subprocess.run([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, "backfill", "items", "photo", "embedding",
                           "--model", "tiny", "--batch-size", "8"], stderr=follower, stdout=subprocess.PIPE, text=True)
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    assert done.returncode == 0
    shown = drawn.decode()
    assert re.search(r"\rbackfill items \[#+\.*\] \d+/40 rows, [\d.]+ images/s, ETA \d+m\d\ds", shown), shown
    assert shown.rstrip().endswith("backfill items: 40/40 rows (100.0%), " + shown.rstrip().split("(100.0%), ")[-1])


def test_backfill_refusal_uses_the_cli_option(dsn, conn):
    backfill_table(conn, rows=2)
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'tiny')")
    conn.execute("SELECT imgembed.load_model('other', %s, %s::jsonb)", (onnx_models.conv_net(), json.dumps(TINY_CONFIG)))
    done = cli(dsn, "backfill", "items", "photo", "embedding", "--model", "other", ok=False)
    assert done.returncode == 1 and "--switch-model" in done.stderr and "switch_model =>" not in done.stderr


def test_status_shows_the_queue_and_the_lineage(dsn, conn):
    backfill_table(conn, rows=3)
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'tiny', mode => 'async')")
    conn.execute("UPDATE items SET photo = photo || ''::bytea WHERE id = 0")  # same bytes: not re-queued
    conn.execute("INSERT INTO items VALUES (99, %s)", (PHOTO,))
    out = cli(dsn, "status").stdout.splitlines()
    assert out[0] == "queue (imgembed.queue_status)"
    assert out[1].split() == ["table", "column", "queued", "in_progress", "failed", "done", "oldest_pending", "jobs/s", "eta"]
    assert out[2].split()[:6] == ["items", "embedding", "1", "0", "0", "0"]
    lineage = out.index("lineage (imgembed.vector_lineage)")
    assert out[lineage + 2].split()[:3] == ["items", "embedding", "tiny"] and "fresh" in out[lineage + 2]
    conn.execute("SELECT imgembed.load_model('tiny', %s, %s::jsonb, replace => true)", (onnx_models.conv_net(), json.dumps(TINY_CONFIG)))
    assert "STALE" in cli(dsn, "status").stdout.splitlines()[lineage + 2]


def test_status_of_an_empty_database(dsn):
    assert cli(dsn, "status").stdout == ("queue (imgembed.queue_status)\n  (no async columns with jobs)\n\n"
                                          "workers (imgembed.worker_status)\n  (no worker has run)\n\n"
                                          "models (imgembed.model_stats)\n  (nothing embedded since the statistics were reset)\n\n"
                                          "lineage (imgembed.vector_lineage)\n  (no embedded columns yet)\n")


def test_worker_refuses_packages_that_differ_from_the_servers(dsn, conn, monkeypatch, capsys):
    from pg_imgembed.client import cli as cli_module
    from pg_imgembed.client import worker as worker_module

    real = worker_module.vector_package_versions()
    monkeypatch.setattr(worker_module, "vector_package_versions", lambda: {**real, "onnxruntime": "1.0.0"})
    assert cli_module.main(["worker", "--dsn", dsn, "--once"]) == 2
    err = capsys.readouterr().err
    assert err == ("pg-imgembed: error: the worker's packages differ from the server's runtime: "
                   f"onnxruntime 1.0.0 here, {real['onnxruntime']} in the server\n"
                   f"hint: Install the server's versions (pip install 'onnxruntime=={real['onnxruntime']}'), "
                   "or start with --allow-version-mismatch if vectors may differ from img_embedding's.\n")
    assert cli_module.main(["worker", "--dsn", dsn, "--once", "--allow-version-mismatch"]) == 0


def test_backfill_says_first_which_model_and_why(dsn, conn):
    backfill_table(conn, rows=2)  # no trigger, no lineage: the default model
    done = cli(dsn, "backfill", "items", "photo", "embedding")
    assert done.stderr.splitlines()[0] == ('notice: backfill items.embedding: model "tiny" '
                                           "(the default model: the column has no embedding trigger)")
    conn.execute("SELECT imgembed.load_model('other', %s, %s::jsonb)", (onnx_models.conv_net(), json.dumps(TINY_CONFIG)))
    conn.execute("SELECT imgembed.set_default_model('other')")
    conn.execute("UPDATE items SET embedding = NULL")
    done = cli(dsn, "backfill", "items", "photo", "embedding")  # lineage now names tiny
    assert done.stderr.splitlines()[0] == 'notice: backfill items.embedding: model "tiny" (recorded in the column\'s lineage)'
    refused = cli(dsn, "backfill", "items", "photo", "embedding", "--model", "other", ok=False)
    assert "hint: Leave model out to backfill with \"tiny\", or pass --switch-model to re-embed every row with \"other\" " \
           "(and bind the column's lineage to it).\n" in refused.stderr
    conn.execute("SELECT imgembed.drop_model('tiny')")  # lineage names a model that is gone: the default, said so
    conn.execute("UPDATE items SET embedding = NULL")
    done = cli(dsn, "backfill", "items", "photo", "embedding")
    assert done.stderr.splitlines()[0] == ('notice: backfill items.embedding: model "other" '
                                           "(the default model: the column has no embedding trigger)")


def test_hints_and_offline_commands_speak_the_cli(dsn, conn, onnx_file):
    done = cli(dsn, "backfill", "nosuch_table_either", "photo", "embedding", ok=False)
    assert "pg_imgembed" not in done.stderr
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    done = cli(dsn, "backfill", "items", "photo", "embedding", "--model", "nosuch", ok=False)
    assert done.stderr.endswith("Load one with pg-imgembed models load NAME MODEL.onnx.\n"), done.stderr
    done = cli(dsn, "backfill", "items", "photo", "embedding", ok=False)
    assert "make one the default: pg-imgembed models load NAME MODEL.onnx --default." in done.stderr
    for command in (("models", "build"), ("models", "catalog"), ("models", "templates")):
        assert "--dsn" not in bare(*command, "--help").stdout
    assert "--dsn" in bare("models", "load", "--help").stdout
    gone = bare("--dsn", "host=/nonexistent-socket-dir dbname=x", "models", "list")
    assert gone.returncode == 1
    assert gone.stderr.startswith("pg-imgembed: error: cannot reach the database: connection to server on socket")
    assert gone.stderr.endswith("hint: Check --dsn or the PG* variables (PGHOST, PGPORT, PGDATABASE, PGUSER) "
                                "and that the server is running.\n")


def test_search_on_a_column_that_is_not_a_vector_says_so(conn):
    from pg_imgembed.client import search
    from pg_imgembed.errors import InvalidConfig

    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    with pytest.raises(InvalidConfig) as refused:
        search(conn, "items", "photo", PHOTO)
    assert refused.value.message == "column \"photo\" of table items has type bytea, not pgvector's vector or halfvec: search compares vectors"
    with pytest.raises(InvalidConfig) as refused:
        search(conn, "items", "nosuch", PHOTO)
    assert refused.value.message == 'column "nosuch" of table items does not exist'


def test_a_vector_column_without_dimension_gets_a_warning(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector)")
    seen: list[str] = []
    conn.add_notice_handler(lambda d: seen.append(f"{d.severity_nonlocalized}: {d.message_primary} / {d.message_hint}"))
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding')")
    assert ('WARNING: column "embedding" of public.items has no dimension: no HNSW or IVFFlat index can be built on it / '
            "ALTER TABLE public.items ALTER COLUMN embedding TYPE vector(4);") in seen
