-- Functions. PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble
-- that puts the runtime on sys.path once per session (scripts/build_sql.py), then each body calls
-- one function of the pg_imgembed package.
--
-- Everything that reads the model table is PARALLEL UNSAFE: PL/Python's SPI inside a parallel
-- query breaks the backend (the next call crashes the server), so such a query must stay serial.

-- Loading this C library defines the imgembed.* settings for real (src/pg_imgembed.c); every
-- PL/Python body's bootstrap calls it once per session before it reads a setting.
CREATE FUNCTION imgembed.load_settings() RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'imgembed_load_settings';
COMMENT ON FUNCTION imgembed.load_settings() IS
    'Load pg_imgembed''s settings module (defines imgembed.*; values a role may not set are dropped)';

CREATE FUNCTION img_embedding(image bytea) RETURNS vector
LANGUAGE plpython3u STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].img_embedding(image, None)
$python$;
COMMENT ON FUNCTION img_embedding(bytea) IS
    'Embedding of an image (JPEG, PNG, WebP, GIF, BMP, TIFF bytes) with the default model';

CREATE FUNCTION img_embedding(image bytea, model text) RETURNS vector
LANGUAGE plpython3u STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].img_embedding(image, model)
$python$;
COMMENT ON FUNCTION img_embedding(bytea, text) IS 'Embedding of an image with the named model';

CREATE FUNCTION vector_embedding(model text, image bytea) RETURNS vector
LANGUAGE plpython3u STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].img_embedding(image, model)
$python$;
COMMENT ON FUNCTION vector_embedding(text, bytea) IS
    'Embedding of an image with the named model (argument order of Oracle''s VECTOR_EMBEDDING)';

-- Writers of embedded columns hold the model's row FOR SHARE until they commit (see
-- imgembed.lineage). SECURITY DEFINER because FOR SHARE needs UPDATE on the table; it returns the
-- generation of the newest committed version of the row, NULL if the model is gone.
CREATE FUNCTION imgembed.lock_model(model text) RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    locked bigint;
BEGIN
    SELECT m.generation INTO locked FROM imgembed.model_store m WHERE m.name = model FOR SHARE;
    RETURN locked;
END
$$;
COMMENT ON FUNCTION imgembed.lock_model(text) IS
    'Hold a model FOR SHARE until commit (writers of embedded columns); returns its generation';

CREATE FUNCTION imgembed.load_model(name text, onnx bytea, config jsonb DEFAULT NULL,
                                    replace boolean DEFAULT false, grant_public boolean DEFAULT true)
RETURNS SETOF imgembed.models
LANGUAGE plpython3u VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].load_model(name, onnx, config, replace, grant_public)
$python$;
COMMENT ON FUNCTION imgembed.load_model(text, bytea, jsonb, boolean, boolean) IS
    'Validate an ONNX image model (load it, embed a probe image) and store it with its preprocessing config; '
    'a new model is usable by PUBLIC unless grant_public => false';

CREATE FUNCTION imgembed.grant_model_usage(model text, grantee text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM imgembed.check_model_grant(model, grantee);
    INSERT INTO imgembed.model_usage (model, grantee)
    VALUES (model, CASE WHEN upper(grantee) = 'PUBLIC' THEN 'PUBLIC' ELSE grantee END)
    ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION imgembed.grant_model_usage(text, text) IS
    'Let a role (or PUBLIC) use a model: embed with it, bind triggers to it, read its bytes';

CREATE FUNCTION imgembed.revoke_model_usage(model text, grantee text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM imgembed.check_model_grant(model, grantee);
    DELETE FROM imgembed.model_usage u
     WHERE u.model = revoke_model_usage.model
       AND u.grantee = CASE WHEN upper(revoke_model_usage.grantee) = 'PUBLIC' THEN 'PUBLIC' ELSE revoke_model_usage.grantee END;
END
$$;
COMMENT ON FUNCTION imgembed.revoke_model_usage(text, text) IS 'Take back what grant_model_usage() gave';

CREATE FUNCTION imgembed.check_model_grant(model text, grantee text) RETURNS void
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM imgembed.model_store m WHERE m.name = model) THEN
        RAISE EXCEPTION 'model "%" does not exist', model USING ERRCODE = 'undefined_object';
    END IF;
    IF upper(grantee) <> 'PUBLIC' AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = grantee) THEN
        RAISE EXCEPTION 'role "%" does not exist', grantee USING ERRCODE = 'undefined_object',
              HINT = 'Name a role exactly as pg_roles spells it, or PUBLIC.';
    END IF;
END
$$;
COMMENT ON FUNCTION imgembed.check_model_grant(text, text) IS
    'The checks of grant_model_usage() and revoke_model_usage(): the model and the role exist';

CREATE FUNCTION imgembed.set_default_model(name text) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
GD["imgembed"].set_default_model(name)
$python$;
COMMENT ON FUNCTION imgembed.set_default_model(text) IS 'Make a loaded model the one img_embedding(image) uses';

CREATE FUNCTION imgembed.drop_model(name text) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
GD["imgembed"].drop_model(name)
$python$;
COMMENT ON FUNCTION imgembed.drop_model(text) IS 'Remove a model; refused while an embedding trigger uses it';

CREATE FUNCTION imgembed.embedding_trigger() RETURNS trigger
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].on_row(TD)
$python$;
COMMENT ON FUNCTION imgembed.embedding_trigger() IS
    'Row trigger body installed by imgembed.create_embedding_trigger(); arguments: image column, vector column, model, on_error';

CREATE FUNCTION imgembed.create_embedding_trigger(tbl regclass, image_column name, vector_column name,
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

CREATE FUNCTION imgembed.drop_embedding_trigger(tbl regclass, vector_column name) RETURNS void
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
CREATE FUNCTION imgembed.record_error(tbl regclass, row_key jsonb, model text, sqlstate text,
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

CREATE FUNCTION imgembed.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '@VERSION@'::text $$;
COMMENT ON FUNCTION imgembed.version() IS 'Version of the installed SQL';

CREATE FUNCTION imgembed.runtime() RETURNS jsonb
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].runtime()
$python$;
COMMENT ON FUNCTION imgembed.runtime() IS
    'Where the Python runtime lives and the versions of the packages it uses, with the settings in effect';

-- Administration is for the database owner; grant EXECUTE (and write access on
-- imgembed.model_store and imgembed.model_usage) to roles that should manage models.
REVOKE ALL ON FUNCTION imgembed.load_model(text, bytea, jsonb, boolean, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION imgembed.grant_model_usage(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION imgembed.revoke_model_usage(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION imgembed.set_default_model(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION imgembed.drop_model(text) FROM PUBLIC;

CREATE FUNCTION imgembed.embed_batch(model text, images bytea[]) RETURNS vector[]
LANGUAGE plpython3u STABLE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return None if images is None else GD["imgembed"].embed_batch(model, images)
$python$;
COMMENT ON FUNCTION imgembed.embed_batch(text, bytea[]) IS
    'Embeddings of many images with one model session (NULL model: the default); NULL elements give NULL';

-- A procedure that commits cannot carry SET search_path: every name inside is schema-qualified.
CREATE PROCEDURE imgembed.backfill(tbl regclass, image_column name, vector_column name,
                                   model text DEFAULT NULL, batch_size integer DEFAULT 32,
                                   on_error text DEFAULT 'error', switch_model boolean DEFAULT false)
LANGUAGE plpython3u
AS $python$
#bootstrap
GD["imgembed"].backfill(tbl, image_column, vector_column, model, batch_size, on_error, switch_model)
$python$;
COMMENT ON PROCEDURE imgembed.backfill(regclass, name, name, text, integer, text, boolean) IS
    'Re-embed a stale column, then embed rows whose vector is NULL, in committed batches; re-run to continue. '
    'The model defaults to the one the column is bound to; another one needs switch_model => true';
