"""What a hostile role with ordinary grants cannot do: forge errors, tamper with other rows' jobs,
use or read a model it was not given; and what a table owner can do without extra grants."""

import uuid

import psycopg
import pytest

from tests import images
from tests.helpers import load_tiny, sql_error

PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(3)]


@pytest.fixture
def roles(conn, dsn):
    """Two plain login roles: owner (owns table items, async trigger) and writer (INSERT only)."""
    suffix = uuid.uuid4().hex[:8]
    names = {"owner": f"owner_{suffix}", "writer": f"writer_{suffix}"}
    for name in names.values():
        conn.execute(f"CREATE ROLE {name} LOGIN")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {names['owner']}")
    load_tiny(conn)
    dsns = {k: psycopg.conninfo.make_conninfo(dsn, user=v) for k, v in names.items()}
    with psycopg.connect(dsns["owner"], autocommit=True) as owner:
        owner.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        owner.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'async')")
        owner.execute("INSERT INTO items (id, photo) VALUES (1, %s), (2, %s)", (PHOTOS[0], PHOTOS[1]))
        owner.execute(f"GRANT SELECT, INSERT ON items TO {names['writer']}")
    yield names, dsns
    conn.execute("DROP TABLE IF EXISTS items")
    for name in names.values():
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def test_a_table_owner_uses_async_mode_without_create_on_imgembed(conn, roles):
    names, dsns = roles
    assert not conn.execute("SELECT has_schema_privilege(%s, 'imgembed', 'CREATE')", (names["owner"],)).fetchone()[0]
    # one enqueue function of the extension's, none generated per table
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'imgembed\\_enqueue\\_%'").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM imgembed.queue").fetchone() == (2,)


def test_a_writer_adds_jobs_but_cannot_stall_delete_or_recount_them(conn, roles):
    _, dsns = roles
    with psycopg.connect(dsns["writer"], autocommit=True) as writer:
        writer.execute("INSERT INTO items (id, photo) VALUES (3, %s)", (PHOTOS[2],))  # enqueues as the writer
        err = sql_error(writer, "UPDATE imgembed.queue SET claimed_until = 'infinity'")
        assert err.sqlstate == "42501"
        err = sql_error(writer, "UPDATE imgembed.queue SET not_before = 'infinity'")
        assert err.sqlstate == "42501"
        assert writer.execute("DELETE FROM imgembed.queue").rowcount == 0
        err = sql_error(writer, "INSERT INTO imgembed.queue_stats (tbl, vector_column, done) VALUES ('items', 'embedding', 99)")
        assert err.sqlstate == "42501"
    assert conn.execute("SELECT count(*), count(*) FILTER (WHERE not_before = '-infinity' AND claimed_until IS NULL) "
                        "FROM imgembed.queue").fetchone() == (3, 3)
    assert conn.execute("SELECT count(*) FROM imgembed.queue_stats").fetchone() == (0,)


def test_only_writers_of_a_table_record_its_errors(conn, roles):
    names, dsns = roles
    conn.execute("CREATE TABLE readonly (id int PRIMARY KEY)")
    conn.execute(f"GRANT SELECT ON readonly TO {names['writer']}")
    with psycopg.connect(dsns["writer"], autocommit=True) as writer:
        err = sql_error(writer, "SELECT imgembed.record_error('readonly', NULL, 'tiny', '22P03', 'forged')")
        assert err.sqlstate == "42501" and "row-level security" in err.diag.message_primary
        writer.execute("SELECT imgembed.record_error('items', '{\"id\": 1}', 'tiny', '22P03', 'real')")
        assert writer.execute("SELECT tbl::text, message FROM imgembed.errors").fetchall() == [("items", "real")]
    assert conn.execute("SELECT count(*) FROM imgembed.errors").fetchone() == (1,)


def test_a_role_without_usage_cannot_use_or_read_a_model(conn, roles):
    names, dsns = roles
    conn.execute("SELECT imgembed.revoke_model_usage('tiny', 'PUBLIC')")
    with psycopg.connect(dsns["writer"], autocommit=True) as writer:
        for query in ("SELECT img_embedding(%s)", "SELECT img_embedding(%s, 'tiny')",
                      "SELECT imgembed.embed_batch('tiny', ARRAY[%s])"):
            err = sql_error(writer, query, (PHOTOS[0],))
            assert err.sqlstate == "42501"
            assert err.diag.message_primary == 'permission denied for model "tiny"'
            assert err.diag.message_hint == (
                f"A model administrator can allow it: SELECT imgembed.grant_model_usage('tiny', '{names['writer']}');")
        assert writer.execute("SELECT count(*) FROM imgembed.model_store").fetchone() == (0,)
        assert writer.execute("SELECT name FROM imgembed.models").fetchall() == [("tiny",)]  # metadata only
        assert "onnx" not in [c.name for c in writer.execute("SELECT * FROM imgembed.models LIMIT 0").description]
    conn.execute("SELECT imgembed.grant_model_usage('tiny', %s)", (names["writer"],))
    with psycopg.connect(dsns["writer"], autocommit=True) as writer:
        assert writer.execute("SELECT vector_dims(img_embedding(%s))", (PHOTOS[0],)).fetchone() == (4,)
        assert writer.execute("SELECT length(onnx) > 0 FROM imgembed.model_store").fetchone() == (True,)


def test_a_role_without_usage_cannot_bind_or_write_through_a_trigger(conn, roles):
    names, dsns = roles
    with psycopg.connect(dsns["owner"], autocommit=True) as owner:
        owner.execute("CREATE TABLE pinned (id int PRIMARY KEY, photo bytea, e vector(4))")
        owner.execute("SELECT imgembed.create_embedding_trigger('pinned', 'photo', 'e')")
    conn.execute("SELECT imgembed.revoke_model_usage('tiny', 'PUBLIC')")
    with psycopg.connect(dsns["owner"], autocommit=True) as owner:
        err = sql_error(owner, "INSERT INTO pinned VALUES (1, %s)", (PHOTOS[0],))
        assert err.sqlstate == "42501"
        err = sql_error(owner, "SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'tiny')")
        assert err.sqlstate == "42501"
        err = sql_error(owner, "CALL imgembed.backfill('pinned', 'photo', 'e')")
        assert err.sqlstate == "42501"
    assert conn.execute("SELECT count(*) FROM pinned").fetchone() == (0,)


def test_new_models_are_public_unless_told_otherwise_and_grants_are_checked(conn, roles):
    import json

    from tests import onnx_models
    from tests.helpers import TINY_CONFIG

    conn.execute("SELECT * FROM imgembed.load_model('private', %s, %s::jsonb, grant_public => false)",
                 (onnx_models.conv_net(), json.dumps(TINY_CONFIG)))
    assert conn.execute("SELECT model, grantee FROM imgembed.model_usage ORDER BY 1").fetchall() == [("tiny", 0)]
    err = sql_error(conn, "SELECT imgembed.grant_model_usage('private', 'nobody_at_all')")
    assert (err.sqlstate, err.diag.message_primary) == ("42704", 'role "nobody_at_all" does not exist')
    err = sql_error(conn, "SELECT imgembed.grant_model_usage('nosuch', 'PUBLIC')")
    assert (err.sqlstate, err.diag.message_primary) == ("42704", 'model "nosuch" does not exist')
    _, dsns = roles
    with psycopg.connect(dsns["writer"], autocommit=True) as writer:
        assert sql_error(writer, "SELECT imgembed.grant_model_usage('private', current_user)").sqlstate == "42501"


def test_a_worker_without_usage_on_the_model_records_a_permission_error(conn, roles, dsn):
    from pg_imgembed.client.worker import Options, Worker

    names, _ = roles
    worker_role = f"embedder_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {worker_role} LOGIN IN ROLE imgembed_worker")
    try:
        conn.execute("SELECT imgembed.revoke_model_usage('tiny', 'PUBLIC')")
        conn.execute("SELECT imgembed.grant_model_usage('tiny', %s)", (names["owner"],))  # the owner may, the worker not
        worker = Worker(psycopg.conninfo.make_conninfo(dsn, user=worker_role), Options(once=True, max_attempts=1))
        worker.run()
        assert (worker.done, worker.failed) == (0, 0)
        assert conn.execute("SELECT DISTINCT sqlstate, message FROM imgembed.errors").fetchall() == [
            ("42501", 'worker gave up after 1 attempts: permission denied for model "tiny"')]
        assert conn.execute("SELECT count(embedding) FROM items").fetchone() == (0,)
    finally:
        conn.execute(f"DROP OWNED BY {worker_role}")
        conn.execute(f"DROP ROLE {worker_role}")
