"""The per-server model file cache: written once, private to the server, self-healing, pruned."""

import stat
from pathlib import Path

import numpy as np
import psycopg
import pytest

from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, embed, load_model, load_tiny

PHOTO = images.png(images.photo_like(40, 30, seed=1))


@pytest.fixture
def cache_dir(local_server, conn):
    (data,) = conn.execute("SHOW data_directory").fetchone()
    return Path(data) / "pg_imgembed_models"


def sha(conn, name="tiny"):
    return conn.execute("SELECT sha256 FROM imgembed.models WHERE name = %s", (name,)).fetchone()[0]


def test_first_use_writes_a_private_file_that_new_connections_load(conn, dsn, cache_dir):
    load_tiny(conn)
    first = embed(conn, PHOTO)
    path = cache_dir / f"{sha(conn)}.onnx"
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    (table_bytes,) = conn.execute("SELECT onnx FROM imgembed.model_store").fetchone()
    assert path.read_bytes() == table_bytes
    with psycopg.connect(dsn, autocommit=True) as other:
        np.testing.assert_array_equal(embed(other, PHOTO), first)
    assert path.stat().st_mtime_ns == info.st_mtime_ns  # loaded, not rewritten


def test_a_damaged_file_is_replaced_and_the_vector_is_right(conn, dsn, cache_dir):
    load_tiny(conn)
    first = embed(conn, PHOTO)
    path = cache_dir / f"{sha(conn)}.onnx"
    path.write_bytes(b"garbage")
    with psycopg.connect(dsn, autocommit=True) as other:
        np.testing.assert_array_equal(embed(other, PHOTO), first)
    with psycopg.connect(dsn, autocommit=True) as third:  # the file was discarded and written anew
        np.testing.assert_array_equal(embed(third, PHOTO), first)
    (table_bytes,) = conn.execute("SELECT onnx FROM imgembed.model_store").fetchone()
    assert path.read_bytes() == table_bytes


def test_replaced_and_dropped_models_leave_no_files(conn, cache_dir):
    load_tiny(conn)
    embed(conn, PHOTO)
    old = cache_dir / f"{sha(conn)}.onnx"
    assert old.exists()
    load_model(conn, "tiny", onnx_models.conv_net(), {"preprocess": {"resample": "nearest"}}, replace=True)
    assert not old.exists()
    embed(conn, PHOTO)
    new = cache_dir / f"{sha(conn)}.onnx"
    assert new.exists()
    conn.execute("SELECT imgembed.drop_model('tiny')")
    assert not new.exists()


def test_cache_can_be_turned_off(conn, dsn, cache_dir):
    load_model(conn, "solo", onnx_models.conv_net(extra_dims=7), TINY_CONFIG)
    with psycopg.connect(dsn, autocommit=True, options="-c imgembed.model_cache=off") as other:
        assert embed(other, PHOTO, "solo").shape == (7,)
    assert not (cache_dir / f"{sha(conn, 'solo')}.onnx").exists()
