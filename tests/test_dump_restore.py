"""pg_dump carries the models (extension config tables), the embeddings and the triggers."""

import subprocess
import uuid

import psycopg
import pytest
from psycopg import sql

from tests import images
from tests.devcluster import pg_bindir
from tests.helpers import embed, load_tiny

PHOTO = images.png(images.photo_like(40, 30, seed=1))


@pytest.fixture
def restored_dsn(server_dsn):
    name = f"imgembed_restore_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_dump_and_restore_a_database_with_a_model(local_server, conn, dsn, restored_dsn, tmp_path):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', on_error => 'null')")
    conn.execute("INSERT INTO items VALUES (1, %s), (2, 'junk')", (PHOTO,))
    before = conn.execute("SELECT name, sha256, is_default, preprocess FROM imgembed.models").fetchall()

    dump = tmp_path / "db.dump"
    bindir = pg_bindir()
    subprocess.run([bindir / "pg_dump", "-Fc", "-f", dump, "-d", dsn], check=True)
    subprocess.run([bindir / "pg_restore", "--exit-on-error", "-d", restored_dsn, dump], check=True)

    with psycopg.connect(restored_dsn, autocommit=True) as restored:
        assert restored.execute("SELECT name, sha256, is_default, preprocess FROM imgembed.models").fetchall() == before
        (ok,) = restored.execute(
            "SELECT sha256 = encode(sha256(onnx), 'hex') FROM imgembed.model_store").fetchone()
        assert ok  # the bytes themselves survived
        assert restored.execute("SELECT count(*) FROM imgembed.errors").fetchone()[0] == 1
        assert restored.execute("SELECT embedding::text FROM items WHERE id = 1").fetchone() == \
            conn.execute("SELECT embedding::text FROM items WHERE id = 1").fetchone()
        restored.execute("INSERT INTO items VALUES (3, %s)", (PHOTO,))  # the trigger came along
        (same,) = restored.execute("SELECT a.embedding = b.embedding FROM items a, items b WHERE a.id = 1 AND b.id = 3").fetchone()
        assert same
        assert (embed(restored, PHOTO) == embed(conn, PHOTO)).all()
