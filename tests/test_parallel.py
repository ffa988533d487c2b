"""Parallel query: nothing may do SPI in parallel mode (it corrupts PL/Python and crashes the
server), so the functions are PARALLEL UNSAFE and refuse cleanly when called there anyway."""

import psycopg
import pytest

from tests import images
from tests.conftest import force_parallel_options
from tests.helpers import embed, load_tiny, sql_error

PHOTO = images.png(images.photo_like(40, 30, seed=1))


@pytest.fixture
def parallel_conn(conn):
    version = int(conn.execute("SHOW server_version_num").fetchone()[0])
    for option in force_parallel_options(version).split("-c ")[1:]:
        name, value = option.strip().split("=")
        conn.execute(f"SET {name} = {value}")
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea)")
    conn.execute("INSERT INTO items SELECT g, %s FROM generate_series(1, 20) g", (PHOTO,))
    conn.execute("ANALYZE items")
    return conn


def postmaster_start(conn):
    return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


def test_parallel_plans_are_really_forced(parallel_conn):
    plan = "\n".join(r[0] for r in parallel_conn.execute("EXPLAIN SELECT count(*) FROM items"))
    assert "Gather" in plan


def test_queries_with_img_embedding_stay_serial(parallel_conn):
    plan = "\n".join(r[0] for r in parallel_conn.execute("EXPLAIN SELECT img_embedding(photo) FROM items"))
    assert "Gather" not in plan
    (n,) = parallel_conn.execute("SELECT count(img_embedding(photo)) FROM items").fetchone()
    assert n == 20


def test_create_table_as_and_update_work(parallel_conn):
    parallel_conn.execute("CREATE TABLE copy AS SELECT id, img_embedding(photo) AS e FROM items")
    parallel_conn.execute("ALTER TABLE items ADD COLUMN e vector(4)")
    parallel_conn.execute("UPDATE items SET e = img_embedding(photo)")
    assert parallel_conn.execute("SELECT count(*) FROM items i JOIN copy c USING (id) WHERE i.e = c.e").fetchone()[0] == 20


def test_falsely_parallel_safe_wrapper_gets_an_error_not_a_crash(parallel_conn, dsn):
    started = postmaster_start(parallel_conn)
    parallel_conn.execute("""
        CREATE FUNCTION my_embed(b bytea) RETURNS vector LANGUAGE plpgsql PARALLEL SAFE
        AS $$ BEGIN RETURN img_embedding(b); END $$""")
    plan = "\n".join(r[0] for r in parallel_conn.execute("EXPLAIN SELECT my_embed(photo) FROM items"))
    assert "Gather" in plan
    for _ in range(3):  # a broken backend would crash on the next PL/Python call
        err = sql_error(parallel_conn, "SELECT my_embed(photo) FROM items")
        assert err.sqlstate == "25000"
        # PostgreSQL 15 refuses the wrapper's exception block before any PL/Python code runs; 17
        # starts it, and the PL/Python body refuses parallel mode before any SPI.
        assert err.diag.message_primary in ("cannot start subtransactions during a parallel operation",
                                            "pg_imgembed's img_embedding() cannot run inside a parallel query")
    parallel_conn.execute("""
        CREATE FUNCTION my_embed_inner(b bytea) RETURNS text LANGUAGE plpgsql PARALLEL SAFE
        AS $$ BEGIN RETURN imgembed._embed(b, NULL); END $$""")
    for _ in range(3):  # straight to the PL/Python body: it checks parallel mode before any SPI
        err = sql_error(parallel_conn, "SELECT my_embed_inner(photo) FROM items")
        assert err.sqlstate == "25000"
        assert err.diag.message_primary == "pg_imgembed: pg_imgembed's img_embedding() cannot run inside a parallel query"
    assert embed(parallel_conn, PHOTO).shape == (4,)
    with psycopg.connect(dsn, autocommit=True) as fresh:
        assert postmaster_start(fresh) == started


def test_every_plpython_function_is_parallel_unsafe(conn):
    rows = conn.execute("""
        SELECT p.oid::regprocedure::text, p.proparallel FROM pg_proc p
          JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
          JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_imgembed'
          JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'plpython3u'""").fetchall()
    assert len(rows) >= 10
    assert {parallel for _, parallel in rows} == {"u"}
