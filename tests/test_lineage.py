"""Lineage: replacing a model makes a column's vectors stale; backfill re-embeds them, resumably."""

import uuid

import numpy as np
import psycopg

from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, embed, load_model, load_tiny, sql_error, vector

PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(6)]
NEW_CONFIG = {"preprocess": {"resample": "nearest", "mean": [0.5] * 3, "std": [0.5] * 3}}


def lineage(conn):
    return conn.execute("SELECT tbl::text, vector_column::text, model, stale, reembedding FROM imgembed.vector_lineage").fetchall()


def setup(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding')")
    conn.execute("INSERT INTO items SELECT g, (%s::bytea[])[1 + g %% 6] FROM generate_series(1, 30) g", (PHOTOS,))
    conn.execute("CREATE TABLE writes (id int)")
    conn.execute("""CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN INSERT INTO writes VALUES (NEW.id); RETURN NEW; END $$""")
    conn.execute("CREATE TRIGGER counted AFTER UPDATE OF embedding ON items FOR EACH ROW EXECUTE FUNCTION count_write()")


def all_from_current_model(conn):
    for row_id, text in conn.execute("SELECT id, embedding::text FROM items"):
        np.testing.assert_array_equal(vector(text), embed(conn, PHOTOS[row_id % 6]))
    return True


def test_trigger_records_the_model_behind_the_column(conn):
    setup(conn)
    assert lineage(conn) == [("items", "embedding", "tiny", False, False)]
    (sha,) = conn.execute("SELECT produced_by = current_sha256 FROM imgembed.vector_lineage").fetchone()
    assert sha


def test_replacing_the_model_makes_vectors_stale_and_backfill_re_embeds_them(conn):
    setup(conn)
    load_model(conn, "tiny", onnx_models.conv_net(), NEW_CONFIG, replace=True)
    assert lineage(conn) == [("items", "embedding", "tiny", True, False)]
    conn.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 7)")
    assert lineage(conn) == [("items", "embedding", "tiny", False, False)]
    assert all_from_current_model(conn)
    assert conn.execute("SELECT count(*), count(DISTINCT id) FROM writes").fetchone() == (30, 30)


def test_interrupted_re_embedding_resumes_after_the_last_committed_key(conn):
    setup(conn)
    load_model(conn, "tiny", onnx_models.conv_net(), NEW_CONFIG, replace=True)
    conn.execute("ALTER TABLE items DISABLE TRIGGER USER")
    conn.execute("UPDATE items SET photo = 'junk' WHERE id = 17")
    conn.execute("ALTER TABLE items ENABLE TRIGGER USER")
    err = sql_error(conn, "CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 5)")
    assert err.sqlstate == "22P03"
    assert lineage(conn) == [("items", "embedding", "tiny", True, True)]
    (resume,) = conn.execute("SELECT resume_after FROM imgembed.lineage").fetchone()
    assert resume == {"id": 15}  # batches 1-5, 6-10, 11-15 committed; 16-20 failed
    conn.execute("UPDATE items SET photo = %s WHERE id = 17", (PHOTOS[17 % 6],))  # the trigger embeds it
    conn.execute("CALL imgembed.backfill('items', 'photo', 'embedding', batch_size => 5)")
    assert lineage(conn) == [("items", "embedding", "tiny", False, False)]
    assert all_from_current_model(conn)
    # Rows 1-15 were not redone by the second run: one write each, 16-30 one more for id 17's fix.
    (rewritten,) = conn.execute("SELECT count(*) FROM writes WHERE id <= 15").fetchone()
    assert rewritten == 15


def test_switching_a_trigger_to_another_model_marks_the_column_stale(conn):
    setup(conn)
    load_model(conn, "other", onnx_models.conv_net(output="tokens"), TINY_CONFIG)
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'other')")
    assert lineage(conn) == [("items", "embedding", "other", True, False)]
    conn.execute("CALL imgembed.backfill('items', 'photo', 'embedding', 'other')")
    assert lineage(conn) == [("items", "embedding", "other", False, False)]


def test_stale_table_without_primary_key_is_a_clear_error(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE nokey (photo bytea, e vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('nokey', 'photo', 'e')")
    conn.execute("INSERT INTO nokey VALUES (%s)", (PHOTOS[0],))
    load_model(conn, "tiny", onnx_models.conv_net(), NEW_CONFIG, replace=True)
    err = sql_error(conn, "CALL imgembed.backfill('nokey', 'photo', 'e')")
    assert err.diag.message_primary == "pg_imgembed: re-embedding the stale vectors of nokey needs a primary key to resume by"


def test_only_roles_that_may_write_a_column_write_its_lineage(conn, dsn):
    setup(conn)
    conn.execute("CREATE TABLE other_items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("CREATE ROLE app LOGIN")
    try:
        conn.execute("GRANT SELECT, INSERT ON items TO app")
        conn.execute("GRANT SELECT, UPDATE (embedding) ON other_items TO app")
        with psycopg.connect(dsn, user="app", autocommit=True) as app:
            assert app.execute("UPDATE imgembed.lineage SET sha256 = 'forged'").rowcount == 0  # items: insert only
            err = sql_error(app, "INSERT INTO imgembed.lineage (tbl, vector_column, model, sha256) "
                                 "VALUES ('items', 'photo', 'tiny', 'forged')")
            assert err.sqlstate == "42501"
            app.execute("INSERT INTO imgembed.lineage (tbl, vector_column, model, sha256, generation) "
                        "VALUES ('other_items', 'embedding', 'tiny', 'x', 1)")  # a column it may write
        assert lineage(conn)[0] == ("items", "embedding", "tiny", False, False)
    finally:
        conn.execute("DROP OWNED BY app; DROP ROLE app")


def test_a_table_dropped_without_drop_embedding_trigger_is_forgotten(conn, dsn):
    """PostgreSQL reuses OIDs: what a dropped table left in lineage, the queue and its enqueue
    function would belong to the next table with its OID."""
    load_tiny(conn)
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {owner} LOGIN")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, user=owner), autocommit=True) as app:
            for name, mode in (("synced", "sync"), ("queued", "async")):
                app.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, photo bytea, embedding vector(4))")
                app.execute(f"SELECT imgembed.create_embedding_trigger('{name}', 'photo', 'embedding', mode => '{mode}')")
                app.execute(f"INSERT INTO {name} VALUES (1, %s)", (PHOTOS[0],))
            (relid,) = conn.execute("SELECT 'queued'::regclass::oid").fetchone()
            assert conn.execute("SELECT count(*) FROM imgembed.lineage").fetchone() == (2,)
            assert conn.execute("SELECT count(*) FROM imgembed.queue").fetchone() == (1,)
            app.execute("DROP TABLE synced, queued")  # as the table owner, a plain role
        assert conn.execute("SELECT count(*) FROM imgembed.lineage").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM imgembed.queue").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE %s", (f"imgembed_enqueue_{relid}_%",)).fetchone() == (0,)
        conn.execute("DROP TABLE IF EXISTS unrelated")  # other drops pass through untouched
    finally:
        conn.execute(f"DROP OWNED BY {owner}")
        conn.execute(f"DROP ROLE {owner}")
