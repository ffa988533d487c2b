"""The per-server model file cache: written once, private to the server, self-healing, pruned."""

import shutil
import stat
import uuid
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


@pytest.fixture(autouse=True)
def model_files_only(conn):
    """Sessions here load the model files: a saved optimized graph would not read them at all
    (tests/test_optimized_graphs.py)."""
    (db,) = conn.execute("SELECT current_database()").fetchone()
    conn.execute(f'ALTER DATABASE "{db}" SET imgembed.optimized_graphs = off')
    conn.execute("SET imgembed.optimized_graphs = off")


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


# ---------------------------------------------------------------- what the cache trusts

def postgres_owned(path: Path, data: bytes = b"", mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    shutil.chown(path, "postgres", "postgres")
    return path


def test_a_planted_file_of_the_right_size_is_checked_and_replaced(conn, dsn, cache_dir):
    load_tiny(conn)
    first = embed(conn, PHOTO)
    (real,) = conn.execute("SELECT onnx FROM imgembed.model_store").fetchone()
    other = onnx_models.conv_net(extra_dims=4)  # another valid model, padded to the same size below
    path = cache_dir / f"{sha(conn)}.onnx"
    path.unlink()
    postgres_owned(path, (other + b"\0" * len(real))[:len(real)])
    with psycopg.connect(dsn, autocommit=True) as other_conn:
        np.testing.assert_array_equal(embed(other_conn, PHOTO), first)  # not the planted model's vector
    assert path.read_bytes() == real


def test_a_symlink_in_place_of_a_model_file_is_not_followed(conn, dsn, cache_dir, tmp_path):
    load_tiny(conn)
    first = embed(conn, PHOTO)
    path = cache_dir / f"{sha(conn)}.onnx"
    victim = postgres_owned(cache_dir / "victim", b"precious")
    path.unlink()
    path.symlink_to(victim)
    with psycopg.connect(dsn, autocommit=True) as other:
        np.testing.assert_array_equal(embed(other, PHOTO), first)
    assert not path.is_symlink() and victim.read_bytes() == b"precious"
    victim.unlink()


def test_a_symlink_at_the_temporary_name_does_not_redirect_the_write(conn, dsn, cache_dir):
    load_tiny(conn)
    embed(conn, PHOTO)
    path = cache_dir / f"{sha(conn)}.onnx"
    path.unlink()
    victim = postgres_owned(cache_dir / "victim", b"precious")
    with psycopg.connect(dsn, autocommit=True) as other:
        (pid,) = other.execute("SELECT pg_backend_pid()").fetchone()
        (cache_dir / f".{sha(conn)}.{pid}.tmp").symlink_to(victim)
        embed(other, PHOTO)
    assert victim.read_bytes() == b"precious"
    assert path.is_file() and not path.is_symlink()
    victim.unlink()


@pytest.mark.parametrize("kind", ["world_writable", "owned_by_root", "symlink"])
def test_a_cache_directory_others_control_is_not_used(conn, dsn, local_server, kind, tmp_path):
    load_tiny(conn)
    expected = embed(conn, PHOTO)
    base = Path(f"/tmp/imgembed-cache-{uuid.uuid4().hex[:8]}")
    base.mkdir()
    try:
        target = base / "cache"
        if kind == "world_writable":
            target.mkdir(mode=0o777)
            target.chmod(0o1777)
        elif kind == "owned_by_root":
            target.mkdir(mode=0o755)
        else:
            real = base / "real"
            real.mkdir(mode=0o700)
            shutil.chown(real, "postgres", "postgres")
            target.symlink_to(real)
        base.chmod(0o755)
        with psycopg.connect(dsn, autocommit=True, options=f"-c imgembed.model_cache={target}") as other:
            warnings: list[str] = []
            other.add_notice_handler(lambda d: warnings.append(d.message_primary))
            np.testing.assert_array_equal(embed(other, PHOTO), expected)  # from the table's bytes
        reason = "is a symbolic link or not a directory" if kind == "symlink" else "writable by group or others"
        assert [w for w in warnings if w.startswith(f"model cache directory {target}") and f"{reason}: not used" in w]
        assert not list(base.rglob("*.onnx"))
    finally:
        shutil.rmtree(base)


def test_pruning_removes_only_files_the_cache_writes(conn, cache_dir):
    load_tiny(conn)
    embed(conn, PHOTO)
    keep = [postgres_owned(cache_dir / name, b"x") for name in ("notes.onnx", "README", "ABC.onnx")]
    conn.execute("SELECT imgembed.drop_model('tiny')")
    assert all(p.exists() for p in keep)
    assert not list(cache_dir.glob("[0-9a-f]" * 64 + ".onnx"))
    for p in keep:
        p.unlink()
