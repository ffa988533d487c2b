"""Trust on the paths users take when they scale out or delegate model administration.

Every hostile move here is made by a role that is not a superuser: a table owner who attacks the
worker, an INSERT-only writer, a role without usage on a private model, a model administrator who
is not a superuser. The worker runs as a plain member of imgembed_worker with no grant on any user
table.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import numpy as np
import onnx
import psycopg
import pytest
from onnx import TensorProto, helper

from pg_imgembed.client.worker import Options, Worker
from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, embed, load_model, load_tiny, sql_error, vector

PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(10)]


@pytest.fixture
def make_role(conn, dsn) -> Iterator:
    """Plain login roles, dropped after the test: make_role(kind, *member_of) -> (name, dsn)."""
    made: list[str] = []

    def make(kind: str, *member_of: str) -> tuple[str, str]:
        name = f"{kind}_{uuid.uuid4().hex[:8]}"
        conn.execute(f"CREATE ROLE {name} LOGIN" + (f" IN ROLE {', '.join(member_of)}" if member_of else ""))
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {name}")
        made.append(name)
        return name, psycopg.conninfo.make_conninfo(dsn, user=name)

    yield make
    for name in reversed(made):
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


def work(dsn: str, **options) -> Worker:
    worker = Worker(dsn, Options(**{"once": True, "retry_base_s": 60.0, **options}))
    worker.run()
    return worker


def private_model(conn, name: str = "private") -> None:
    load_tiny(conn, name, default=False)
    conn.execute("SELECT imgembed.revoke_model_usage(%s, 'PUBLIC')", (name,))


# ------------------------------------------------------------ 1. models are self-contained

def external(name: str, location: str, dims: list[int]) -> onnx.TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.UINT8, dims=dims)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(int(np.prod(dims))))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def reading_model(where: str) -> bytes:
    """An image model whose output carries the bytes of postgresql.conf, kept as external data in
    an initializer, a sparse initializer, a Constant's attribute, or a subgraph's Constant."""
    leak = external("leak", "postgresql.conf", [4])
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 4])
    pool = [helper.make_node("GlobalAveragePool", ["pixel_values"], ["p"]),
            helper.make_node("Reshape", ["p", "shape"], ["flat"]),
            helper.make_node("Slice", ["flat", "zero", "four", "one"], ["first4"])]
    shapes = [helper.make_tensor("shape", TensorProto.INT64, [2], [1, 3]), helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
              helper.make_tensor("four", TensorProto.INT64, [1], [4]), helper.make_tensor("one", TensorProto.INT64, [1], [1])]
    add = [helper.make_node("Cast", ["leak"], ["leakf"], to=TensorProto.FLOAT),
           helper.make_node("Pad", ["first4", "pads"], ["padded"]),
           helper.make_node("Add", ["padded", "leakf"], ["embedding"])]
    shapes.append(helper.make_tensor("pads", TensorProto.INT64, [4], [0, 0, 0, 1]))
    initializers, nodes, sparse = list(shapes), list(pool), []
    if where == "initializer":
        initializers.append(leak)
    elif where == "sparse":
        indices = helper.make_tensor("leak_idx", TensorProto.INT64, [4], [0, 1, 2, 3])
        sparse.append(helper.make_sparse_tensor(external("leak", "postgresql.conf", [4]), indices, [4]))
    elif where == "attribute":
        nodes.append(helper.make_node("Constant", [], ["leak"], value=leak))
    else:  # a subgraph: If(true) { Constant(leak) }
        branch = helper.make_graph([helper.make_node("Constant", [], ["leak_b"], value=leak)], "branch", [],
                                   [helper.make_tensor_value_info("leak_b", TensorProto.UINT8, [4])])
        initializers.append(helper.make_tensor("yes", TensorProto.BOOL, [], [True]))
        nodes.append(helper.make_node("If", ["yes"], ["leak"], then_branch=branch, else_branch=branch))
    graph = helper.make_graph(nodes + add, "leaky", [x], [y], initializers, sparse_initializer=sparse)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("where", ["initializer", "sparse", "attribute", "subgraph"])
def test_a_model_administrator_cannot_read_server_files_through_external_data(conn, make_role, where):
    admin, admin_dsn = make_role("admin", "imgembed_admin")
    with connect(admin_dsn) as app:
        err = sql_error(app, "SELECT * FROM imgembed.load_model('leaky', %s, %s::jsonb)",
                        (reading_model(where), json.dumps(TINY_CONFIG)))
        assert err.sqlstate == "22023"
        assert err.diag.message_primary.startswith("the model refers to external data (tensor ")
        assert err.diag.message_primary.endswith('in file "postgresql.conf"): models must be self-contained')
        err = sql_error(app, "SELECT * FROM imgembed.load_text_model('leaky', %s, '{}'::bytea)", (reading_model(where),))
        assert err.sqlstate in ("22023", "42704")  # refused, or no image tower to pair it with: never loaded
    assert conn.execute("SELECT count(*) FROM imgembed.model_store WHERE name = 'leaky'").fetchone() == (0,)


def test_a_stored_model_with_external_data_is_refused_on_every_later_load(conn, make_role, dsn):
    """As if an older version had stored it: the backend and the worker both refuse it."""
    load_tiny(conn)
    leaky = reading_model("initializer")
    conn.execute("UPDATE imgembed.model_store SET onnx = %s, sha256 = encode(sha256(%s), 'hex'), bytes = length(%s) "
                 "WHERE name = 'tiny'", (leaky, leaky, leaky))
    err = sql_error(conn, "SELECT img_embedding(%s, 'tiny')", (PHOTOS[0],))
    assert err.sqlstate == "22023" and "external data" in err.diag.message_primary
    worker, worker_dsn = make_role("worker", "imgembed_worker")
    owner, owner_dsn = make_role("owner")
    with connect(owner_dsn) as app:
        app.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        app.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'tiny', mode => 'async')")
        app.execute("INSERT INTO items VALUES (1, %s)", (PHOTOS[0],))
    done = work(worker_dsn, max_attempts=1)
    assert (done.done, done.failed) == (0, 0)
    (message,) = conn.execute("SELECT message FROM imgembed.errors").fetchone()
    assert "the model refers to external data" in message
    assert conn.execute("SELECT count(embedding) FROM items").fetchone() == (0,)


# ------------------------------------------------------------ 2. the worker runs nobody's code

HOSTILE = {
    "trigger": """CREATE FUNCTION spy() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN PERFORM note(); RETURN NEW; END $$;
                  CREATE TRIGGER spy AFTER UPDATE ON items FOR EACH ROW EXECUTE FUNCTION spy()""",
    "rule": "CREATE RULE spy AS ON UPDATE TO items DO ALSO SELECT note()",
    "generated": "ALTER TABLE items ADD COLUMN spy boolean GENERATED ALWAYS AS (note_row(embedding)) STORED",
    "domain": """CREATE DOMAIN spied_int AS int CHECK (note_row(VALUE));
                 ALTER TABLE items ALTER COLUMN id TYPE spied_int""",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_table_owners_code_never_runs_as_the_worker(conn, make_role, kind):
    private_model(conn)
    load_tiny(conn)
    worker, worker_dsn = make_role("worker", "imgembed_worker")
    worker_dsn = psycopg.conninfo.make_conninfo(worker_dsn, options="")  # a plain client: the spy writes, never in parallel mode
    conn.execute("SELECT imgembed.grant_model_usage('private', %s)", (worker,))  # the worker may use it, the owner not
    owner, owner_dsn = make_role("owner")
    with connect(owner_dsn) as app:
        app.execute("CREATE TABLE seen (role name, stolen bytea)")
        app.execute("""CREATE FUNCTION note() RETURNS boolean LANGUAGE sql AS $$
                       INSERT INTO seen SELECT current_user, (SELECT onnx FROM imgembed.model_store WHERE name = 'private');
                       SELECT true $$""")
        # IMMUTABLE is a lie an owner may tell, so that a generated column or a domain calls it
        app.execute("CREATE FUNCTION note_row(anyelement) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT note() $$")
        app.execute("GRANT INSERT ON seen TO PUBLIC")
        app.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        app.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'tiny', mode => 'async')")
        app.execute(HOSTILE[kind])
        app.execute("INSERT INTO items (id, photo) SELECT g, %s FROM generate_series(1, 3) g", (PHOTOS[0],))
        app.execute("DELETE FROM seen")
    assert not conn.execute("SELECT has_table_privilege(%s, 'items', 'SELECT, UPDATE')", (worker,)).fetchone()[0]
    done = work(worker_dsn)
    assert (done.done, done.failed) == (3, 0)
    np.testing.assert_array_equal(vector(conn.execute("SELECT embedding::text FROM items WHERE id = 1").fetchone()[0]),
                                  embed(conn, PHOTOS[0]))
    seen = conn.execute("SELECT DISTINCT role, stolen IS NOT NULL FROM seen").fetchall()
    assert seen == [(owner, False)]  # ran as the owner, who may not read the private model


# ------------------------------------------------------------ 3, 8. only real bindings count

def test_bindings_made_by_hand_embed_nothing_and_block_nothing(conn, make_role):
    private_model(conn)
    load_tiny(conn)
    worker, worker_dsn = make_role("worker", "imgembed_worker")
    conn.execute("SELECT imgembed.grant_model_usage('private', %s)", (worker,))
    attacker, attacker_dsn = make_role("attacker")
    with connect(attacker_dsn) as app:
        app.execute("CREATE TABLE loot (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        err = sql_error(app, "SELECT imgembed.create_embedding_trigger('loot', 'photo', 'embedding', 'private', mode => 'async')")
        assert (err.sqlstate, err.diag.message_primary) == ("42501", 'permission denied for model "private"')
        err = sql_error(app, "INSERT INTO imgembed.bindings (tbl, vector_column, image_column, model, on_error, mode, triggers) "
                             "VALUES ('loot', 'embedding', 'photo', 'private', 'error', 'async', '{fake}')")
        assert err.sqlstate == "42501" and "row-level security" in err.diag.message_primary
        app.execute("CREATE TRIGGER fake BEFORE INSERT ON loot FOR EACH ROW "
                    "EXECUTE FUNCTION imgembed.embedding_trigger('photo', 'embedding', 'private', 'error')")
        err = sql_error(app, "INSERT INTO loot VALUES (1, %s)", (PHOTOS[0],))
        assert (err.sqlstate, err.diag.message_primary) == (
            "55000", 'table public.loot has no embedding trigger for column "embedding"')
        app.execute("DROP TRIGGER fake ON loot")
        app.execute("CREATE TRIGGER fake BEFORE INSERT ON loot FOR EACH ROW "
                    "EXECUTE FUNCTION imgembed.enqueue_embedding('photo', 'embedding', 'private', 'error')")
        err = sql_error(app, "INSERT INTO loot VALUES (1, %s)", (PHOTOS[0],))
        assert err.sqlstate == "55000" and "has no async embedding trigger" in err.diag.message_primary
        app.execute("DROP TRIGGER fake ON loot")
        # 0.3.0 took any function of this name for an async trigger
        app.execute(f"""CREATE FUNCTION imgembed_enqueue_{app.execute("SELECT 'loot'::regclass::oid").fetchone()[0]}_x()
                        RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$""")
        app.execute("INSERT INTO loot VALUES (1, %s)", (PHOTOS[0],))
        assert app.execute("SELECT count(*) FROM imgembed.embedding_triggers()").fetchone() == (0,)
    assert work(worker_dsn).done == 0
    assert conn.execute("SELECT count(embedding) FROM loot").fetchone() == (0,)
    # 8: nothing of the attacker's holds up the model's administration
    conn.execute("SELECT * FROM imgembed.load_model('private', %s, %s::jsonb, replace => true)",
                 (onnx_models.conv_net(32, 32), json.dumps(TINY_CONFIG)))
    conn.execute("SELECT imgembed.drop_model('private')")


def test_a_revoked_grant_stops_every_path_at_its_next_row_or_batch(conn, make_role):
    private_model(conn)
    worker, worker_dsn = make_role("worker", "imgembed_worker")
    owner, owner_dsn = make_role("owner")
    for role in (worker, owner):
        conn.execute("SELECT imgembed.grant_model_usage('private', %s)", (role,))
    with connect(owner_dsn) as app:
        for table, mode in (("synced", "sync"), ("queued", "async")):
            app.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, photo bytea, embedding vector(4))")
            app.execute(f"SELECT imgembed.create_embedding_trigger('{table}', 'photo', 'embedding', 'private', mode => '{mode}')")
            app.execute(f"INSERT INTO {table} VALUES (1, %s)", (PHOTOS[0],))
        conn.execute("SELECT imgembed.revoke_model_usage('private', %s)", (owner,))
        err = sql_error(app, "INSERT INTO synced VALUES (2, %s)", (PHOTOS[1],))
        assert (err.sqlstate, err.diag.message_primary) == (
            "42501", 'the owner of table public.synced may not use model "private"')
        app.execute("INSERT INTO queued VALUES (2, %s)", (PHOTOS[1],))
    done = work(worker_dsn, max_attempts=1)
    assert done.done == 0
    assert conn.execute("SELECT count(embedding) FROM queued").fetchone() == (0,)
    assert conn.execute("SELECT DISTINCT sqlstate, message FROM imgembed.errors").fetchall() == [
        ("42501", 'worker gave up after 1 attempts: the owner of table queued may not use model "private"')]
    conn.execute("UPDATE synced SET embedding = NULL")  # a backfill by a role that may use the model: refused too
    err = sql_error(conn, "CALL imgembed.backfill('synced', 'photo', 'embedding')")
    assert (err.sqlstate, err.diag.message_primary) == ("42501", 'pg_imgembed: the owner of table synced may not use model "private"')


# ------------------------------------------------------------ 4, 5. jobs cannot be forged or poison others

@pytest.fixture
def grouped(conn, make_role):
    """A victim's table of 10 rows in two groups, queued for a worker."""
    load_tiny(conn)
    worker = make_role("worker", "imgembed_worker")
    victim, victim_dsn = make_role("victim")
    writer, writer_dsn = make_role("writer")
    with connect(victim_dsn) as app:
        app.execute("CREATE TABLE photos (id int PRIMARY KEY, grp int, photo bytea, embedding vector(4))")
        app.execute("SELECT imgembed.create_embedding_trigger('photos', 'photo', 'embedding', mode => 'async')")
        app.execute("INSERT INTO photos SELECT g, g %% 2, (%s::bytea[])[g] FROM generate_series(1, 10) g", (PHOTOS,))
        app.execute(f"GRANT INSERT ON photos TO {writer}")
    return worker, writer_dsn


def test_an_insert_only_writer_cannot_add_or_change_jobs(conn, grouped):
    _, writer_dsn = grouped
    with connect(writer_dsn) as app:
        for statement in ("""INSERT INTO imgembed.queue (tbl, image_column, vector_column, model, row_key)
                             VALUES ('photos', 'photo', 'embedding', 'tiny', '{"grp": 1}')""",
                          "UPDATE imgembed.queue SET attempts = 99"):
            assert sql_error(app, statement).sqlstate == "42501"
        assert app.execute("DELETE FROM imgembed.queue").rowcount == 0
    assert conn.execute("SELECT count(*), max(attempts) FROM imgembed.queue").fetchone() == (10, 0)


def test_a_job_matches_at_most_one_row_and_a_poison_job_fails_alone(conn, grouped):
    """Jobs written past the enqueue path (here by the superuser, since no role can): one keyed by
    a column that is not the primary key, one whose key is no integer."""
    (_, worker_dsn), _ = grouped
    conn.execute("""INSERT INTO imgembed.queue (tbl, image_column, vector_column, model, row_key) VALUES
                    ('photos', 'photo', 'embedding', 'tiny', '{"grp": "1"}'),
                    ('photos', 'photo', 'embedding', 'tiny', '{"id": "nope"}')""")
    done = work(worker_dsn, batch_size=16, max_attempts=1)
    assert (done.done, done.failed) == (10, 0)
    for row_id, text in conn.execute("SELECT id, embedding::text FROM photos"):
        np.testing.assert_array_equal(vector(text), embed(conn, PHOTOS[row_id - 1]))
    assert conn.execute("SELECT row_key::text, sqlstate FROM imgembed.errors").fetchall() == [('{"id": "nope"}', "22P02")]
    assert conn.execute("SELECT count(*) FROM imgembed.queue").fetchone() == (0,)


# ------------------------------------------------------------ 6, 10, 11. dropped tables

def test_no_role_can_block_a_drop_table_and_dropped_tables_leave_nothing(conn, make_role):
    load_tiny(conn)
    owner, owner_dsn = make_role("owner")
    attacker, attacker_dsn = make_role("attacker")
    with connect(owner_dsn) as app:
        app.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        app.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', on_error => 'null', mode => 'sync')")
        app.execute("INSERT INTO items VALUES (1, 'junk')")
        relid = app.execute("SELECT 'items'::regclass::oid").fetchone()[0]
        assert app.execute("SELECT count(*) FROM imgembed.errors").fetchone() == (1,)
    with connect(attacker_dsn) as app:
        app.execute(f"CREATE FUNCTION pg_temp.imgembed_enqueue_{relid}_x() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        app.execute(f"CREATE TEMP VIEW pin AS SELECT pg_temp.imgembed_enqueue_{relid}_x()")
        with connect(owner_dsn) as owner_app:
            owner_app.execute("DROP TABLE items")
            owner_app.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
            assert owner_app.execute("SELECT count(*) FROM imgembed.errors").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM imgembed.errors").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM imgembed.bindings").fetchone() == (0,)


def test_a_temp_table_named_like_a_victims_cannot_plant_error_rows(conn, make_role):
    load_tiny(conn)
    victim, victim_dsn = make_role("victim")
    attacker, attacker_dsn = make_role("attacker")
    with connect(victim_dsn) as app:
        app.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        app.execute(f"GRANT SELECT ON items TO {attacker}")
    with connect(attacker_dsn) as app:
        app.execute("CREATE TEMP TABLE items (id int PRIMARY KEY)")
        app.execute("SELECT imgembed.record_error('items', '{\"id\": 1}', 'tiny', '22P03', 'planted')")  # its own temp table
        err = sql_error(app, "SELECT imgembed.record_error('public.items', '{\"id\": 1}', 'tiny', '22P03', 'forged')")
        assert err.sqlstate == "42501"
    with connect(victim_dsn) as app:
        assert app.execute("SELECT count(*) FROM imgembed.errors").fetchone() == (0,)


# ------------------------------------------------------------ 7. locks

def test_a_role_without_usage_cannot_delay_a_models_writers_or_administrator(conn, make_role):
    private_model(conn)
    owner, owner_dsn = make_role("owner")
    conn.execute("SELECT imgembed.grant_model_usage('private', %s)", (owner,))
    attacker, attacker_dsn = make_role("attacker")
    with connect(attacker_dsn) as app, connect(owner_dsn) as writer:
        app.execute("SELECT pg_advisory_lock(hashtextextended('pg_imgembed.model:private', 0))")  # 0.3.0's key
        assert app.execute("SELECT imgembed.lock_model('private'), imgembed._lock_model('private', true)").fetchone() == (None, None)
        app.execute("BEGIN")
        app.execute("SELECT imgembed.lock_model('private')")
        assert app.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'object'").fetchone() == (0,)
        writer.execute("SET lock_timeout = '2s'")
        writer.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        writer.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'private')")
        writer.execute("INSERT INTO items VALUES (1, %s)", (PHOTOS[0],))
        conn.execute("SET lock_timeout = '2s'")
        conn.execute("SELECT * FROM imgembed.load_model('private', %s, %s::jsonb, replace => true)",
                     (onnx_models.conv_net(), json.dumps(TINY_CONFIG)))
        app.execute("ROLLBACK")


# ------------------------------------------------------------ 9. limits raised on the first load

def test_a_limit_set_before_the_first_load_is_judged_by_the_role_that_set_it(conn, make_role):
    load_tiny(conn)
    role, role_dsn = make_role("hostile")
    db = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{db}" SET imgembed.max_image_pixels = 1000')  # 1,200-pixel photos are refused
    try:
        conn.execute("""CREATE FUNCTION wrapped_embedding(image bytea) RETURNS vector LANGUAGE sql SECURITY DEFINER
                        AS $$ SELECT img_embedding(image) $$""")
        for options in ("", "-c imgembed.max_image_pixels=1000000000"):
            with psycopg.connect(role_dsn, autocommit=True, options=options) as app:
                if not options:
                    app.execute("SET imgembed.max_image_pixels = 1000000000")  # a placeholder: nothing is loaded yet
                err = sql_error(app, "SELECT wrapped_embedding(%s)", (PHOTOS[0],))
                assert err.sqlstate in ("54000", "42501")
    finally:
        conn.execute(f'ALTER DATABASE "{db}" RESET imgembed.max_image_pixels')


# ------------------------------------------------------------ 12, 13, 14. models, grants, administrators

def test_roles_see_details_only_of_models_they_may_use(conn, make_role):
    private_model(conn)
    load_tiny(conn)
    role, role_dsn = make_role("reader")
    with connect(role_dsn) as app:
        rows = dict(app.execute("SELECT name, (sha256, preprocess, derived_from, input) IS NULL FROM imgembed.models"))
        assert rows == {"private": True, "tiny": False}
        assert app.execute("SELECT model, grantee FROM imgembed.model_usage").fetchall() == [("tiny", 0)]


def test_a_grant_goes_with_its_role_and_never_to_a_new_role_of_that_name(conn, dsn):
    private_model(conn)
    name = f"reused_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    conn.execute("SELECT imgembed.grant_model_usage('private', %s)", (name,))
    conn.execute(f"DROP ROLE {name}")
    conn.execute(f"CREATE ROLE {name} LOGIN")
    try:
        with connect(psycopg.conninfo.make_conninfo(dsn, user=name)) as app:
            err = sql_error(app, "SELECT img_embedding(%s, 'private')", (PHOTOS[0],))
            assert (err.sqlstate, err.diag.message_primary) == ("42501", 'permission denied for model "private"')
        conn.execute("SELECT imgembed.grant_model_usage('private', 'PUBLIC')")  # any grant forgets dropped roles
        assert conn.execute("SELECT count(*) FROM imgembed.model_usage u "
                            "WHERE u.grantee <> 0 AND NOT EXISTS (SELECT FROM pg_roles r WHERE r.oid = u.grantee)").fetchone() == (0,)
    finally:
        conn.execute(f"DROP ROLE {name}")


def test_imgembed_admin_holds_exactly_what_model_administration_needs(conn, make_role):
    admin, admin_dsn = make_role("admin", "imgembed_admin")
    user, user_dsn = make_role("user")
    with connect(admin_dsn) as app:
        load_model(app, "m", onnx_models.conv_net(), TINY_CONFIG)
        load_model(app, "m", onnx_models.conv_net(32, 32), TINY_CONFIG, replace=True)
        app.execute("SELECT imgembed.set_default_model('m')")
        app.execute("SELECT imgembed.revoke_model_usage('m', 'PUBLIC')")
        app.execute("SELECT imgembed.grant_model_usage('m', %s)", (user,))
        assert app.execute("SELECT count(*) FROM imgembed.model_usage").fetchone() == (1,)
    with connect(user_dsn) as app:
        assert app.execute("SELECT vector_dims(img_embedding(%s))", (PHOTOS[0],)).fetchone() == (4,)
        assert sql_error(app, "SELECT imgembed.drop_model('m')").sqlstate == "42501"
    with connect(admin_dsn) as app:
        app.execute("SELECT imgembed.drop_model('m')")
