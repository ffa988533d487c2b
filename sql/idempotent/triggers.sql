-- Embedding triggers (sync, and async through imgembed.queue) and their error records.
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble that starts the
-- runtime once per session, then each body calls one method of pg_imgembed.server.Server.
-- Everything that reads the model table is PARALLEL UNSAFE: PL/Python's SPI inside a parallel
-- query breaks the backend (the next call crashes the server), so such a query must stay serial.

CREATE OR REPLACE FUNCTION imgembed._embed_for_writing(image bytea, model text) RETURNS text
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].embed_for_writing(image, model)
$python$;
COMMENT ON FUNCTION imgembed._embed_for_writing(bytea, text) IS
    'Vector text of an image for an embedded column: the model is held FOR SHARE until commit';

-- The sync trigger: PL/pgSQL, so that an image's error reaches the writer clean, naming the table
-- and the row, and so that only the vector column is set (the image is read by name, not copied
-- into Python with every other column). Under on_error 'null' an unusable image (22P03, 54000)
-- is recorded in imgembed.errors and the row gets a NULL vector.
CREATE OR REPLACE FUNCTION imgembed.embedding_trigger() RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    image bytea;
    vector text;
BEGIN
    EXECUTE format('SELECT ($1).%I', TG_ARGV[0]) INTO image USING NEW;
    IF image IS NOT NULL THEN
        BEGIN
            vector := imgembed._embed_for_writing(image, TG_ARGV[2]);
        EXCEPTION WHEN OTHERS THEN
            DECLARE
                message text; detail text; hint text; state text; row_key jsonb;
            BEGIN
                GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                        hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
                IF message NOT LIKE 'pg\_imgembed: %' THEN
                    RAISE;
                END IF;
                row_key := (SELECT jsonb_object_agg(k, to_jsonb(NEW) -> k::text)
                              FROM unnest(imgembed.primary_key(TG_RELID)) k);
                IF TG_ARGV[3] = 'null' AND state IN ('22P03', '54000') THEN
                    PERFORM imgembed.record_error(TG_RELID, row_key, TG_ARGV[2], state, substr(message, 14));
                ELSE
                    detail := concat_ws('; ', nullif(detail, ''), format('table %s', TG_RELID::regclass),
                                        'row ' || row_key::text);
                    #raise_clean
                END IF;
            END;
        END;
    END IF;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[1], vector));
END
$$;
COMMENT ON FUNCTION imgembed.embedding_trigger() IS
    'Row trigger body installed by imgembed.create_embedding_trigger(); arguments: image column, vector column, model, on_error';

CREATE OR REPLACE FUNCTION imgembed._create_embedding_trigger(tbl regclass, image_column name, vector_column name,
                                                            model text, on_error text, mode text)
RETURNS void
LANGUAGE plpython3u VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
GD["imgembed"].create_embedding_trigger(tbl, image_column, vector_column, model, on_error, mode)
$python$;
COMMENT ON FUNCTION imgembed._create_embedding_trigger(regclass, name, name, text, text, text) IS
    'The body of create_embedding_trigger()';

CREATE OR REPLACE FUNCTION imgembed.create_embedding_trigger(tbl regclass, image_column name, vector_column name,
                                                  model text DEFAULT NULL, on_error text DEFAULT 'error',
                                                  mode text DEFAULT 'sync')
RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM imgembed._create_embedding_trigger(tbl, image_column, vector_column, model, on_error, mode);
#reraise
END
$$;
COMMENT ON FUNCTION imgembed.create_embedding_trigger(regclass, name, name, text, text, text) IS
    'Keep vector_column = embedding of image_column on INSERT and on UPDATE of the image (mode sync), or queue it for pg-imgembed worker (mode async)';

CREATE OR REPLACE FUNCTION imgembed._drop_embedding_trigger(tbl regclass, vector_column name) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
GD["imgembed"].drop_embedding_trigger(tbl, vector_column)
$python$;
COMMENT ON FUNCTION imgembed._drop_embedding_trigger(regclass, name) IS 'The body of drop_embedding_trigger()';

CREATE OR REPLACE FUNCTION imgembed.drop_embedding_trigger(tbl regclass, vector_column name) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM imgembed._drop_embedding_trigger(tbl, vector_column);
#reraise
END
$$;
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

-- What the backend and the workers both need to know about embedded tables, in one place.
CREATE OR REPLACE FUNCTION imgembed.embedding_triggers()
RETURNS TABLE (tbl regclass, trigger_name name, image_column name, vector_column name, model text,
               on_error text, mode text)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- tgargs holds the trigger's arguments, each ending in NUL (escape-encoded to split, decoded back
    -- to UTF-8); 0.1.0 made the async functions in imgembed.
    SELECT t.tgrelid::regclass, t.tgname, arg.image_column::name, arg.vector_column::name, arg.model, arg.on_error,
           CASE WHEN t.tgfoid = 'imgembed.embedding_trigger()'::regprocedure THEN 'sync' ELSE 'async' END
      FROM pg_trigger t
      JOIN pg_proc p ON p.oid = t.tgfoid
     CROSS JOIN LATERAL string_to_array(encode(t.tgargs, 'escape'), '\000') a
     CROSS JOIN LATERAL (SELECT convert_from(decode(a[1], 'escape'), 'UTF8'), convert_from(decode(a[2], 'escape'), 'UTF8'),
                                convert_from(decode(a[3], 'escape'), 'UTF8'), convert_from(decode(a[4], 'escape'), 'UTF8')
                        ) arg(image_column, vector_column, model, on_error)
     WHERE t.tgfoid = 'imgembed.embedding_trigger()'::regprocedure
        OR p.proname LIKE 'imgembed\_enqueue\_%'
        OR (p.pronamespace = 'imgembed'::regnamespace AND p.proname LIKE 'enqueue\_%')
$$;
COMMENT ON FUNCTION imgembed.embedding_triggers() IS
    'Every embedding trigger: table, trigger, image and vector column, model, on_error, sync or async';

CREATE OR REPLACE FUNCTION imgembed.primary_key(tbl regclass) RETURNS name[]
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(a.attname ORDER BY a.attnum), '{}')
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = tbl AND i.indisprimary
$$;
COMMENT ON FUNCTION imgembed.primary_key(regclass) IS 'The primary key columns of a table, in column order';

CREATE OR REPLACE FUNCTION imgembed.column_type(tbl regclass, col name) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format_type(atttypid, atttypmod) FROM pg_attribute
     WHERE attrelid = tbl AND attname = col AND attnum > 0 AND NOT attisdropped
$$;
COMMENT ON FUNCTION imgembed.column_type(regclass, name) IS 'A column''s type as SQL spells it (vector(512))';
