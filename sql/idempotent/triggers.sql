-- Embedding triggers (sync, and async through imgembed.queue) and their error records.
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble that starts the
-- runtime once per session, then each body calls one method of pg_imgembed.backend.server.Server.
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
    b imgembed.bindings;
    image bytea;
    vector text;
BEGIN
    -- The binding create_embedding_trigger() recorded, not the trigger's arguments, says what to
    -- embed with: a trigger attached by hand embeds nothing.
    SELECT * INTO b FROM imgembed.bindings
     WHERE tbl = TG_RELID AND vector_column = TG_ARGV[1] AND mode = 'sync' AND TG_NAME = ANY (triggers);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no embedding trigger for column "%"', TG_RELID::regclass, TG_ARGV[1]
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    DETAIL = format('Trigger %s calls imgembed.embedding_trigger() but was not made by imgembed.create_embedding_trigger().', TG_NAME),
                    HINT = 'Drop the trigger, and bind the column with imgembed.create_embedding_trigger().';
    END IF;
    EXECUTE format('SELECT ($1).%I', b.image_column) INTO image USING NEW;
    IF image IS NOT NULL THEN
        BEGIN
            IF NOT imgembed.owner_may_use_model(TG_RELID, b.model) THEN
                RAISE EXCEPTION 'pg_imgembed: the owner of table % may not use model "%"', TG_RELID::regclass, b.model
                      USING ERRCODE = 'insufficient_privilege',
                            HINT = format('A model administrator can allow it: SELECT imgembed.grant_model_usage(%L, %L);',
                                          b.model, (SELECT c.relowner::regrole::text FROM pg_catalog.pg_class c WHERE c.oid = TG_RELID));
            END IF;
            vector := imgembed._embed_for_writing(image, b.model);
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
                IF b.on_error = 'null' AND state IN ('22P03', '54000') THEN
                    PERFORM imgembed.record_error(TG_RELID, row_key, b.model, state, substr(message, 14));
                ELSE
                    detail := concat_ws('; ', nullif(detail, ''), format('table %s', TG_RELID::regclass),
                                        'row ' || row_key::text);
                    #raise_clean
                END IF;
            END;
        END;
    END IF;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(b.vector_column, vector));
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

-- Runs as the caller: imgembed.errors' policy lets writers of a table record its errors, and
-- workers those of tables bound for async embedding.
CREATE OR REPLACE FUNCTION imgembed.record_error(tbl regclass, row_key jsonb, model text, sqlstate text,
                                      message text) RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO imgembed.errors (tbl, row_key, model, sqlstate, message) VALUES (tbl, row_key, model, sqlstate, message)
$$;
COMMENT ON FUNCTION imgembed.record_error(regclass, jsonb, text, text, text) IS
    'Append to imgembed.errors (embedding triggers with on_error => ''null'', backfill, workers); writers of the table only';
-- The table is 0.1.0's; its comment lives here, so every install and update gives it the same text.
COMMENT ON TABLE imgembed.errors IS
    'Images that could not be embedded (on_error => ''null'', workers): the row kept a NULL vector; the table''s owner deletes them';

-- What the backend and the workers both need to know about embedded tables, in one place: the
-- bindings create_embedding_trigger() recorded, one row per trigger of theirs that still exists.
CREATE OR REPLACE FUNCTION imgembed.embedding_triggers()
RETURNS TABLE (tbl regclass, trigger_name name, image_column name, vector_column name, model text,
               on_error text, mode text)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT b.tbl, t.tgname, b.image_column, b.vector_column, b.model, b.on_error, b.mode
      FROM imgembed.bindings b
      JOIN pg_catalog.pg_trigger t ON t.tgrelid = b.tbl AND t.tgname = ANY (b.triggers)
     WHERE t.tgfoid = CASE b.mode WHEN 'sync' THEN 'imgembed.embedding_trigger()'::regprocedure
                                  ELSE 'imgembed.enqueue_embedding()'::regprocedure END
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

-- ------------------------------------------------------------ workers

-- A worker reads the images of a batch of jobs and writes their vectors only through these two,
-- which act as the table's owner (src/pg_imgembed.c): whatever the owner defined on the table
-- runs with the owner's privileges, never the worker's, and a worker needs no grant on the table.
-- Only members of imgembed_worker may call them; they touch only tables bound for async embedding.
CREATE OR REPLACE FUNCTION imgembed.worker_read(tbl regclass, vector_column name, row_keys jsonb)
RETURNS imgembed.worker_row[]
LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'imgembed_worker_read';
COMMENT ON FUNCTION imgembed.worker_read(regclass, name, jsonb) IS
    'For workers: image and row version of each job''s row (row_keys: a JSON array of row keys), read as the table''s owner';
REVOKE ALL ON FUNCTION imgembed.worker_read(regclass, name, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION imgembed.worker_read(regclass, name, jsonb) TO imgembed_worker;

CREATE OR REPLACE FUNCTION imgembed.worker_write(tbl regclass, vector_column name, vectors jsonb)
RETURNS integer[]
LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'imgembed_worker_write';
COMMENT ON FUNCTION imgembed.worker_write(regclass, name, jsonb) IS
    'For workers: write vectors (a JSON array of {n, key, vector, row_version}) to rows still at that version, '
    'as the table''s owner; returns the n of the rows written';
REVOKE ALL ON FUNCTION imgembed.worker_write(regclass, name, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION imgembed.worker_write(regclass, name, jsonb) TO imgembed_worker;

-- _owner_read/_owner_write do not pin search_path: they run under the one worker_read/_write set
-- (the owner's own default; pg_catalog first, so nothing shadows what they call), and the
-- owner's triggers they fire resolve names as in any write of the owner's.
-- The async binding of a table's vector column and the SQL that finds a job's row by its key:
-- every primary key column equal to the key's text read as the column's type, so a job matches
-- at most one row, and a key that lacks a column matches none.
CREATE OR REPLACE FUNCTION imgembed._job_rows(tbl regclass, vector_column name, OUT image_column name, OUT key_match text,
                                              OUT row_key text)
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT b.image_column INTO image_column FROM imgembed.bindings b
     WHERE b.tbl = _job_rows.tbl AND b.vector_column = _job_rows.vector_column AND b.mode = 'async';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no async embedding trigger for column "%"', tbl, vector_column
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT string_agg(format('t.%I OPERATOR(pg_catalog.=) (j.key ->> %L)::%s', a.attname, a.attname,
                             format_type(a.atttypid, a.atttypmod)), ' AND ' ORDER BY a.attnum),
           'pg_catalog.jsonb_build_object(' || string_agg(format('%L, t.%I', a.attname, a.attname), ', ' ORDER BY a.attnum) || ')'
      INTO key_match, row_key
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = tbl AND i.indisprimary;
    IF key_match IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key to find its queued rows by', tbl
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;
COMMENT ON FUNCTION imgembed._job_rows(regclass, name) IS
    'The async binding''s image column, the key match of worker_read/_write and the SQL of a row''s typed key';

CREATE OR REPLACE FUNCTION imgembed._owner_read(tbl regclass, vector_column name, row_keys jsonb)
RETURNS imgembed.worker_row[]
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $$
DECLARE
    found imgembed.worker_row[];
    target record := imgembed._job_rows(tbl, vector_column);
BEGIN
    EXECUTE format('SELECT pg_catalog.array_agg(ROW(j.n, t.%I, t.xmin, %s)::imgembed.worker_row) '
                   'FROM pg_catalog.jsonb_array_elements($1) WITH ORDINALITY AS j(key, n) JOIN %s t ON %s',
                   target.image_column, target.row_key, tbl, target.key_match)
       INTO found USING row_keys;
    RETURN coalesce(found, '{}');
END
$$;
COMMENT ON FUNCTION imgembed._owner_read(regclass, name, jsonb) IS 'The body of worker_read(), run as the table''s owner';

CREATE OR REPLACE FUNCTION imgembed._owner_write(tbl regclass, vector_column name, vectors jsonb)
RETURNS integer[]
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $$
DECLARE
    written integer[] := '{}';
    n integer;
    target record := imgembed._job_rows(tbl, vector_column);
BEGIN
    -- A loop over UPDATE ... RETURNING, not a data-modifying WITH: that refuses tables with rules.
    FOR n IN EXECUTE format('UPDATE %s t SET %I = j.vector::%s '
                            'FROM pg_catalog.jsonb_to_recordset($1) AS j(n integer, key jsonb, vector text, row_version xid) '
                            'WHERE %s AND t.xmin OPERATOR(pg_catalog.=) j.row_version RETURNING j.n',
                            tbl, vector_column, imgembed.column_type(tbl, vector_column), target.key_match)
                USING vectors LOOP
        written := written || n;
    END LOOP;
    RETURN written;
END
$$;
COMMENT ON FUNCTION imgembed._owner_write(regclass, name, jsonb) IS 'The body of worker_write(), run as the table''s owner';

-- Forget what the extension recorded for dropped tables (a table reusing a dropped one's OID
-- inherits nothing): its bindings, lineage, jobs, counts and error rows. Only the extension's own
-- rows are touched, and a failure here warns rather than failing the user's DROP.
CREATE OR REPLACE FUNCTION imgembed.forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped oid[];
BEGIN
    IF pg_catalog.to_regclass('imgembed.bindings') IS NULL THEN
        RETURN;  -- DROP EXTENSION pg_imgembed: its tables went with it
    END IF;
    dropped := ARRAY(SELECT objid FROM pg_catalog.pg_event_trigger_dropped_objects() WHERE object_type = 'table');
    IF dropped = '{}' THEN
        RETURN;
    END IF;
    DELETE FROM imgembed.bindings WHERE tbl::oid = ANY (dropped);
    DELETE FROM imgembed.lineage WHERE tbl::oid = ANY (dropped);
    DELETE FROM imgembed.queue WHERE tbl::oid = ANY (dropped);
    DELETE FROM imgembed.queue_stats WHERE tbl::oid = ANY (dropped);
    DELETE FROM imgembed.queue_throughput WHERE tbl::oid = ANY (dropped);
    DELETE FROM imgembed.errors WHERE tbl::oid = ANY (dropped);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_imgembed could not forget the dropped tables: %', SQLERRM;
END
$$;
COMMENT ON FUNCTION imgembed.forget_dropped_tables() IS
    'Event trigger: forget the bindings, lineage, jobs and error rows of dropped tables';
