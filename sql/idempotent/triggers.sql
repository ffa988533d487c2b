-- Embedding triggers (sync, and async through imgembed.queue) and their error records.
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble that starts the
-- runtime once per session, then each body calls one method of pg_imgembed.server.Server.
-- Everything that reads the model table is PARALLEL UNSAFE: PL/Python's SPI inside a parallel
-- query breaks the backend (the next call crashes the server), so such a query must stay serial.

CREATE OR REPLACE FUNCTION imgembed.embedding_trigger() RETURNS trigger
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].on_row(TD)
$python$;
COMMENT ON FUNCTION imgembed.embedding_trigger() IS
    'Row trigger body installed by imgembed.create_embedding_trigger(); arguments: image column, vector column, model, on_error';

CREATE OR REPLACE FUNCTION imgembed.create_embedding_trigger(tbl regclass, image_column name, vector_column name,
                                                  model text DEFAULT NULL, on_error text DEFAULT 'error',
                                                  mode text DEFAULT 'sync')
RETURNS void
LANGUAGE plpython3u VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
GD["imgembed"].create_embedding_trigger(tbl, image_column, vector_column, model, on_error, mode)
$python$;
COMMENT ON FUNCTION imgembed.create_embedding_trigger(regclass, name, name, text, text, text) IS
    'Keep vector_column = embedding of image_column on INSERT and on UPDATE of the image (mode sync), or queue it for pg-imgembed worker (mode async)';

CREATE OR REPLACE FUNCTION imgembed.drop_embedding_trigger(tbl regclass, vector_column name) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
GD["imgembed"].drop_embedding_trigger(tbl, vector_column)
$python$;
COMMENT ON FUNCTION imgembed.drop_embedding_trigger(regclass, name) IS
    'Remove the triggers create_embedding_trigger() made for vector_column';

-- Runs as the caller: imgembed.errors' policy lets only writers of a table record its errors.
-- The table is stored by its schema-qualified name, which the policy resolves whatever the
-- caller's search_path.
CREATE OR REPLACE FUNCTION imgembed.record_error(tbl regclass, row_key jsonb, model text, sqlstate text,
                                      message text) RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO imgembed.errors (table_name, row_key, model, sqlstate, message)
    SELECT format('%I.%I', n.nspname, c.relname), row_key, model, sqlstate, message
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl
$$;
COMMENT ON FUNCTION imgembed.record_error(regclass, jsonb, text, text, text) IS
    'Append to imgembed.errors (embedding triggers with on_error => ''null'', backfill, workers); writers of the table only';
