-- Embedding: one image, a batch, and backfill of a table's column.
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble that starts the
-- runtime once per session, then each body calls one method of pg_imgembed.backend.server.Server.
-- Everything that reads the model table is PARALLEL UNSAFE: PL/Python's SPI inside a parallel
-- query breaks the backend (the next call crashes the server), so such a query must stay serial.

-- The functions users call are PL/pgSQL wrappers around PL/Python ones: "#reraise" (expanded at
-- build time) re-raises pg_imgembed's own errors with their SQLSTATE, detail and hint, but without
-- the Python traceback and class name PL/Python puts on every error; any other error passes
-- through as it was.

CREATE OR REPLACE FUNCTION imgembed._embed(image bytea, model text) RETURNS text
LANGUAGE plpython3u STABLE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return None if image is None else GD["imgembed"].img_embedding(image, model)
$python$;
COMMENT ON FUNCTION imgembed._embed(bytea, text) IS
    'Vector text of an image (NULL model: the default); what img_embedding() and vector_embedding() return';

CREATE OR REPLACE FUNCTION img_embedding(image bytea) RETURNS vector
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._embed(image, NULL);
#reraise
END
$$;
COMMENT ON FUNCTION img_embedding(bytea) IS
    'Embedding of an image (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF or HEIC/HEIF bytes) with the default model';

CREATE OR REPLACE FUNCTION img_embedding(image bytea, model text) RETURNS vector
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._embed(image, model);
#reraise
END
$$;
COMMENT ON FUNCTION img_embedding(bytea, text) IS 'Embedding of an image with the named model';

CREATE OR REPLACE FUNCTION vector_embedding(model text, image bytea) RETURNS vector
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._embed(image, model);
#reraise
END
$$;
COMMENT ON FUNCTION vector_embedding(text, bytea) IS
    'Embedding of an image with the named model (argument order of Oracle''s VECTOR_EMBEDDING)';

CREATE OR REPLACE FUNCTION imgembed._embed_batch(model text, images bytea[]) RETURNS text[]
LANGUAGE plpython3u STABLE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return None if images is None else GD["imgembed"].embed_batch(model, images)
$python$;
COMMENT ON FUNCTION imgembed._embed_batch(text, bytea[]) IS 'Vector texts of many images; what embed_batch() returns';

CREATE OR REPLACE FUNCTION imgembed.embed_batch(model text, images bytea[]) RETURNS vector[]
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._embed_batch(model, images);  -- text[] to vector[] by the types' I/O
#reraise
END
$$;
COMMENT ON FUNCTION imgembed.embed_batch(text, bytea[]) IS
    'Embeddings of many images with one model session (NULL model: the default); NULL elements give NULL';

-- A procedure that commits cannot carry SET search_path: every name inside is schema-qualified.
CREATE OR REPLACE PROCEDURE imgembed.backfill(tbl regclass, image_column name, vector_column name,
                                   model text DEFAULT NULL, batch_size integer DEFAULT 32,
                                   on_error text DEFAULT NULL, switch_model boolean DEFAULT false)
LANGUAGE plpython3u
AS $python$
#bootstrap
GD["imgembed"].backfill(tbl, image_column, vector_column, model, batch_size, on_error, switch_model)
$python$;
COMMENT ON PROCEDURE imgembed.backfill(regclass, name, name, text, integer, text, boolean) IS
    'Re-embed a stale column, then embed rows whose vector is NULL, in committed batches; re-run to continue. '
    'Model and on_error default to those of the column''s trigger; another model needs switch_model => true';
