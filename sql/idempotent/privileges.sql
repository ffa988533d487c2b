-- Per-model usage privileges (the table and its policy are in sql/incremental/).
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble that starts the
-- runtime once per session, then each body calls one method of pg_imgembed.backend.server.Server.
-- Everything that reads the model table is PARALLEL UNSAFE: PL/Python's SPI inside a parallel
-- query breaks the backend (the next call crashes the server), so such a query must stay serial.

CREATE OR REPLACE FUNCTION imgembed.grant_model_usage(model text, grantee text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO imgembed.model_usage (model, grantee)
    VALUES (model, imgembed.check_model_grant(model, grantee))
    ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION imgembed.grant_model_usage(text, text) IS
    'Let a role (or PUBLIC) use a model: embed with it, bind triggers to it, read its bytes';
REVOKE ALL ON FUNCTION imgembed.grant_model_usage(text, text) FROM PUBLIC;  -- model administrators only: grant EXECUTE to them

CREATE OR REPLACE FUNCTION imgembed.revoke_model_usage(model text, grantee text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM imgembed.model_usage u
     WHERE u.model = revoke_model_usage.model
       AND u.grantee = imgembed.check_model_grant(revoke_model_usage.model, revoke_model_usage.grantee);
END
$$;
COMMENT ON FUNCTION imgembed.revoke_model_usage(text, text) IS 'Take back what grant_model_usage() gave';
REVOKE ALL ON FUNCTION imgembed.revoke_model_usage(text, text) FROM PUBLIC;  -- model administrators only: grant EXECUTE to them

-- A grant names the role by oid (0: PUBLIC). Grants of roles dropped since match nothing; each
-- grant or revoke forgets them.
CREATE OR REPLACE FUNCTION imgembed.check_model_grant(model text, grantee text) RETURNS oid
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    role oid;
BEGIN
    IF NOT EXISTS (SELECT FROM imgembed.model_store m WHERE m.name = model) THEN
        RAISE EXCEPTION 'model "%" does not exist', model USING ERRCODE = 'undefined_object';
    END IF;
    IF upper(grantee) = 'PUBLIC' THEN
        role := 0;
    ELSE
        SELECT r.oid INTO role FROM pg_catalog.pg_roles r WHERE r.rolname = grantee;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'role "%" does not exist', grantee USING ERRCODE = 'undefined_object',
                  HINT = 'Name a role exactly as pg_roles spells it, or PUBLIC.';
        END IF;
    END IF;
    DELETE FROM imgembed.model_usage u
     WHERE u.grantee <> 0 AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = u.grantee);
    RETURN role;
END
$$;
COMMENT ON FUNCTION imgembed.check_model_grant(text, text) IS
    'The checks of grant_model_usage() and revoke_model_usage(): the model and the role exist; returns the role''s oid (0: PUBLIC)';

-- imgembed_admin (sql/incremental/004-0.4.0.sql): EXECUTE on every administration function.
GRANT EXECUTE ON FUNCTION imgembed.grant_model_usage(text, text), imgembed.revoke_model_usage(text, text)
    TO imgembed_admin;
