"""Async triggers and pg-imgembed worker: queue, shared workers, retries, leases, SIGTERM."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg
import pytest

from pg_imgembed.client.worker import Options, Worker
from tests import images, onnx_models
from tests.helpers import embed, load_model, load_tiny, sql_error, vector

PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(8)]
N = 40


@pytest.fixture
def queued(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'async')")
    conn.execute("CREATE TABLE writes (id int)")
    conn.execute("""CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN INSERT INTO writes VALUES (NEW.id); RETURN NEW; END $$""")
    conn.execute("CREATE TRIGGER counted AFTER UPDATE OF embedding ON items FOR EACH ROW "
                 "WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION count_write()")
    conn.execute("INSERT INTO items (id, photo) SELECT g, (%s::bytea[])[1 + g %% 8] FROM generate_series(1, %s) g",
                 (PHOTOS, N))
    return conn


def work(dsn, **options):
    worker = Worker(dsn, Options(**{"once": True, "retry_base_s": 0.2, **options}))
    worker.run()
    return worker


def status(conn):
    return conn.execute("SELECT queued, in_progress, failed, done FROM imgembed.queue_status").fetchone()


def assert_all_embedded_once(conn):
    for row_id, text in conn.execute("SELECT id, embedding::text FROM items"):
        np.testing.assert_array_equal(vector(text), embed(conn, PHOTOS[row_id % 8]))
    assert conn.execute("SELECT count(*), count(DISTINCT id) FROM writes").fetchone() == (N, N)
    assert conn.execute("SELECT count(*) FROM imgembed.queue").fetchone()[0] == 0


def test_async_insert_only_enqueues(queued):
    assert queued.execute("SELECT count(embedding) FROM items").fetchone()[0] == 0
    assert status(queued) == (N, 0, 0, 0)
    (age,) = queued.execute("SELECT oldest_pending_age > interval '0' FROM imgembed.queue_status").fetchone()
    assert age


def test_async_trigger_clears_only_vectors_of_another_image(queued):
    queued.execute("INSERT INTO items (id, photo, embedding) VALUES (100, %s, '[1,2,3,4]')", (PHOTOS[0],))
    queued.execute("UPDATE items SET embedding = '[1,2,3,4]' WHERE id IN (1, 2, 3)")
    queued.execute("UPDATE items SET label = 'relabelled' WHERE id = 1")
    queued.execute("UPDATE items SET photo = photo WHERE id = 2")
    queued.execute("UPDATE items SET photo = %s WHERE id = 3", (PHOTOS[0],))
    kept = queued.execute("SELECT id FROM items WHERE embedding IS NOT NULL ORDER BY id").fetchall()
    assert kept == [(1,), (2,)]
    assert status(queued) == (N + 1, 0, 0, 0)


def test_worker_writes_the_in_database_vectors(queued, dsn):
    worker = work(dsn, batch_size=7)
    assert (worker.done, worker.failed) == (N, 0)
    assert_all_embedded_once(queued)
    assert status(queued) == (0, 0, 0, N)


def test_the_worker_embeds_with_the_triggers_model_not_the_jobs(queued, dsn):
    # Any writer of the table can edit its jobs; only its owner can change the trigger.
    load_model(queued, "other", onnx_models.conv_net(), {"preprocess": {"mean": [0.5] * 3, "std": [0.5] * 3}})
    queued.execute("UPDATE imgembed.queue SET model = 'other', image_column = 'label'")
    work(dsn)
    assert_all_embedded_once(queued)


def test_jobs_outliving_their_async_trigger_are_dropped(queued, dsn):
    for (name,) in queued.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'items'::regclass "
                                  "AND tgname LIKE 'imgembed%'").fetchall():
        queued.execute(f"DROP TRIGGER {name} ON items")  # by hand: the jobs stay
    assert status(queued) == (N, 0, 0, 0)
    worker = work(dsn)
    assert (worker.done, worker.failed) == (0, 0)
    assert queued.execute("SELECT count(*) FROM imgembed.queue").fetchone()[0] == 0
    assert queued.execute("SELECT count(embedding) FROM items").fetchone()[0] == 0


def test_writers_reach_only_the_jobs_of_tables_they_may_write(queued, dsn):
    queued.execute("CREATE TABLE secret (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    queued.execute("SELECT imgembed.create_embedding_trigger('secret', 'photo', 'embedding', mode => 'async')")
    queued.execute("INSERT INTO secret VALUES (1, %s)", (PHOTOS[0],))
    queued.execute("CREATE ROLE app LOGIN")
    try:
        queued.execute("GRANT SELECT, INSERT ON items TO app")
        with psycopg.connect(dsn, user="app", autocommit=True) as app:
            app.execute("INSERT INTO items (id, photo) VALUES (%s, %s)", (N + 1, PHOTOS[1]))  # enqueued for app
            assert app.execute("SELECT DISTINCT tbl::text FROM imgembed.queue").fetchall() == []  # owners' rows only
            assert app.execute("SELECT tbl::text FROM imgembed.queue_status").fetchall() == [("items",)]
            err = sql_error(app, "UPDATE imgembed.queue SET not_before = 'infinity' WHERE tbl = 'secret'::regclass")
            assert err.sqlstate == "42501"
            err = sql_error(app, "INSERT INTO imgembed.queue (tbl, image_column, vector_column, model, row_key) "
                                 """VALUES ('secret', 'photo', 'embedding', 'tiny', '{"id": 2}')""")
            assert (err.sqlstate, err.diag.message_primary) == ("42501", "permission denied for table queue")
        assert queued.execute("SELECT count(*), count(*) FILTER (WHERE not_before = '-infinity') "
                              "FROM imgembed.queue").fetchone() == (N + 2, N + 2)
    finally:
        queued.execute("DROP OWNED BY app; DROP ROLE app")


def test_decode_threads_default_to_the_cores_shared_among_worker_threads(queued, dsn):
    cores = os.cpu_count() or 1
    assert Worker(dsn, Options(concurrency=1)).decode_threads == cores
    assert Worker(dsn, Options(concurrency=2 * cores)).decode_threads == 1
    worker = work(dsn, decode_threads=3, batch_size=7)
    assert worker.decode_threads == 3 and (worker.done, worker.failed) == (N, 0)
    assert_all_embedded_once(queued)


def test_several_workers_share_the_queue(queued, dsn):
    workers = [threading.Thread(target=work, args=(dsn,), kwargs={"batch_size": 3, "concurrency": 2}) for _ in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert_all_embedded_once(queued)


def test_an_image_changed_after_it_was_read_is_not_overwritten(queued, dsn, monkeypatch):
    import pg_imgembed.serving.serving as serving_module

    def embed_while_someone_changes_the_image(*args, **kwargs):
        queued.execute("UPDATE items SET photo = %s WHERE id = 1", (PHOTOS[5],))  # re-queued by the trigger
        return original(*args, **kwargs)

    original = serving_module.embed_many
    monkeypatch.setattr(serving_module, "embed_many", embed_while_someone_changes_the_image)
    worker = Worker(dsn, Options(batch_size=N))
    with psycopg.connect(dsn, autocommit=True) as conn:
        worker.complete(conn, worker.claim(conn))
    monkeypatch.undo()
    assert queued.execute("SELECT embedding FROM items WHERE id = 1").fetchone()[0] is None
    assert queued.execute("SELECT count(*) FROM imgembed.queue").fetchone()[0] == 1
    work(dsn)
    (text,) = queued.execute("SELECT embedding::text FROM items WHERE id = 1").fetchone()
    np.testing.assert_array_equal(vector(text), embed(queued, PHOTOS[5]))


def test_unusable_image_is_a_permanent_failure(queued, dsn):
    queued.execute("INSERT INTO items (id, photo) VALUES (100, 'junk')")
    work(dsn)
    assert status(queued) == (0, 0, 1, N)
    (message,) = queued.execute("SELECT message FROM imgembed.errors WHERE row_key = '{\"id\": 100}'").fetchone()
    assert message == "worker: cannot decode image (4 bytes): not a known image format"


def test_transient_failures_are_retried_with_backoff(queued, dsn):
    queued.execute("CREATE TABLE flaky (n int)")
    queued.execute("""CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NOT EXISTS (SELECT FROM flaky) THEN INSERT INTO flaky VALUES (1);
              RAISE EXCEPTION 'temporarily unavailable'; END IF; RETURN NEW; END $$""")
    queued.execute("CREATE TRIGGER flaky BEFORE UPDATE OF embedding ON items FOR EACH ROW EXECUTE FUNCTION fail_once()")
    queued.execute("DELETE FROM items WHERE id > 3")
    queued.execute("DELETE FROM imgembed.queue WHERE (row_key->>'id')::int > 3")
    work(dsn, retry_base_s=60)  # the failing batch is rolled back (so flaky stays empty) and rescheduled
    (attempts, error, later) = queued.execute(
        "SELECT max(attempts), max(last_error), bool_and(not_before > now() + interval '50 seconds') FROM imgembed.queue").fetchone()
    assert (attempts, error, later) == (1, "temporarily unavailable", True)
    queued.execute("INSERT INTO flaky VALUES (1)")  # the trouble is over
    queued.execute("UPDATE imgembed.queue SET not_before = now()")  # the backoff has passed
    work(dsn)
    assert queued.execute("SELECT count(embedding) FROM items").fetchone()[0] == 3


def test_a_job_that_keeps_failing_is_given_up(queued, dsn):
    queued.execute("""CREATE FUNCTION always_fail() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'disk full'; END $$""")
    queued.execute("CREATE TRIGGER broken BEFORE UPDATE OF embedding ON items FOR EACH ROW EXECUTE FUNCTION always_fail()")
    queued.execute("DELETE FROM items WHERE id > 1")
    queued.execute("DELETE FROM imgembed.queue WHERE (row_key->>'id')::int > 1")
    for _ in range(2):
        work(dsn, max_attempts=2)
        time.sleep(0.5)
    work(dsn, max_attempts=2)
    assert queued.execute("SELECT count(*) FROM imgembed.queue").fetchone()[0] == 0
    (message,) = queued.execute("SELECT message FROM imgembed.errors").fetchone()
    assert message == "worker gave up after 2 attempts: disk full"


def test_jobs_of_a_dead_worker_come_back_when_the_lease_ends(queued, dsn):
    dead = Worker(dsn, Options(batch_size=N, lease_s=0.5))
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert len(dead.claim(conn)) == N  # ... and never completes them
    assert status(queued)[:2] == (0, N)
    assert work(dsn).done == 0  # still leased
    time.sleep(0.6)
    assert work(dsn).done == N
    assert_all_embedded_once(queued)


def test_sigterm_finishes_the_batch_and_loses_nothing(queued, dsn):
    worker = subprocess.Popen([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, "worker", "--batch-size", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while status(queued)[3] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert "stopped:" in worker.stderr.read()
    queued_now, in_progress, failed, done = status(queued)
    assert in_progress == 0 and failed == 0 and queued_now + done == N
    work(dsn)
    assert_all_embedded_once(queued)


def test_a_worker_that_cannot_run_cuda_stops_and_spends_no_attempt(queued, dsn):
    """On the CPU build of onnxruntime, --provider cuda is refused at the first model load: the
    worker hands its jobs back untouched and exits 2; the default (auto) then embeds them on the CPU."""
    worker = subprocess.run([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, "worker", "--provider", "cuda",
                             "--concurrency", "2", "--batch-size", "4"],
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 2
    assert "execution provider cuda was asked for, but this onnxruntime" in worker.stderr
    assert "Install onnxruntime-gpu" in worker.stderr
    assert status(queued) == (N, 0, 0, 0)
    assert queued.execute("SELECT max(attempts), count(claimed_by) FROM imgembed.queue").fetchone() == (0, 0)
    assert queued.execute("SELECT count(*) FROM imgembed.errors").fetchone()[0] == 0
    assert work(dsn).done == N
    assert_all_embedded_once(queued)


def test_async_needs_a_primary_key(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE nokey (photo bytea, e vector(4))")
    err = sql_error(conn, "SELECT imgembed.create_embedding_trigger('nokey', 'photo', 'e', mode => 'async')")
    assert err.diag.message_primary == "async embedding of public.nokey needs a primary key to find rows again"


def test_dropping_an_async_trigger_removes_its_function_and_jobs(queued):
    notices = []
    queued.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_hint)))
    queued.execute("SELECT imgembed.drop_embedding_trigger('items', 'embedding')")
    (n,) = queued.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'imgembed\\_enqueue\\_%'").fetchone()
    assert n == 0
    assert queued.execute("SELECT count(*) FROM imgembed.queue").fetchone()[0] == 0
    message, hint = notices[-1]
    assert message == f"dropped {N} queued job(s) of public.items.embedding: those rows keep a NULL vector"
    assert "imgembed.backfill" in hint


def test_a_new_async_trigger_keeps_the_jobs_and_a_sync_one_drops_them(queued):
    load_tiny(queued, "other", default=False)
    queued.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'other', mode => 'async')")
    assert status(queued) == (N, 0, 0, 0)
    queued.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'sync')")
    assert queued.execute("SELECT count(*) FROM imgembed.queue").fetchone()[0] == 0


def test_a_worker_role_needs_imgembed_worker_and_select_and_update_on_its_tables(queued, dsn):
    queued.execute("CREATE ROLE embedder LOGIN")
    try:
        queued.execute("GRANT SELECT, UPDATE ON items TO embedder")
        refused = work(psycopg.conninfo.make_conninfo(dsn, user="embedder"))  # not a worker yet
        assert refused.done == 0 and refused.fatal is not None
        assert refused.fatal.message == 'role "embedder" may not claim jobs: it is not a member of imgembed_worker'
        assert refused.fatal.hint == "GRANT imgembed_worker TO embedder;"
        queued.execute("GRANT imgembed_worker TO embedder")
        queued.execute("GRANT INSERT ON writes TO embedder")  # for the fixture's own counting trigger
        worker = work(psycopg.conninfo.make_conninfo(dsn, user="embedder"), batch_size=9)
        assert (worker.done, worker.failed) == (N, 0)
        assert_all_embedded_once(queued)
        assert status(queued) == (0, 0, 0, N)
    finally:
        queued.execute("DROP OWNED BY embedder; DROP ROLE embedder")
