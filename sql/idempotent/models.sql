-- Models: the settings module, loading, replacing, dropping, locking, introspection.
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble that starts the
-- runtime once per session, then each body calls one method of pg_imgembed.backend.server.Server.
-- Everything that reads the model table is PARALLEL UNSAFE: PL/Python's SPI inside a parallel
-- query breaks the backend (the next call crashes the server), so such a query must stay serial.

-- Each role sees every model's name, tower and size, and the details (input, preprocessing,
-- sha256s, derived_from, which holds the calibration query) only of the models it may use.
CREATE OR REPLACE VIEW imgembed.models AS
SELECT name,
       dimensions,
       CASE WHEN usable THEN format('%s %sx%sx%s', input_layout, 3, input_height, input_width) END AS input,
       CASE WHEN usable THEN config -> 'preprocess' END AS preprocess,
       CASE WHEN usable THEN config -> 'output' END AS output,
       bytes,
       CASE WHEN usable THEN sha256 END AS sha256,
       loaded_at,
       is_default,
       CASE WHEN usable THEN source_sha256 END AS source_sha256,
       generation,
       'image'::text AS modality,
       NULL::text AS tokenizer_sha256,
       CASE WHEN usable THEN derived_from END AS derived_from
  FROM imgembed.model_store, LATERAL imgembed.has_model_usage(name) usable
UNION ALL
SELECT name, dimensions, format('text, up to %s tokens', max_length), CASE WHEN usable THEN config -> 'tokenizer' END,
       CASE WHEN usable THEN config -> 'output' END, bytes, CASE WHEN usable THEN sha256 END, loaded_at, false, NULL,
       generation, 'text', CASE WHEN usable THEN tokenizer_sha256 END, NULL
  FROM imgembed.text_model_store, LATERAL imgembed.has_model_usage(name) usable;
COMMENT ON VIEW imgembed.models IS
    'Loaded models, one row per tower (modality image or text): dimensions, input, preprocessing, size, sha256 '
    '(stored pipeline; source_sha256: the file loaded), default, derived_from (the model an INT8 copy was made from)';
GRANT SELECT ON imgembed.models TO PUBLIC;

-- imgembed.templates and imgembed.catalog, generated from pg_imgembed/templates.py and known_models.py:
-- @data_views@

-- Loading this C library defines the imgembed.* settings for real (src/pg_imgembed.c); every
-- PL/Python body's bootstrap calls it once per session before it reads a setting.
CREATE OR REPLACE FUNCTION imgembed.load_settings() RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'imgembed_load_settings';
COMMENT ON FUNCTION imgembed.load_settings() IS
    'Load pg_imgembed''s settings module (defines imgembed.*; values a role may not set are dropped)';

-- The lock that orders a model's writers (shared) and its replacements (exclusive), and the model's
-- row held FOR SHARE by writers: see imgembed_lock_model in src/pg_imgembed.c for why it is a
-- heavyweight lock no role can take by hand, and who may take it.
CREATE OR REPLACE FUNCTION imgembed._lock_model(model text, exclusive boolean) RETURNS bigint
LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'imgembed_lock_model';
COMMENT ON FUNCTION imgembed._lock_model(text, boolean) IS
    'Lock a model until commit: shared (writers; needs usage; holds its row FOR SHARE, returns its generation) '
    'or exclusive (replacements; model administrators)';
-- Writers of embedded columns hold the model until they commit (see imgembed.lineage); returns the
-- generation of the newest committed version of the row, NULL if the model is gone or the role may
-- not use it.
CREATE OR REPLACE FUNCTION imgembed.lock_model(model text) RETURNS bigint
LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT imgembed._lock_model(model, false) $$;
COMMENT ON FUNCTION imgembed.lock_model(text) IS
    'Hold a model FOR SHARE until commit (writers of embedded columns); returns its generation';

-- Administration: each user-facing function is a PL/pgSQL wrapper (see "#reraise" in embedding.sql)
-- around a PL/Python one, which itself refuses roles without EXECUTE on the wrapper, so that
-- revoking the wrapper from PUBLIC is the whole privilege.

CREATE OR REPLACE FUNCTION imgembed._load_model(name text, onnx bytea, config jsonb, replace boolean,
                                                grant_public boolean)
RETURNS SETOF imgembed.models
LANGUAGE plpython3u VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].load_model(name, onnx, config, replace, grant_public)
$python$;
COMMENT ON FUNCTION imgembed._load_model(text, bytea, jsonb, boolean, boolean) IS 'The body of load_model()';

CREATE OR REPLACE FUNCTION imgembed.load_model(name text, onnx bytea, config jsonb DEFAULT NULL,
                                    replace boolean DEFAULT false, grant_public boolean DEFAULT true)
RETURNS SETOF imgembed.models
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM imgembed._load_model(name, onnx, config, replace, grant_public);
#reraise
END
$$;
COMMENT ON FUNCTION imgembed.load_model(text, bytea, jsonb, boolean, boolean) IS
    'Validate an ONNX image model (load it, embed a probe image) and store it with its preprocessing config; '
    'a new model is usable by PUBLIC unless grant_public => false';
REVOKE ALL ON FUNCTION imgembed.load_model(text, bytea, jsonb, boolean, boolean) FROM PUBLIC;  -- model administrators only
GRANT EXECUTE ON FUNCTION imgembed.load_model(text, bytea, jsonb, boolean, boolean) TO imgembed_admin;

CREATE OR REPLACE FUNCTION imgembed._rebuild_model(name text)
RETURNS TABLE (model text, rebuilt boolean, old_sha256 text, sha256 text, generation bigint, same_vectors boolean,
               max_difference double precision, min_cosine double precision)
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].rebuild_model(name)
$python$;
COMMENT ON FUNCTION imgembed._rebuild_model(text) IS 'The body of rebuild_model()';

CREATE OR REPLACE FUNCTION imgembed.rebuild_model(name text)
RETURNS TABLE (model text, rebuilt boolean, old_sha256 text, sha256 text, generation bigint, same_vectors boolean,
               max_difference double precision, min_cosine double precision)
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM imgembed._rebuild_model(name);
#reraise
END
$$;
COMMENT ON FUNCTION imgembed.rebuild_model(text) IS
    'Re-emit a model stored by an earlier version with this version''s preprocessing (same weights, faster); '
    'it keeps its generation only if its vectors measure equal at float32 rounding level';
REVOKE ALL ON FUNCTION imgembed.rebuild_model(text) FROM PUBLIC;  -- model administrators only
GRANT EXECUTE ON FUNCTION imgembed.rebuild_model(text) TO imgembed_admin;

CREATE OR REPLACE FUNCTION imgembed._set_default_model(name text) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
GD["imgembed"].set_default_model(name)
$python$;
COMMENT ON FUNCTION imgembed._set_default_model(text) IS 'The body of set_default_model()';

CREATE OR REPLACE FUNCTION imgembed.set_default_model(name text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM imgembed._set_default_model(name);
#reraise
END
$$;
COMMENT ON FUNCTION imgembed.set_default_model(text) IS 'Make a loaded model the one img_embedding(image) uses';
REVOKE ALL ON FUNCTION imgembed.set_default_model(text) FROM PUBLIC;  -- model administrators only
GRANT EXECUTE ON FUNCTION imgembed.set_default_model(text) TO imgembed_admin;

CREATE OR REPLACE FUNCTION imgembed._drop_model(name text) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
GD["imgembed"].drop_model(name)
$python$;
COMMENT ON FUNCTION imgembed._drop_model(text) IS 'The body of drop_model()';

CREATE OR REPLACE FUNCTION imgembed.drop_model(name text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM imgembed._drop_model(name);
#reraise
END
$$;
COMMENT ON FUNCTION imgembed.drop_model(text) IS 'Remove a model; refused while an embedding trigger uses it';
REVOKE ALL ON FUNCTION imgembed.drop_model(text) FROM PUBLIC;  -- model administrators only
GRANT EXECUTE ON FUNCTION imgembed.drop_model(text) TO imgembed_admin;

CREATE OR REPLACE FUNCTION imgembed.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '@VERSION@'::text $$;
COMMENT ON FUNCTION imgembed.version() IS 'Version of the installed SQL';

CREATE OR REPLACE FUNCTION imgembed._runtime() RETURNS jsonb
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].runtime()
$python$;
COMMENT ON FUNCTION imgembed._runtime() IS 'The body of runtime()';

CREATE OR REPLACE FUNCTION imgembed.runtime() RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._runtime();
#reraise
END
$$;
COMMENT ON FUNCTION imgembed.runtime() IS
    'Where the Python runtime lives and the versions of the packages it uses, with the settings in effect';
