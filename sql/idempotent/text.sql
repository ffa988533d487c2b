-- Text towers: loading one beside a model's image tower, and text queries into the same space.
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- Same shape as embedding.sql and models.sql: thin PL/Python bodies behind PL/pgSQL wrappers that
-- re-raise pg_imgembed's errors clean ("#reraise"), PARALLEL UNSAFE wherever the model table is read.

CREATE OR REPLACE FUNCTION imgembed._load_text_model(name text, onnx bytea, tokenizer bytea, config jsonb, replace boolean)
RETURNS SETOF imgembed.models
LANGUAGE plpython3u VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].load_text_model(name, onnx, tokenizer, config, replace)
$python$;
COMMENT ON FUNCTION imgembed._load_text_model(text, bytea, bytea, jsonb, boolean) IS 'The body of load_text_model()';

CREATE OR REPLACE FUNCTION imgembed.load_text_model(name text, onnx bytea, tokenizer bytea, config jsonb DEFAULT NULL,
                                                    replace boolean DEFAULT false)
RETURNS SETOF imgembed.models
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM imgembed._load_text_model(name, onnx, tokenizer, config, replace);
#reraise
END
$$;
COMMENT ON FUNCTION imgembed.load_text_model(text, bytea, bytea, jsonb, boolean) IS
    'Validate a text tower (ONNX taking input_ids, and its tokenizer.json) against the image tower of the same '
    'name (same dimensions) and store it beside it';
REVOKE ALL ON FUNCTION imgembed.load_text_model(text, bytea, bytea, jsonb, boolean) FROM PUBLIC;  -- model administrators only
GRANT EXECUTE ON FUNCTION imgembed.load_text_model(text, bytea, bytea, jsonb, boolean) TO imgembed_admin;

CREATE OR REPLACE FUNCTION imgembed._text_embedding(model text, query text) RETURNS text
LANGUAGE plpython3u STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
#bootstrap
return GD["imgembed"].text_embedding(model, query)
$python$;
COMMENT ON FUNCTION imgembed._text_embedding(text, text) IS 'Vector text of a text query; what text_embedding() returns';

CREATE OR REPLACE FUNCTION text_embedding(model text, query text) RETURNS vector
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._text_embedding(model, query);
#reraise
END
$$;
COMMENT ON FUNCTION text_embedding(text, text) IS
    'Embedding of a text with the named model''s text tower, in the space of its image tower''s vectors';

CREATE OR REPLACE FUNCTION vector_embedding(model text, query text) RETURNS vector
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._text_embedding(model, query);
#reraise
END
$$;
COMMENT ON FUNCTION vector_embedding(text, text) IS
    'Embedding of a text with the named model''s text tower (Oracle''s VECTOR_EMBEDDING argument order)';
