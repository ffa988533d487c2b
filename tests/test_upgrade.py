"""ALTER EXTENSION pg_imgembed UPDATE from every released version as released:
nothing lost, everything works, and the result is the same extension as a fresh install.

Each release runs here as released: its frozen install script (sql/released/) and its Python
package from the release commit, in a runtime of its own beside the installed one.
"""

import io
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from pg_imgembed import __version__
from pg_imgembed.client.worker import Options, Worker
from tests import images, onnx_models
from tests.catalog import CATALOG, snapshot
from tests.devcluster import pg_bindir
from tests.helpers import TINY_CONFIG, embed, vector

ROOT = Path(__file__).resolve().parent.parent
RELEASES = {"0.1.0": "0dafd3d", "0.2.0": "44a02c7", "0.3.0": "7230877", "0.4.0": "9e21f94", "0.5.0": "ef32976"}  # version -> its release commit
RUNTIME_DIR = Path(os.environ.get("PG_IMGEMBED_RUNTIME_DIR", "/usr/local/lib/pg_imgembed"))
# Error rows as released versions name their table (0.4.0 made it a regclass).
ERRORS_BEFORE_0_4_0 = "SELECT table_name, row_key, sqlstate FROM imgembed.errors"
ERRORS = "SELECT 'public.' || tbl::text, row_key, sqlstate FROM imgembed.errors"
PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(4)]

@pytest.fixture(params=sorted(f.stem.removeprefix("pg_imgembed--") for f in (ROOT / "sql" / "released").glob("*.sql")))
def released(request, local_server) -> tuple[str, Path]:
    """A released version and a runtime with its package and the installed runtime's dependencies."""
    version = request.param
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", RELEASES[version], "pg_imgembed"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"needs git and the release commit {RELEASES[version]}")
    installed = next((RUNTIME_DIR / "venv" / "lib").glob("python3.*/site-packages"))
    root = Path(f"/tmp/imgembed-runtime-{version}-{uuid.uuid4().hex[:8]}")
    site = root / "venv" / "lib" / installed.parent.name / "site-packages"
    site.mkdir(parents=True)
    for entry in installed.iterdir():
        if entry.name not in ("pg_imgembed", "__pycache__") and not entry.name.endswith(".pth"):
            (site / entry.name).symlink_to(entry)
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(site)
    # 0.1.0 appended its runtime after the system's dist-packages (the bug 0.2.0 fixes); where
    # Debian's numpy or protobuf is installed it could not run at all, so put it first here.
    (site / "aaa_first.pth").write_text(f"import sys; sys.path.insert(0, {str(site)!r})\n")
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    yield version, root
    shutil.rmtree(root)


@pytest.fixture
def databases(server_dsn):
    names = {k: f"imgembed_{k}_{uuid.uuid4().hex[:8]}" for k in ("upgraded", "fresh", "restored")}
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        for name in names.values():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield {k: psycopg.conninfo.make_conninfo(server_dsn, dbname=v) for k, v in names.items()}
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        for name in names.values():
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def use_release(dsn: str, released: tuple[str, Path]) -> None:
    """What a user of a release had: a model, sync and async triggers, embedded rows, queued jobs, an error."""
    version, runtime = released
    with psycopg.connect(dsn, autocommit=True, options=f"-c imgembed.runtime_dir={runtime}") as conn:
        conn.execute(sql.SQL("CREATE EXTENSION pg_imgembed VERSION {} CASCADE").format(sql.Literal(version)))
        conn.execute("SELECT * FROM imgembed.load_model('tiny', %s, %s::jsonb)",
                     (onnx_models.conv_net(), psycopg.types.json.Jsonb(TINY_CONFIG)))
        conn.execute("SELECT imgembed.set_default_model('tiny')")
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', on_error => 'null')")
        conn.execute("INSERT INTO items VALUES (1, %s), (2, %s), (3, 'junk')", (PHOTOS[0], PHOTOS[1]))
        conn.execute("CREATE TABLE later (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        conn.execute("SELECT imgembed.create_embedding_trigger('later', 'photo', 'embedding', mode => 'async')")
        conn.execute("INSERT INTO later VALUES (1, %s), (2, %s)", (PHOTOS[2], PHOTOS[3]))
        assert conn.execute("SELECT imgembed.version()").fetchone() == (version,)


def test_a_release_updates_without_losing_anything(released, databases):
    dsn = databases["upgraded"]
    use_release(dsn, released)
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = {
            "models": conn.execute("SELECT name, sha256, is_default, bytes FROM imgembed.models").fetchall(),
            "vectors": conn.execute("SELECT id, embedding::text FROM items ORDER BY id").fetchall(),
            "jobs": conn.execute("SELECT tbl::text, row_key FROM imgembed.queue ORDER BY id").fetchall(),
            "errors": conn.execute(ERRORS_BEFORE_0_4_0 if released[0] < "0.4.0" else ERRORS).fetchall(),
        }
        assert len(before["vectors"]) == 3 and len(before["jobs"]) == 2 and len(before["errors"]) == 1
        err = conn.execute  # the release's SQL with this runtime: the error names the fix
        with pytest.raises(psycopg.Error) as mismatch:
            err("SELECT img_embedding(%s)", (PHOTOS[0],))
        assert mismatch.value.diag.message_primary.endswith(
            f"pg_imgembed SQL version {released[0]} does not match its Python package version {__version__}")
        assert "run `make install`, then ALTER EXTENSION pg_imgembed UPDATE" in mismatch.value.diag.message_hint

        conn.execute("ALTER EXTENSION pg_imgembed UPDATE")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT imgembed.version(), extversion FROM pg_extension WHERE extname = 'pg_imgembed'"
                            ).fetchone() == (__version__, __version__)
        assert conn.execute("SELECT name, sha256, is_default, bytes FROM imgembed.models").fetchall() == before["models"]
        assert conn.execute("SELECT id, embedding::text FROM items ORDER BY id").fetchall() == before["vectors"]
        # 0.4.0: jobs keep each key value as text (what the enqueue path writes), errors name their
        # table by oid, grants their role by oid (0: PUBLIC), and the triggers became bindings.
        assert conn.execute("SELECT tbl::text, row_key FROM imgembed.queue ORDER BY id").fetchall() == [
            (table, {k: str(v) for k, v in key.items()}) for table, key in before["jobs"]]
        assert conn.execute(ERRORS).fetchall() == before["errors"]
        assert conn.execute("SELECT model, grantee FROM imgembed.model_usage").fetchall() == [("tiny", 0)]
        assert conn.execute("SELECT tbl::text, vector_column, image_column, model, on_error, mode FROM imgembed.bindings "
                            "ORDER BY 1").fetchall() == [("items", "embedding", "photo", "tiny", "null", "sync"),
                                                         ("later", "embedding", "photo", "tiny", "error", "async")]
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname ~ '^(imgembed_)?enqueue_[0-9]'").fetchone() == (0,)
        assert conn.execute("SELECT model, stale FROM imgembed.vector_lineage ORDER BY tbl::text").fetchall() == [
            ("tiny", False), ("tiny", False)]
        # Everything still works: the sync trigger, the queued jobs, a new async insert, backfill.
        np.testing.assert_array_equal(vector(before["vectors"][0][1]), embed(conn, PHOTOS[0]))
        conn.execute("INSERT INTO items VALUES (4, %s)", (PHOTOS[3],))
        (text,) = conn.execute("SELECT embedding::text FROM items WHERE id = 4").fetchone()
        np.testing.assert_array_equal(vector(text), embed(conn, PHOTOS[3]))
        conn.execute("INSERT INTO later VALUES (3, %s)", (PHOTOS[0],))
        worker = Worker(dsn, Options(once=True))
        worker.run()
        assert (worker.done, worker.failed) == (3, 0)
        for row_id, text in conn.execute("SELECT id, embedding::text FROM later"):
            np.testing.assert_array_equal(vector(text), embed(conn, PHOTOS[[2, 3, 0][row_id - 1]]))
        conn.execute("UPDATE items SET embedding = NULL WHERE id = 2")
        conn.execute("CALL imgembed.backfill('items', 'photo', 'embedding')")
        assert conn.execute("SELECT embedding::text FROM items WHERE id = 2").fetchone() == (before["vectors"][1][1],)
        # The release's pipeline takes this version's preprocessing prefix without its columns going
        # stale; from 0.5.0 on, the stored model already has it.
        assert conn.execute("SELECT rebuilt, same_vectors FROM imgembed.rebuild_model('tiny')").fetchone() == (
            released[0] < "0.5.0", True)
        assert conn.execute("SELECT bool_or(stale) FROM imgembed.vector_lineage").fetchone() == (False,)
        np.testing.assert_allclose(embed(conn, PHOTOS[0]), vector(before["vectors"][0][1]), rtol=0, atol=1e-6)


def test_an_updated_database_is_a_fresh_install_and_dumps(released, databases, tmp_path):
    use_release(databases["upgraded"], released)
    with psycopg.connect(databases["upgraded"], autocommit=True) as conn:
        conn.execute("ALTER EXTENSION pg_imgembed UPDATE")
    with psycopg.connect(databases["fresh"], autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_imgembed CASCADE")
    upgraded, fresh = snapshot(databases["upgraded"]), snapshot(databases["fresh"])
    for part in CATALOG:
        assert upgraded[part] == fresh[part], part

    dump = tmp_path / "upgraded.dump"
    bindir = pg_bindir()
    subprocess.run([bindir / "pg_dump", "-Fc", "-f", dump, "-d", databases["upgraded"]], check=True)
    subprocess.run([bindir / "pg_restore", "--exit-on-error", "-d", databases["restored"], dump], check=True)
    with psycopg.connect(databases["restored"], autocommit=True) as restored, \
            psycopg.connect(databases["upgraded"], autocommit=True) as original:
        for query in ("SELECT name, sha256, generation FROM imgembed.models",
                      "SELECT id, embedding::text FROM items ORDER BY id",
                      "SELECT model, grantee FROM imgembed.model_usage",
                      "SELECT tbl::text, vector_column, model, generation FROM imgembed.lineage ORDER BY 1"):
            assert restored.execute(query).fetchall() == original.execute(query).fetchall(), query
        restored.execute("INSERT INTO items VALUES (5, %s)", (PHOTOS[1],))
        assert restored.execute("SELECT a.embedding = b.embedding FROM items a, items b WHERE a.id = 2 AND b.id = 5"
                                ).fetchone() == (True,)
