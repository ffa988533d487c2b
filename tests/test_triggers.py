"""Embedding triggers: kept in sync on INSERT/UPDATE, checked at creation, on_error policies."""


import numpy as np
import psycopg
import pytest

from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, embed, load_model, load_tiny, sql_error, vector

PHOTO = images.png(images.photo_like(40, 30, seed=1))
OTHER = images.jpeg(images.photo_like(30, 40, seed=2))


@pytest.fixture
def items(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, label text, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding')")
    return conn


def stored(conn, row_id):
    (text,) = conn.execute("SELECT embedding::text FROM items WHERE id = %s", (row_id,)).fetchone()
    return None if text is None else vector(text)


def test_insert_fills_the_embedding(items):
    (row_id,) = items.execute("INSERT INTO items (photo) VALUES (%s) RETURNING id", (PHOTO,)).fetchone()
    np.testing.assert_array_equal(stored(items, row_id), embed(items, PHOTO))


def test_copy_fills_the_embedding(items):
    with items.cursor().copy("COPY items (label, photo) FROM STDIN") as copy:
        copy.write_row(("copied", PHOTO))
    (text,) = items.execute("SELECT embedding::text FROM items WHERE label = 'copied'").fetchone()
    np.testing.assert_array_equal(vector(text), embed(items, PHOTO))


def test_update_of_image_re_embeds(items):
    (row_id,) = items.execute("INSERT INTO items (photo) VALUES (%s) RETURNING id", (PHOTO,)).fetchone()
    items.execute("UPDATE items SET photo = %s WHERE id = %s", (OTHER, row_id))
    np.testing.assert_array_equal(stored(items, row_id), embed(items, OTHER))


def test_update_leaving_the_image_alone_does_not_re_embed(items):
    (row_id,) = items.execute("INSERT INTO items (photo) VALUES (%s) RETURNING id", (PHOTO,)).fetchone()
    # A sentinel the trigger would overwrite if it ran.
    items.execute("ALTER TABLE items DISABLE TRIGGER USER")
    items.execute("UPDATE items SET embedding = '[1,0,0,0]' WHERE id = %s", (row_id,))
    items.execute("ALTER TABLE items ENABLE TRIGGER USER")
    items.execute("UPDATE items SET label = 'renamed' WHERE id = %s", (row_id,))
    items.execute("UPDATE items SET photo = photo WHERE id = %s", (row_id,))  # same bytes
    assert stored(items, row_id).tolist() == [1, 0, 0, 0]


def test_other_columns_pass_through_untouched(items):
    # A user trigger that fires before ours (names sort first) edits another column; ours writes
    # only the vector, so that edit and every other value arrive exactly as given.
    items.execute("ALTER TABLE items ADD COLUMN meta jsonb, ADD COLUMN price numeric, ADD COLUMN tags text[], "
                  "ADD COLUMN thumb bytea, ADD COLUMN taken timestamptz")
    items.execute("CREATE FUNCTION tag_label() RETURNS trigger LANGUAGE plpgsql AS "
                  "$$ BEGIN NEW.label := 'tagged:' || NEW.label; RETURN NEW; END $$")
    items.execute("CREATE TRIGGER a_tag BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION tag_label()")
    values = ("x", '{"b": [1, 2.50, null], "a": "\\u00e9"}', "12345678901234567890.000000000001",
              ["a b", "é", None], b"\x00\xff\x00", "2026-11-21 10:00:00.123456+00")
    (row_id,) = items.execute(
        "INSERT INTO items (label, meta, price, tags, thumb, taken, photo) VALUES (%s, %s::jsonb, %s::numeric, %s, %s, "
        "%s::timestamptz, %s) RETURNING id", (*values, PHOTO)).fetchone()
    row = items.execute("SELECT label, meta::text, price::text, tags, thumb, taken = %s::timestamptz, photo "
                        "FROM items WHERE id = %s", (values[-1], row_id)).fetchone()
    assert row == ("tagged:x", '{"a": "é", "b": [1, 2.50, null]}', values[2], values[3], values[4], True, PHOTO)
    np.testing.assert_array_equal(stored(items, row_id), embed(items, PHOTO))


def test_image_set_to_null_gives_null(items):
    (row_id,) = items.execute("INSERT INTO items (photo) VALUES (%s) RETURNING id", (PHOTO,)).fetchone()
    items.execute("UPDATE items SET photo = NULL WHERE id = %s", (row_id,))
    assert stored(items, row_id) is None
    (null_id,) = items.execute("INSERT INTO items (photo) VALUES (NULL) RETURNING id").fetchone()
    assert stored(items, null_id) is None


def test_on_error_error_aborts_the_whole_statement(items):
    err = sql_error(items, "INSERT INTO items (photo) VALUES (%s), (%s), (%s)", (PHOTO, b"garbage", OTHER))
    assert err.sqlstate == "22P03"
    assert err.diag.message_primary.startswith("cannot decode image (7 bytes")
    assert items.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    assert items.execute("SELECT count(*) FROM imgembed.errors").fetchone()[0] == 0


def test_on_error_null_keeps_the_row_and_records_the_failure(items):
    items.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', on_error => 'null')")
    items.execute("INSERT INTO items (id, photo) VALUES (1, %s), (2, %s)", (PHOTO, b"garbage"))
    assert stored(items, 1) is not None
    assert stored(items, 2) is None
    row = items.execute("SELECT tbl::text, row_key, model, sqlstate, message FROM imgembed.errors").fetchone()
    assert row == ("items", {"id": 2}, "tiny", "22P03",
                   "cannot decode image (7 bytes): not a known image format")


def test_failed_statement_leaves_no_error_records(items):
    """Recorded failures belong to the statement: if it rolls back, so do they."""
    items.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', on_error => 'null')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        items.execute("INSERT INTO items (id, photo) VALUES (1, %s), (1, %s)", (b"garbage", PHOTO))
    assert items.execute("SELECT count(*) FROM imgembed.errors").fetchone()[0] == 0


def test_trigger_keeps_the_model_default_at_creation(items):
    load_model(items, "other", onnx_models.conv_net(output="tokens"), TINY_CONFIG)
    items.execute("SELECT imgembed.set_default_model('other')")
    (row_id,) = items.execute("INSERT INTO items (photo) VALUES (%s) RETURNING id", (PHOTO,)).fetchone()
    np.testing.assert_array_equal(stored(items, row_id), embed(items, PHOTO, "tiny"))


def test_two_models_two_columns_one_table(conn):
    load_tiny(conn)
    load_model(conn, "tokens", onnx_models.conv_net(output="tokens"), TINY_CONFIG)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, a vector(4), b halfvec(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'a', 'tiny')")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'b', 'tokens')")
    conn.execute("INSERT INTO items VALUES (1, %s)", (PHOTO,))
    conn.execute("UPDATE items SET photo = %s", (OTHER,))
    a, b = conn.execute("SELECT a::text, b::text FROM items").fetchone()
    np.testing.assert_array_equal(vector(a), embed(conn, OTHER, "tiny"))
    np.testing.assert_allclose(vector(b), embed(conn, OTHER, "tokens"), atol=1e-3)  # halfvec precision


def test_hostile_table_and_column_names_are_quoted(conn):
    load_tiny(conn)
    conn.execute('CREATE SCHEMA "My Schema"')
    conn.execute('CREATE TABLE "My Schema"."a""b; drop" ("pho""to" bytea, "Embed Ding" vector(4))')
    conn.execute("""SELECT imgembed.create_embedding_trigger('"My Schema"."a""b; drop"', 'pho"to', 'Embed Ding')""")
    conn.execute('INSERT INTO "My Schema"."a""b; drop" VALUES (%s)', (PHOTO,))
    (text,) = conn.execute('SELECT "Embed Ding"::text FROM "My Schema"."a""b; drop"').fetchone()
    np.testing.assert_array_equal(vector(text), embed(conn, PHOTO))
    conn.execute("""SELECT imgembed.drop_embedding_trigger('"My Schema"."a""b; drop"', 'Embed Ding')""")
    conn.execute('INSERT INTO "My Schema"."a""b; drop" VALUES (%s)', (PHOTO,))
    assert conn.execute('SELECT count("Embed Ding") FROM "My Schema"."a""b; drop"').fetchone()[0] == 1


def test_drop_embedding_trigger(items):
    items.execute("SELECT imgembed.drop_embedding_trigger('items', 'embedding')")
    (row_id,) = items.execute("INSERT INTO items (photo) VALUES (%s) RETURNING id", (PHOTO,)).fetchone()
    assert stored(items, row_id) is None
    err = sql_error(items, "SELECT imgembed.drop_embedding_trigger('items', 'embedding')")
    assert err.sqlstate == "42704"
    assert err.diag.message_primary == 'table public.items has no embedding trigger for column "embedding"'


def test_creating_twice_replaces_the_triggers(items):
    items.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', on_error => 'null')")
    (count,) = items.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'items'::regclass").fetchone()
    assert count == 2


def test_model_used_by_a_trigger_cannot_be_dropped(items):
    err = sql_error(items, "SELECT imgembed.drop_model('tiny')")
    assert err.sqlstate == "55006"
    assert err.diag.message_primary == 'model "tiny" is used by embedding triggers on public.items'


@pytest.mark.parametrize("ddl, call, sqlstate, message", [
    ("CREATE TABLE t (photo text, e vector(4))", "('t', 'photo', 'e')", "42804",
     'column "photo" of table public.t has type text; the image column must be bytea'),
    ("CREATE TABLE t (photo bytea, e vector(8))", "('t', 'photo', 'e')", "42804",
     'column "e" of table public.t is vector(8) but model "tiny" produces 4 dimensions'),
    ("CREATE TABLE t (photo bytea, e real[])", "('t', 'photo', 'e')", "42804",
     'column "e" of table public.t has type real[]; the vector column must be pgvector\'s vector or halfvec'),
    ("CREATE TABLE t (photo bytea, e vector(4))", "('t', 'picture', 'e')", "42703",
     'column "picture" of table public.t does not exist'),
    ("CREATE TABLE t (photo bytea, e vector(4))", "('t', 'photo', 'e', 'nope')", "42704",
     'model "nope" does not exist'),
    ("CREATE TABLE t (photo bytea, e vector(4))", "('t', 'photo', 'e', on_error => 'skip')", "22023",
     "on_error must be 'error' or 'null', not 'skip'"),
])
def test_creation_checks(conn, ddl, call, sqlstate, message):
    load_tiny(conn)
    conn.execute(ddl)
    err = sql_error(conn, f"SELECT imgembed.create_embedding_trigger{call}")
    assert (err.sqlstate, err.diag.message_primary) == (sqlstate, "" + message)
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass").fetchone()[0] == 0


def test_dimension_mismatch_hint_gives_the_fix(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE t (photo bytea, e vector(8))")
    err = sql_error(conn, "SELECT imgembed.create_embedding_trigger('t', 'photo', 'e')")
    assert err.diag.message_hint == "ALTER TABLE public.t ALTER COLUMN e TYPE vector(4), or use a model with 8 dimensions."


def test_trigger_on_missing_table_is_sql_error(conn):
    load_tiny(conn)
    err = sql_error(conn, "SELECT imgembed.create_embedding_trigger('nope', 'photo', 'e')")
    assert err.sqlstate == "42P01"


def test_image_column_is_switched_to_uncompressed_storage(items):
    (storage,) = items.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'items'::regclass "
                               "AND attname = 'photo'").fetchone()
    assert storage == "e"


def test_a_storage_the_user_chose_is_left_alone(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE t (photo bytea, e vector(4))")
    conn.execute("ALTER TABLE t ALTER photo SET STORAGE MAIN")
    conn.execute("SELECT imgembed.create_embedding_trigger('t', 'photo', 'e')")
    (storage,) = conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 't'::regclass "
                              "AND attname = 'photo'").fetchone()
    assert storage == "m"


def test_creating_triggers_again_prints_no_notices_about_internal_objects(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE quiet (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    for mode in ("sync", "async", "sync", "sync"):
        conn.execute("SELECT imgembed.create_embedding_trigger('quiet', 'photo', 'embedding', mode => %s)", (mode,))
    conn.execute("SELECT imgembed.drop_embedding_trigger('quiet', 'embedding')")
    assert notices and all(n.startswith(("embedding trigger on public.quiet", 'column "photo" of public.quiet')) for n in notices), notices
