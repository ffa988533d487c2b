"""CALL imgembed.backfill: committed batches, resumable, safe beside other writers and backfills."""

import json
import threading

import numpy as np
import psycopg
import pytest

from tests import images
from tests.helpers import embed, load_tiny, sql_error, vector

PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(12)]


@pytest.fixture
def table(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("INSERT INTO items (id, photo) SELECT g, (%s::bytea[])[1 + g %% 12] FROM generate_series(1, 60) g",
                 (PHOTOS,))
    # Every write of the vector column is counted, to prove no row is written twice.
    conn.execute("CREATE TABLE writes (id int, n int DEFAULT 1)")
    conn.execute("""CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN INSERT INTO writes (id) VALUES (NEW.id); RETURN NEW; END $$""")
    conn.execute("CREATE TRIGGER counted AFTER UPDATE OF embedding ON items FOR EACH ROW EXECUTE FUNCTION count_write()")
    return conn


def assert_all_embedded_once(conn):
    rows = conn.execute("SELECT id, photo, embedding::text FROM items ORDER BY id").fetchall()
    assert all(e is not None for _, _, e in rows)
    expected = {i: embed(conn, PHOTOS[i]) for i in range(12)}
    for row_id, _, text in rows:
        np.testing.assert_array_equal(vector(text), expected[row_id % 12])
    assert conn.execute("SELECT count(*), count(DISTINCT id) FROM writes").fetchone() == (60, 60)


def test_backfill_embeds_every_row_and_reports_progress(table):
    notices = []
    table.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_detail)))
    table.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 8)")
    assert_all_embedded_once(table)
    message, detail = notices[-1]
    assert message.startswith("backfill items: 60/60 rows (100.0%), ")
    assert "images/s, ETA 0m00s" in message
    progress = json.loads(detail)  # the same, for programs
    assert {k: progress[k] for k in ("backfill", "done", "total", "eta_s")} == {"backfill": "items", "done": 60, "total": 60, "eta_s": 0}
    assert progress["images_per_s"] > 0


def test_error_stops_after_committed_batches_and_a_rerun_continues(table):
    table.execute("UPDATE items SET photo = 'junk' WHERE id = 30")
    err = sql_error(table, "CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 5)")
    assert err.sqlstate == "22P03"
    (done,) = table.execute("SELECT count(embedding) FROM items").fetchone()
    assert 0 < done < 60  # the batches before the bad one are committed
    table.execute("UPDATE items SET photo = %s WHERE id = 30", (PHOTOS[30 % 12],))
    table.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 5)")
    assert_all_embedded_once(table)


def test_cancelled_run_resumes(table, dsn):
    with psycopg.connect(dsn, autocommit=True) as worker:
        def cancel_on_first_progress(diag):
            if "rows" in (diag.message_primary or ""):
                worker.cancel_safe()
        worker.add_notice_handler(cancel_on_first_progress)
        worker.execute("SET imgembed.intra_op_threads = 1")
        with pytest.raises(psycopg.errors.QueryCanceled):
            # Progress notices come at most once a second: the cancel lands mid-run.
            worker.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 1)")
    table.execute("CALL imgembed.backfill('items', 'photo', 'embedding')")
    assert_all_embedded_once(table)


def test_bad_images_under_on_error_null_are_recorded_and_skipped(table):
    table.execute("UPDATE items SET photo = 'junk' WHERE id IN (7, 8)")
    table.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 4, on_error => 'null')")
    assert table.execute("SELECT array_agg(id ORDER BY id) FROM items WHERE embedding IS NULL").fetchone()[0] == [7, 8]
    rows = table.execute("SELECT row_key, model, sqlstate FROM imgembed.errors ORDER BY id").fetchall()
    assert rows == [({"id": 7}, "tiny", "22P03"), ({"id": 8}, "tiny", "22P03")]


def test_concurrent_backfills_and_inserts_write_each_row_once(table, dsn):
    errors = []

    def run(sql):
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(sql)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 3)",))
               for _ in range(2)]
    for t in threads:
        t.start()
    with psycopg.connect(dsn, autocommit=True) as writer:
        writer.execute("UPDATE items SET photo = photo WHERE id % 10 = 0")  # contend for row locks
    for t in threads:
        t.join()
    assert not errors
    table.execute("CALL imgembed.backfill('items', 'photo', 'embedding')")  # picks up anything skipped
    assert_all_embedded_once(table)


def test_backfill_checks_like_triggers(table):
    table.execute("CREATE TABLE t (photo bytea, e vector(8))")
    err = sql_error(table, "CALL imgembed.backfill('t', 'photo', 'e')")
    assert err.sqlstate == "42804"
    err = sql_error(table, "CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 0)")
    assert err.diag.message_primary == "pg_imgembed: batch_size must be a positive integer, not 0"


def test_backfill_counts_its_images_in_images_embedded(table):
    counted = "SELECT (imgembed.runtime()->>'images_embedded')::int"
    (before,) = table.execute(counted).fetchone()
    table.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 8)")
    assert table.execute(counted).fetchone()[0] == before + 60
