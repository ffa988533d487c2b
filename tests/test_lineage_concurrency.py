"""Lineage never says "fresh" over mixed vectors: concurrent writers, long transactions, rollbacks.

The invariant: whenever imgembed.vector_lineage says a column is not stale, every non-NULL vector
in it equals what the model lineage names gives for the row's image. The table belongs to a role
that is not a superuser, which writes and backfills; a superuser manages the model.
"""

import json
import threading
import time
import uuid

import numpy as np
import psycopg
import pytest

from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, embed, load_model, load_tiny, sql_error, vector

PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(6)]
NEW_CONFIG = {"preprocess": {"resample": "nearest", "mean": [0.5] * 3, "std": [0.5] * 3}}


@pytest.fixture
def app(conn, dsn):
    """A role that owns table items (trigger bound to model tiny) and may write it."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {name}")
    load_tiny(conn)
    app_dsn = psycopg.conninfo.make_conninfo(dsn, user=name)
    with psycopg.connect(app_dsn, autocommit=True) as owner:
        owner.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        owner.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'tiny')")
        owner.execute("INSERT INTO items SELECT g, (%s::bytea[])[1 + g %% 6] FROM generate_series(1, 30) g", (PHOTOS,))
    yield app_dsn
    conn.execute("DROP TABLE IF EXISTS items")
    conn.execute(f"DROP OWNED BY {name}")
    conn.execute(f"DROP ROLE {name}")


def assert_lineage_honest(conn):
    """Fresh means every vector is the named model's; returns whether the column is stale."""
    model, stale = conn.execute("SELECT model, stale FROM imgembed.vector_lineage "
                                "WHERE tbl = 'items'::regclass AND vector_column = 'embedding'").fetchone()
    if not stale:
        for row_id, text in conn.execute("SELECT id, embedding::text FROM items WHERE embedding IS NOT NULL"):
            np.testing.assert_array_equal(vector(text), embed(conn, PHOTOS[row_id % 6], model),
                                          err_msg=f"row {row_id}: lineage says fresh, the vector is another model's")
    return stale


def waiting_for_lock(conn, pid):
    return conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]


def test_backfill_without_a_model_uses_the_columns_model(conn, app):
    load_model(conn, "other", onnx_models.conv_net(), NEW_CONFIG)
    conn.execute("SELECT imgembed.set_default_model('other')")
    with psycopg.connect(app, autocommit=True) as owner:
        owner.execute("UPDATE items SET embedding = NULL WHERE id <= 10")
        owner.execute("CALL imgembed.backfill('items', 'photo', 'embedding')")
    assert conn.execute("SELECT model, stale FROM imgembed.vector_lineage").fetchone() == ("tiny", False)
    assert not assert_lineage_honest(conn)


def test_backfill_with_another_model_needs_switch_model(conn, app):
    load_model(conn, "other", onnx_models.conv_net(), NEW_CONFIG)
    with psycopg.connect(app, autocommit=True) as owner:
        err = sql_error(owner, "CALL imgembed.backfill('items', 'photo', 'embedding', 'other')")
        assert err.sqlstate == "55000"
        assert err.diag.message_primary == 'pg_imgembed: column embedding of items is bound to model "tiny", not "other"'
        assert "switch_model => true" in err.diag.message_hint
        owner.execute("CALL imgembed.backfill('items', 'photo', 'embedding', 'other', switch_model => true)")
        (args,) = owner.execute("SELECT encode(tgargs, 'escape') FROM pg_trigger WHERE tgname = 'imgembed_embedding_insert'").fetchone()
        assert "other" in args
    assert conn.execute("SELECT model, stale FROM imgembed.vector_lineage").fetchone() == ("other", False)
    assert not assert_lineage_honest(conn)


def test_a_replacement_waits_for_an_open_writer_and_lineage_stays_honest(conn, app, dsn):
    writer = psycopg.connect(app)
    writer.execute("INSERT INTO items (id, photo) VALUES (100, %s)", (PHOTOS[100 % 6],))  # embedded, not committed
    admin = psycopg.connect(dsn, autocommit=True)
    (admin_pid,) = admin.execute("SELECT pg_backend_pid()").fetchone()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (load_model(admin, "tiny", onnx_models.conv_net(), NEW_CONFIG,
                                                         replace=True), done.set()))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not done.is_set() and not waiting_for_lock(conn, admin_pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if done.is_set():  # the replacement did not wait: re-embed before the writer commits
            with psycopg.connect(app, autocommit=True) as owner:
                owner.execute("CALL imgembed.backfill('items', 'photo', 'embedding')")
        writer.execute("INSERT INTO items (id, photo) SELECT g, (%s::bytea[])[1 + g %% 6] "
                       "FROM generate_series(101, 400) g", (PHOTOS,))
        writer.commit()
        thread.join(30)
        assert done.is_set()
        assert assert_lineage_honest(conn)  # stale: 301 rows of the old model, 30 more
        with psycopg.connect(app, autocommit=True) as owner:
            owner.execute("CALL imgembed.backfill('items', 'photo', 'embedding')")
        assert not assert_lineage_honest(conn)
    finally:
        writer.close()
        thread.join(30)
        admin.close()


def test_a_repeatable_read_writer_cannot_commit_old_vectors_after_a_replacement(conn, app):
    with psycopg.connect(app) as writer:
        writer.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        writer.execute("SELECT count(*) FROM items")  # the snapshot predates the replacement
        load_model(conn, "tiny", onnx_models.conv_net(), NEW_CONFIG, replace=True)
        with psycopg.connect(app, autocommit=True) as owner:
            owner.execute("CALL imgembed.backfill('items', 'photo', 'embedding')")
        err = sql_error(writer, "INSERT INTO items (id, photo) VALUES (200, %s)", (PHOTOS[2],))
        assert err.sqlstate == "40001"
        writer.rollback()
    assert not assert_lineage_honest(conn)


def test_a_replacement_undone_mid_re_embedding_leaves_the_column_stale(conn, app):
    load_model(conn, "tiny", onnx_models.conv_net(), NEW_CONFIG, replace=True)
    conn.execute("ALTER TABLE items DISABLE TRIGGER USER")
    conn.execute("UPDATE items SET photo = 'junk' WHERE id = 17")
    conn.execute("ALTER TABLE items ENABLE TRIGGER USER")
    with psycopg.connect(app, autocommit=True) as owner:
        err = sql_error(owner, "CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 5)")
        assert err.sqlstate == "22P03"  # rows 1-15 now hold the new model's vectors
    load_model(conn, "tiny", onnx_models.conv_net(), TINY_CONFIG, replace=True)  # back to the first bytes
    assert assert_lineage_honest(conn)
    conn.execute("UPDATE items SET photo = %s WHERE id = 17", (PHOTOS[17 % 6],))
    with psycopg.connect(app, autocommit=True) as owner:
        owner.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 5)")
    assert not assert_lineage_honest(conn)


def test_a_model_replaced_between_backfill_batches_stops_it_and_the_column_stays_stale(conn, app, dsn):
    """The first batch is held in its write (an advisory lock the test owns) while a replacement
    queues behind the model lock it holds; the second batch then finds a newer generation."""
    conn.execute("""CREATE FUNCTION wait_for_test() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NEW; END $$""")
    conn.execute("CREATE TRIGGER held AFTER UPDATE OF embedding ON items FOR EACH ROW EXECUTE FUNCTION wait_for_test()")
    conn.execute("UPDATE items SET embedding = NULL")
    gate = psycopg.connect(dsn, autocommit=True)
    gate.execute("SELECT pg_advisory_lock(4242)")
    errors: list[psycopg.Error] = []

    def run_backfill():
        with psycopg.connect(app, autocommit=True) as owner:
            errors.append(sql_error(owner, "CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 5)"))

    def replace():
        with psycopg.connect(dsn, autocommit=True) as admin:
            load_model(admin, "tiny", onnx_models.conv_net(), NEW_CONFIG, replace=True)

    backfill_thread, replace_thread = threading.Thread(target=run_backfill), threading.Thread(target=replace)
    try:
        backfill_thread.start()
        wait_until(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", 1)
        replace_thread.start()
        wait_until(conn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                         "AND query LIKE '%load_model%'", 1)
    finally:
        gate.execute("SELECT pg_advisory_unlock(4242)")
        backfill_thread.join(60)
        replace_thread.join(60)
        gate.close()
    (err,) = errors
    assert (err.sqlstate, err.diag.message_primary) == ("40001", 'pg_imgembed: model "tiny" was replaced while backfill ran')
    # The first batch is kept; the second queued behind the waiting replacement (advisory locks queue
    # fairly, FOR SHARE row locks alone would let it overtake), so it found the new generation.
    assert conn.execute("SELECT count(embedding) FROM items").fetchone() == (5,)
    assert assert_lineage_honest(conn)  # stale: those vectors are the old generation's
    conn.execute("DROP TRIGGER held ON items")
    with psycopg.connect(app, autocommit=True) as owner:
        owner.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 5)")
    assert not assert_lineage_honest(conn)


def wait_until(conn, query, expected, seconds=30):
    deadline = time.monotonic() + seconds
    while conn.execute(query).fetchone()[0] != expected:
        assert time.monotonic() < deadline, query
        time.sleep(0.05)


def test_a_long_open_transaction_delays_a_replacement_only_as_long_as_lock_timeout(conn, dsn):
    """A role that may use the model can call lock_model in a transaction it leaves open; that is
    what writers do too. A replacement then waits for it, as long as the administrator's
    lock_timeout allows, and changes nothing. (A role without usage takes no lock at all:
    tests/test_trust.py.)"""
    load_tiny(conn)
    name = f"idle_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    try:
        (generation,) = conn.execute("SELECT generation FROM imgembed.models WHERE name = 'tiny'").fetchone()
        with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, user=name)) as idle:  # a transaction left open
            idle.execute("SELECT imgembed.lock_model('tiny')")
            with psycopg.connect(dsn, autocommit=True, options="-c lock_timeout=300") as admin:
                err = sql_error(admin, "SELECT imgembed.load_model('tiny', %s, %s::jsonb, replace => true)",
                                (onnx_models.conv_net(), json.dumps(NEW_CONFIG)))
                assert err.sqlstate == "55P03"  # lock_not_available
            idle.rollback()
        assert conn.execute("SELECT generation FROM imgembed.models WHERE name = 'tiny'").fetchone() == (generation,)
        load_model(conn, "tiny", onnx_models.conv_net(), NEW_CONFIG, replace=True)  # once it ends, at once
        assert conn.execute("SELECT generation FROM imgembed.models WHERE name = 'tiny'").fetchone() != (generation,)
    finally:
        conn.execute(f"DROP ROLE {name}")
