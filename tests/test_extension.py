"""The extension's catalog contract: names, volatility, strictness, pinned search_path, comments."""

import pytest

EXTENSION_FUNCTIONS = """
    SELECT p.oid::regprocedure::text AS signature, p.provolatile, p.proisstrict, p.proparallel,
           p.proconfig, obj_description(p.oid, 'pg_proc') AS comment, p.prosecdef
      FROM pg_proc p
      JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
      JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_imgembed'
"""

EXPECTED = {
    # signature: (volatility, strict)
    "img_embedding(bytea)": ("s", True),
    "img_embedding(bytea,text)": ("s", True),
    "vector_embedding(text,bytea)": ("s", True),
    "vector_embedding(text,text)": ("s", True),
    "text_embedding(text,text)": ("s", True),
    "imgembed.load_text_model(text,bytea,bytea,jsonb,boolean)": ("v", False),
    "imgembed.embed_batch(text,bytea[])": ("s", False),
    "imgembed.backfill(regclass,name,name,text,integer,text,boolean)": ("v", False),
    "imgembed.load_model(text,bytea,jsonb,boolean,boolean)": ("v", False),
    "imgembed.rebuild_model(text)": ("v", True),
    "imgembed.set_default_model(text)": ("v", True),
    "imgembed.drop_model(text)": ("v", True),
    "imgembed.grant_model_usage(text,text)": ("v", True),
    "imgembed.revoke_model_usage(text,text)": ("v", True),
    "imgembed.check_model_grant(text,text)": ("v", True),
    "imgembed.has_model_usage(text)": ("s", True),
    "imgembed.lock_model(text)": ("v", True),
    "imgembed._lock_model(text,boolean)": ("v", True),
    "imgembed.owner_may_use_model(regclass,text)": ("s", True),
    "imgembed.enqueue_embedding()": ("v", False),
    "imgembed.worker_read(regclass,name,jsonb)": ("v", True),
    "imgembed.worker_write(regclass,name,jsonb)": ("v", True),
    "imgembed._job_rows(regclass,name)": ("s", False),
    "imgembed._owner_read(regclass,name,jsonb)": ("v", False),
    "imgembed._owner_write(regclass,name,jsonb)": ("v", False),
    "imgembed.forget_dropped_tables()": ("v", False),
    "imgembed.load_settings()": ("v", False),
    "imgembed.embedding_triggers()": ("s", False),
    "imgembed.primary_key(regclass)": ("s", True),
    "imgembed.column_type(regclass,name)": ("s", True),
    "imgembed.create_embedding_trigger(regclass,name,name,text,text,text)": ("v", False),
    "imgembed.drop_embedding_trigger(regclass,name)": ("v", True),
    "imgembed.embedding_trigger()": ("v", False),
    "imgembed.record_error(regclass,jsonb,text,text,text)": ("v", False),
    "imgembed.version()": ("i", False),
    "imgembed.runtime()": ("v", False),
    # Statistics (src/model_stats.c): read, reset, workers' reports
    "imgembed._model_stats()": ("v", False),
    "imgembed.model_stats_reset()": ("v", False),
    "imgembed.report_worker_batch(text,bigint,text[],bigint[],bigint,bigint,double precision,double precision,"
    "double precision,double precision,double precision,double precision)": ("v", True),
    # The PL/Python bodies of the PL/pgSQL wrappers above
    "imgembed._embed(bytea,text)": ("s", False),
    "imgembed._embed_for_writing(bytea,text)": ("v", True),
    "imgembed._embed_batch(text,bytea[])": ("s", False),
    "imgembed._load_model(text,bytea,jsonb,boolean,boolean)": ("v", False),
    "imgembed._rebuild_model(text)": ("v", True),
    "imgembed._text_embedding(text,text)": ("s", True),
    "imgembed._load_text_model(text,bytea,bytea,jsonb,boolean)": ("v", False),
    "imgembed._set_default_model(text)": ("v", True),
    "imgembed._drop_model(text)": ("v", True),
    "imgembed._create_embedding_trigger(regclass,name,name,text,text,text)": ("v", False),
    "imgembed._drop_embedding_trigger(regclass,name)": ("v", True),
    "imgembed._runtime()": ("v", False),
}


@pytest.fixture
def functions(conn):
    return {row[0]: row[1:] for row in conn.execute(EXTENSION_FUNCTIONS)}


def test_the_function_set(functions):
    assert set(functions) == set(EXPECTED)


def test_volatility_and_strictness(functions):
    assert {sig: (f[0], f[1]) for sig, f in functions.items()} == EXPECTED


# A procedure that commits cannot have SET clauses; backfill qualifies every name instead. The
# worker's reads and writes run under the search_path worker_read/_write set for the table's
# owner (a table owner's triggers resolve names as in the owner's own writes), and qualify theirs.
UNPINNED = {"imgembed.backfill(regclass,name,name,text,integer,text,boolean)",
            "imgembed._owner_read(regclass,name,jsonb)", "imgembed._owner_write(regclass,name,jsonb)"}


def test_every_function_pins_search_path_and_has_a_comment(functions):
    for sig, (_, _, _, config, comment, _) in functions.items():
        assert config == (None if sig in UNPINNED else ["search_path=pg_catalog, pg_temp"]), sig
        assert comment, sig


def test_only_these_functions_are_security_definer(functions):
    """The enqueue trigger adds jobs that writers may not add by hand (it reads the row through
    field access and output functions only); owner_may_use_model answers one question about
    another role's grants; the event trigger deletes only the rows of the tables just dropped.
    Acting as someone else is done in C, after checking the caller (src/pg_imgembed.c)."""
    assert sorted(sig for sig, f in functions.items() if f[5]) == [
        "imgembed.enqueue_embedding()", "imgembed.forget_dropped_tables()", "imgembed.owner_may_use_model(regclass,text)"]


def test_public_names_live_in_public_internals_in_imgembed(conn):
    rows = dict(conn.execute("""
        SELECT p.proname::text, n.nspname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE p.proname IN ('img_embedding', 'vector_embedding', 'text_embedding', 'load_model', 'embedding_trigger')""").fetchall())
    assert rows == {"img_embedding": "public", "vector_embedding": "public", "text_embedding": "public",
                    "load_model": "imgembed", "embedding_trigger": "imgembed"}


def test_versions_match(conn):
    import pg_imgembed

    sql_version, ext_version, runtime = conn.execute(
        "SELECT imgembed.version(), extversion, imgembed.runtime()->>'pg_imgembed' FROM pg_extension WHERE extname = 'pg_imgembed'"
    ).fetchone()
    assert sql_version == ext_version == runtime == pg_imgembed.__version__


def test_drop_extension_removes_everything(conn):
    conn.execute("DROP EXTENSION pg_imgembed")
    assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'imgembed'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'img_embedding'").fetchone()[0] == 0
