"""The optimized-graph cache: saved once, loaded by later sessions, keyed so it never applies where
it should not, rejected when changed, and never in the way (a read-only directory, off)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import psycopg
import pytest

from pg_imgembed.onnx import optimized_graphs
from pg_imgembed.onnx.optimized_graphs import graph_key
from tests import images
from tests.helpers import embed, load_tiny, sql_error

PHOTO = images.png(images.photo_like(40, 30, seed=3))


@pytest.fixture
def cache_dir(local_server, conn) -> Path:
    (data,) = conn.execute("SHOW data_directory").fetchone()
    return Path(data) / "pg_imgembed_models"


def fresh_session(dsn: str, **options: str) -> tuple[np.ndarray, dict[str, int]]:
    """A vector from a new connection (a new backend, so a new session), and what the cache did."""
    flags = " ".join(f"-c imgembed.{k}={v}" for k, v in options.items())
    with psycopg.connect(dsn, autocommit=True, options=flags) as conn:
        vector = embed(conn, PHOTO)
        (report,) = conn.execute("SELECT imgembed.runtime()->'optimized_graphs'").fetchone()
    return vector, report


def entries(cache_dir: Path, sha256: str) -> list[Path]:
    return sorted(cache_dir.glob(f"{sha256[:16]}.*.graph"))


@pytest.fixture
def model(conn, cache_dir) -> str:
    load_tiny(conn)
    (sha,) = conn.execute("SELECT sha256 FROM imgembed.models WHERE name = 'tiny'").fetchone()
    for entry in entries(cache_dir, sha):  # the tiny model is shared by every test of this server
        shutil.rmtree(entry)
    return sha


def test_a_graph_saved_once_is_loaded_by_later_sessions(conn, dsn, cache_dir, model):
    plain, _ = fresh_session(dsn, optimized_graphs="off")
    first, report = fresh_session(dsn)
    assert report == {"loaded": 0, "saved": 1}
    (entry,) = entries(cache_dir, model)
    assert entry.name == f"{model[:16]}.{graph_key(model, 'cpu')}.graph"
    # pg_basebackup's tar format takes paths of at most 99 characters, the cache sitting in the data directory.
    assert len(f"pg_imgembed_models/{entry.name}/manifest.json") < 99
    assert stat.S_IMODE(entry.stat().st_mode) == 0o700
    assert sorted(p.name for p in entry.iterdir()) == ["graph.data", "graph.onnx", "manifest.json"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 and p.stat().st_uid == entry.stat().st_uid for p in entry.iterdir())
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["level"] == "ORT_ENABLE_ALL" and manifest["cpu"] == list(optimized_graphs.cpu_features())
    again, report = fresh_session(dsn)
    assert report == {"loaded": 1, "saved": 0}
    np.testing.assert_array_equal(first, plain)
    np.testing.assert_array_equal(again, plain)


def test_the_key_covers_what_the_graph_depends_on(monkeypatch):
    import onnxruntime

    sha = "a" * 64
    base = graph_key(sha, "cpu")
    assert graph_key("b" * 64, "cpu") != base
    assert graph_key(sha, "cuda") != base
    monkeypatch.setattr(onnxruntime, "__version__", "9.9.9")
    assert graph_key(sha, "cpu") != base
    monkeypatch.undo()
    monkeypatch.setattr(optimized_graphs, "cpu_features", lambda: ("avx2",))  # AVX2 lays NCHWc out in 8s, not 16s
    avx2 = graph_key(sha, "cpu")
    assert avx2 != base
    monkeypatch.setattr(optimized_graphs.platform, "machine", lambda: "aarch64")
    assert graph_key(sha, "cpu") != avx2


def test_other_providers_never_use_it():
    graphs = optimized_graphs.OptimizedGraphs()
    fd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with graphs.plan(fd, "a" * 64, "cuda") as plan:
            assert plan is None
    finally:
        os.close(fd)


def test_a_graph_of_another_onnxruntime_is_not_used_and_goes(conn, dsn, cache_dir, model):
    fresh_session(dsn)
    (entry,) = entries(cache_dir, model)
    other = entry.with_name(f"{model[:16]}.{'0' * 24}.graph")  # as an older onnxruntime or another CPU keyed it
    old = shutil.copytree(entry, entry.with_name(f"{model}.{graph_key(model, 'cpu')}.graph"))  # as 0.4.0 named it
    for path in (old, *old.iterdir()):  # the server's, as the server made it
        os.chown(path, entry.stat().st_uid, entry.stat().st_gid)
    entry.rename(other)
    _, report = fresh_session(dsn)
    assert report == {"loaded": 0, "saved": 1}
    assert entries(cache_dir, model) == [entry]  # the stale ones were removed when the new one was saved
    assert not list(cache_dir.glob(f"{model}.*.graph"))


@pytest.mark.parametrize("tamper", ["rewrite", "same_bytes", "symlink", "manifest"])
def test_a_changed_file_is_rejected_and_rebuilt(conn, dsn, cache_dir, model, tamper):
    plain, _ = fresh_session(dsn, optimized_graphs="off")
    fresh_session(dsn)
    (entry,) = entries(cache_dir, model)
    graph = entry / "graph.onnx"
    if tamper == "rewrite":
        data = bytearray(graph.read_bytes())
        data[-1] ^= 1
        graph.write_bytes(bytes(data))
    elif tamper == "same_bytes":  # even the very same bytes, rewritten in place, are not trusted
        data = graph.read_bytes()
        mtime = graph.stat().st_mtime_ns
        graph.write_bytes(data)
        os.utime(graph, ns=(mtime, mtime))  # mtime can be put back; ctime cannot
    elif tamper == "symlink":
        shutil.copy(graph, entry / "elsewhere.onnx")
        graph.unlink()
        graph.symlink_to(entry / "elsewhere.onnx")
    else:
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest["files"]["../../postgresql.conf"] = manifest["files"]["graph.onnx"]
        (entry / "manifest.json").write_text(json.dumps(manifest))
    vector, report = fresh_session(dsn)
    assert report == {"loaded": 0, "saved": 1}
    np.testing.assert_array_equal(vector, plain)
    assert not (entry / "graph.onnx").is_symlink() and not (entry / "elsewhere.onnx").exists()
    assert fresh_session(dsn)[1] == {"loaded": 1, "saved": 0}


def test_a_read_only_cache_directory_falls_back_cleanly(conn, dsn, cache_dir, model):
    plain, _ = fresh_session(dsn, optimized_graphs="off")  # the model file is in place
    mode = stat.S_IMODE(cache_dir.stat().st_mode)
    cache_dir.chmod(0o500)
    try:
        with psycopg.connect(dsn, autocommit=True) as other:
            notices: list[str] = []
            other.add_notice_handler(lambda d: notices.append(d.message_primary))
            np.testing.assert_array_equal(embed(other, PHOTO), plain)
            (report,) = other.execute("SELECT imgembed.runtime()->'optimized_graphs'").fetchone()
        assert report == {"loaded": 0, "saved": 0} and notices == []
        assert entries(cache_dir, model) == [] and not list(cache_dir.glob(".build.*"))
    finally:
        cache_dir.chmod(mode)


def test_off_and_superuser_only(conn, dsn, cache_dir, model):
    _, report = fresh_session(dsn, optimized_graphs="off")
    assert report == {"loaded": 0, "saved": 0} and entries(cache_dir, model) == []
    conn.execute("CREATE ROLE graph_user LOGIN")
    try:
        with psycopg.connect(dsn, user="graph_user", autocommit=True) as app:
            embed(app, PHOTO)  # loads the settings module
            err = sql_error(app, "SET imgembed.optimized_graphs = off")
            assert (err.sqlstate, err.diag.message_primary) == (
                "42501", 'permission denied to set parameter "imgembed.optimized_graphs"')
    finally:
        conn.execute("DROP ROLE graph_user")


def test_dropped_models_leave_no_graphs(conn, dsn, cache_dir, model):
    fresh_session(dsn)
    assert entries(cache_dir, model)
    conn.execute("SELECT imgembed.drop_model('tiny')")
    assert entries(cache_dir, model) == []


def test_the_embedding_path_imports_no_builder(conn, dsn, model):
    """onnx (pipeline builds), onnxruntime's quantizer and tokenizers are not loaded to embed images."""
    conn.execute("""CREATE FUNCTION loaded(prefixes text[]) RETURNS text[] LANGUAGE plpython3u AS $$
                    import sys
                    return sorted(m for m in sys.modules if m.split('.')[0] in prefixes
                                  or m.startswith(('onnxruntime.quantization', 'google.protobuf')))
                    $$""")
    with psycopg.connect(dsn, autocommit=True) as other:
        embed(other, PHOTO)
        (found,) = other.execute("SELECT loaded(ARRAY['onnx', 'tokenizers'])").fetchone()
    assert found == []
