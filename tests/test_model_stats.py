"""imgembed.model_stats: exact counts per path after a known workload, reset, privileges, a
read-only session, worker reports, a crashed backend, and a server without the preload."""

import os
import signal
import time
import uuid

import psycopg
import pytest

from pg_imgembed.client.worker import Options, Worker
from tests import images
from tests.conftest import PRELOAD
from tests.devcluster import LocalCluster
from tests.helpers import load_tiny, sql_error

PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(6)]
BAD = b"not an image"


def stats(conn):
    """(model, tower, path) -> the view's row as a dict."""
    cur = conn.execute("SELECT * FROM imgembed.model_stats")
    cols = [d.name for d in cur.description]
    return {(r[0], r[1], r[2]): dict(zip(cols, r)) for r in cur.fetchall()}


def counts(row):
    return {k: row[k] for k in ("calls", "images", "refused", "refused_by_sqlstate", "batches")}


@pytest.fixture
def tiny(conn):
    load_tiny(conn)
    conn.execute("SELECT imgembed.model_stats_reset()")
    return conn


@pytest.fixture
def role(conn, dsn):
    name = f"viewer_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    yield name, psycopg.conninfo.make_conninfo(dsn, user=name)
    conn.execute(f"DROP OWNED BY {name}")
    conn.execute(f"DROP ROLE {name}")


def test_function_calls_count_images_refusals_and_time(tiny):
    for photo in PHOTOS[:3]:
        tiny.execute("SELECT img_embedding(%s)", (photo,))
    tiny.execute("SELECT img_embedding(%s)", (PHOTOS[2],))  # the same image again: a call, no image
    assert sql_error(tiny, "SELECT img_embedding(%s, 'tiny')", (BAD,)).sqlstate == "22P03"
    tiny.execute("SELECT imgembed.embed_batch('tiny', %s::bytea[])", ([PHOTOS[0], None, PHOTOS[1], PHOTOS[3]],))
    row = stats(tiny)[("tiny", "image", "function")]
    assert counts(row) == {"calls": 6, "images": 6, "refused": 1, "refused_by_sqlstate": {"22P03": 1}, "batches": 4}
    assert float(row["mean_batch_size"]) == 6 / 4  # three calls of one image, one run of three
    assert row["total_decode_ms"] > 0 and row["total_preprocess_ms"] > 0 and row["total_inference_ms"] > 0
    assert 0 < row["max_inference_ms"] <= row["total_inference_ms"]
    assert list(stats(tiny)) == [("tiny", "image", "function")]


def test_trigger_and_backfill_paths(tiny):
    tiny.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    tiny.execute("INSERT INTO items VALUES (1, %s), (2, %s), (3, %s), (4, %s), (5, %s)", (*PHOTOS[:4], BAD))
    tiny.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 2, on_error => 'null')")
    tiny.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', on_error => 'null')")
    tiny.execute("INSERT INTO items VALUES (6, %s), (7, %s), (8, %s)", (PHOTOS[4], PHOTOS[5], BAD))
    seen = stats(tiny)
    # backfill: batches of 2, 2 and 1 claimed rows; one image refused
    assert counts(seen[("tiny", "image", "backfill")]) == {
        "calls": 3, "images": 4, "refused": 1, "refused_by_sqlstate": {"22P03": 1}, "batches": 2}
    assert counts(seen[("tiny", "image", "trigger")]) == {
        "calls": 3, "images": 2, "refused": 1, "refused_by_sqlstate": {"22P03": 1}, "batches": 2}
    assert ("tiny", "image", "function") not in seen


def test_the_worker_reports_its_batches(tiny, dsn):
    tiny.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    tiny.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'async')")
    tiny.execute("INSERT INTO items SELECT g, (%s::bytea[])[g] FROM generate_series(1, 7) g", (PHOTOS + [BAD],))
    worker = Worker(dsn, Options(once=True, batch_size=4))
    worker.run()
    assert (worker.done, worker.failed) == (6, 1)
    row = stats(tiny)[("tiny", "image", "worker")]
    assert counts(row) == {"calls": 2, "images": 6, "refused": 1, "refused_by_sqlstate": {"22P03": 1}, "batches": 2}
    assert row["mean_batch_size"] == 3  # runs of 4 and 2 images (the bad one never reaches inference)
    assert row["total_inference_ms"] > 0


def test_worker_reports_are_checked(tiny, role):
    name, role_dsn = role
    args = "'tiny', 1, '{}', '{}', 1, 1, 0, 0, 0, 0, 0, 0"
    with psycopg.connect(role_dsn, autocommit=True) as app:
        err = sql_error(app, f"SELECT imgembed.report_worker_batch({args})")
        assert err.sqlstate == "42501"  # not a member of imgembed_worker: no EXECUTE
    tiny.execute(f"GRANT imgembed_worker TO {name}")
    tiny.execute("SELECT imgembed.revoke_model_usage('tiny', 'PUBLIC')")
    with psycopg.connect(role_dsn, autocommit=True) as worker:
        err = sql_error(worker, f"SELECT imgembed.report_worker_batch({args})")
        assert (err.sqlstate, err.diag.message_primary) == (
            "42501", f'pg_imgembed: role "{name}" may not report statistics of model "tiny": it may not use it')
        tiny.execute("SELECT imgembed.grant_model_usage('tiny', %s)", (name,))
        err = sql_error(worker, "SELECT imgembed.report_worker_batch('tiny', 1, '{bad}', '{1}', 1, 1, 0, 0, 0, 0, 0, 0)")
        assert err.sqlstate == "22023"
        err = sql_error(worker, "SELECT imgembed.report_worker_batch('tiny', -1, '{}', '{}', 1, 1, 0, 0, 0, 0, 0, 0)")
        assert err.sqlstate == "22023"
        err = sql_error(worker, "SELECT imgembed.report_worker_batch('tiny', 1, '{}', '{}', 1, 1, 'NaN', 0, 0, 0, 0, 0)")
        assert err.sqlstate == "22023"
        assert worker.execute(f"SELECT imgembed.report_worker_batch({args})").fetchone() == (True,)
    assert counts(stats(tiny)[("tiny", "image", "worker")])["calls"] == 1


def test_each_role_sees_only_models_it_may_use_and_only_a_superuser_resets(tiny, role):
    name, role_dsn = role
    load_tiny(tiny, "private", default=False)
    tiny.execute("SELECT imgembed.revoke_model_usage('private', 'PUBLIC')")
    tiny.execute("SELECT img_embedding(%s, 'private')", (PHOTOS[0],))
    tiny.execute("SELECT img_embedding(%s, 'tiny')", (PHOTOS[0],))
    assert set(stats(tiny)) == {("private", "image", "function"), ("tiny", "image", "function")}
    with psycopg.connect(role_dsn, autocommit=True) as app:
        assert set(stats(app)) == {("tiny", "image", "function")}
        assert app.execute("SELECT count(*) FROM imgembed._model_stats()").fetchone() == (1,)  # no way around the view
        err = sql_error(app, "SELECT imgembed.model_stats_reset()")
        assert err.sqlstate == "42501"
        tiny.execute("SELECT imgembed.grant_model_usage('private', %s)", (name,))
        assert set(stats(app)) == {("private", "image", "function"), ("tiny", "image", "function")}
    before = stats(tiny)[("tiny", "image", "function")]["stats_reset"]
    tiny.execute("SELECT imgembed.model_stats_reset()")
    assert stats(tiny) == {}
    tiny.execute("SELECT img_embedding(%s, 'tiny')", (PHOTOS[1],))
    after = stats(tiny)[("tiny", "image", "function")]
    assert (after["calls"], after["images"]) == (1, 1) and after["stats_reset"] > before


def test_a_read_only_session_counts(tiny, dsn):
    read_only = psycopg.conninfo.make_conninfo(dsn, options="-c default_transaction_read_only=on")
    with psycopg.connect(read_only, autocommit=True) as ro:
        assert ro.execute("SHOW transaction_read_only").fetchone() == ("on",)
        ro.execute("SELECT img_embedding(%s)", (PHOTOS[0],))
        ro.execute("SELECT imgembed.embed_batch(NULL, %s::bytea[])", (PHOTOS[1:3],))
        assert counts(stats(ro)[("tiny", "image", "function")])["images"] == 3


def test_a_crashed_backend_leaves_consistent_counters(tiny, dsn, server_dsn, local_server):
    tiny.execute("SELECT img_embedding(%s)", (PHOTOS[0],))
    before = stats(tiny)[("tiny", "image", "function")]
    assert before["calls"] == 1
    (pid,) = tiny.execute("SELECT pg_backend_pid()").fetchone()
    os.kill(pid, signal.SIGKILL)  # the postmaster restarts every backend and reinitialises shared memory
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True) as again:
                again.execute("SELECT img_embedding(%s)", (PHOTOS[1],))
                row = stats(again)[("tiny", "image", "function")]
                break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert (row["calls"], row["images"]) == (1, 1)  # counted again from zero, never half-written
    assert row["stats_reset"] > before["stats_reset"]


def test_without_the_preload_the_statistics_are_off_and_embedding_works(local_server, server_dsn):
    with psycopg.connect(server_dsn) as server:
        version = int(server.execute("SHOW server_version_num").fetchone()[0])
    with LocalCluster() as cluster:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_imgembed CASCADE")
            load_tiny(conn)
            conn.execute("SELECT img_embedding(%s)", (PHOTOS[0],))
            notices: list[str] = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            rows = conn.execute("SELECT * FROM imgembed.model_stats").fetchall()
            if version >= 170000:  # the DSM registry: no preload needed
                assert len(rows) == 1 and notices == []
            else:
                assert rows == []
                assert notices == [f"pg_imgembed's model statistics are off: on PostgreSQL {version // 10000} "
                                   "they need shared_preload_libraries"]


def test_what_does_not_fit_is_counted_without_a_model_for_superusers(tiny, role):
    long_name = "m" * 200  # longer than an entry's 127 bytes
    load_tiny(tiny, long_name, default=False)
    tiny.execute("SELECT img_embedding(%s, %s)", (PHOTOS[0], long_name))
    assert counts(stats(tiny)[(None, None, None)]) == {
        "calls": 1, "images": 1, "refused": 0, "refused_by_sqlstate": {}, "batches": 1}
    with psycopg.connect(role[1], autocommit=True) as app:  # may use the model, sees no overflow row
        assert app.execute("SELECT imgembed.has_model_usage(%s)", (long_name,)).fetchone() == (True,)
        assert stats(app) == {}


def test_a_hot_standby_counts(local_server):
    """A standby made by pg_basebackup counts in its own shared memory (the preload comes with the
    data directory). The primary's data directory holds the model file cache with an optimized
    graph, whose paths fit pg_basebackup's tar format."""
    with LocalCluster(settings=PRELOAD) as primary:
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_imgembed CASCADE")
            load_tiny(conn)
            conn.execute("SELECT img_embedding(%s)", (PHOTOS[2],))
        assert list((primary.data / "pg_imgembed_models").glob("*.graph/graph.onnx"))
        standby = LocalCluster()
        standby._own(standby.root, 0o755)
        standby._own(standby.socket_dir, 0o755)
        try:
            standby._run("pg_basebackup", "-h", str(primary.socket_dir), "-p", str(primary.port), "-U", "postgres",
                         "-D", str(standby.data), "-R", "-X", "stream")
            with open(standby.data / "postgresql.conf", "a") as conf:
                conf.write(f"port = {standby.port}\nunix_socket_directories = '{standby.socket_dir}'\n")
            standby.start()
            with psycopg.connect(standby.dsn, autocommit=True) as replica:
                assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
                replica.execute("SELECT img_embedding(%s)", (PHOTOS[0],))
                replica.execute("SELECT img_embedding(%s)", (PHOTOS[1],))
                assert counts(stats(replica)[("tiny", "image", "function")])["images"] == 2
        finally:
            standby.remove()
