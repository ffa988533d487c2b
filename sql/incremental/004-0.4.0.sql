-- 0.4.0's changes to the tables (run once: by a fresh install after 003, or by an update from an
-- earlier release): the extension's own record of embedding bindings, jobs that only its enqueue
-- path writes, error rows and grants by oid, and a role for model administrators.

-- ------------------------------------------------------------ roles

-- Model administrators: what loading, replacing, dropping and granting models needs, and no more.
-- Workers (imgembed_worker, 0.2.0) need no grant on any user table: they read and write tables
-- through imgembed.worker_read/worker_write, which act as each table's owner.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'imgembed_admin') THEN
        CREATE ROLE imgembed_admin NOLOGIN;
    END IF;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON imgembed.model_store, imgembed.text_model_store, imgembed.model_usage
    TO imgembed_admin;
GRANT USAGE ON SEQUENCE imgembed.model_generation TO imgembed_admin;

-- ------------------------------------------------------------ models: grants by role oid

-- A grant names the role by oid (0: PUBLIC), so it neither survives DROP ROLE under a name nor
-- passes to the next role created with that name. Each role reads the grants that apply to it;
-- administrators read them all.
ALTER TABLE imgembed.model_usage ADD COLUMN role oid;
UPDATE imgembed.model_usage u
   SET role = CASE WHEN u.grantee = 'PUBLIC' THEN 0 ELSE (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = u.grantee) END;
DELETE FROM imgembed.model_usage WHERE role IS NULL;  -- roles dropped since the grant
ALTER TABLE imgembed.model_usage DROP CONSTRAINT model_usage_pkey, DROP COLUMN grantee;
ALTER TABLE imgembed.model_usage RENAME COLUMN role TO grantee;
ALTER TABLE imgembed.model_usage ALTER COLUMN grantee SET NOT NULL, ADD PRIMARY KEY (model, grantee);
COMMENT ON COLUMN imgembed.model_usage.grantee IS 'The role''s oid (pg_roles.oid), 0 for PUBLIC';
REVOKE SELECT ON imgembed.model_usage FROM PUBLIC;
GRANT SELECT ON imgembed.model_usage TO PUBLIC;
ALTER TABLE imgembed.model_usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY grants_that_apply ON imgembed.model_usage FOR SELECT
    USING (grantee = 0 OR pg_catalog.pg_has_role(grantee, 'USAGE')
           OR pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'));
CREATE POLICY model_admins ON imgembed.model_usage FOR ALL
    USING (pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'))
    WITH CHECK (pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'));

CREATE OR REPLACE FUNCTION imgembed.has_model_usage(model text) RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE')
        OR EXISTS (SELECT FROM imgembed.model_usage u JOIN pg_catalog.pg_roles r ON r.oid = u.grantee OR u.grantee = 0
                    WHERE u.model = $1 AND (u.grantee = 0 OR pg_catalog.pg_has_role(u.grantee, 'USAGE')))
$$;

-- Whether the owner of a table may use a model: every path that embeds for a table checks it when
-- it embeds (sync triggers, backfill, workers), so a revoked grant stops the next row or batch.
-- SECURITY DEFINER: the grants of another role are not the caller's to read; it answers only this.
CREATE FUNCTION imgembed.owner_may_use_model(tbl regclass, model text) RETURNS boolean
LANGUAGE sql STABLE STRICT SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.has_table_privilege(c.relowner, 'imgembed.model_store', 'UPDATE')
        OR EXISTS (SELECT FROM imgembed.model_usage u JOIN pg_catalog.pg_roles r ON r.oid = u.grantee OR u.grantee = 0
                    WHERE u.model = $2 AND (u.grantee = 0 OR pg_catalog.pg_has_role(c.relowner, u.grantee, 'USAGE')))
      FROM pg_catalog.pg_class c WHERE c.oid = $1
$$;
COMMENT ON FUNCTION imgembed.owner_may_use_model(regclass, text) IS 'Whether the owner of the table may use the model';

-- ------------------------------------------------------------ bindings: the extension's own record

-- What create_embedding_trigger() bound: only these count as embedding triggers (a trigger or an
-- enqueue function made by hand is not one). A row can only be written by the table's owner, for
-- a model the owner may use; the triggers read their model and columns from here, not from their
-- arguments. The sql_drop event trigger forgets the bindings of dropped tables.
CREATE TABLE imgembed.bindings (
    tbl            regclass NOT NULL,
    vector_column  name NOT NULL,
    image_column   name NOT NULL,
    model          text NOT NULL,
    on_error       text NOT NULL CHECK (on_error IN ('error', 'null')),
    mode           text NOT NULL CHECK (mode IN ('sync', 'async')),
    triggers       name[] NOT NULL,
    created_by     oid NOT NULL DEFAULT pg_catalog.to_regrole(current_user)::oid,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tbl, vector_column)
);
COMMENT ON TABLE imgembed.bindings IS
    'Embedding triggers that imgembed.create_embedding_trigger() made: table, columns, model, on_error, mode';
SELECT pg_catalog.pg_extension_config_dump('imgembed.bindings', '');
GRANT SELECT, INSERT, UPDATE, DELETE ON imgembed.bindings TO PUBLIC;
ALTER TABLE imgembed.bindings ENABLE ROW LEVEL SECURITY;
CREATE POLICY bindings_read ON imgembed.bindings FOR SELECT
    USING (pg_catalog.has_any_column_privilege(tbl, 'SELECT, INSERT, UPDATE')
           OR pg_catalog.pg_has_role('imgembed_worker', 'MEMBER')
           OR pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'));
CREATE POLICY bindings_owners_add ON imgembed.bindings FOR INSERT
    WITH CHECK (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE')
                AND imgembed.owner_may_use_model(tbl, model));
CREATE POLICY bindings_owners_change ON imgembed.bindings FOR UPDATE
    USING (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE'))
    WITH CHECK (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE')
                AND imgembed.owner_may_use_model(tbl, model));
CREATE POLICY bindings_owners_drop ON imgembed.bindings FOR DELETE
    USING (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE'));

-- The enqueue trigger of every async binding (here, not with the other functions, because the
-- migration below attaches it). SECURITY DEFINER, so writers need no privilege on the queue and
-- cannot add a job by hand: the job's table, column and model come from the binding, and its row
-- key from the table's primary key, each value as its type's output function spells it (no cast
-- or operator a table owner could define runs here).
CREATE FUNCTION imgembed.enqueue_embedding() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RAISE EXCEPTION 'replaced by sql/idempotent/queue.sql'; END $$;

-- Bindings of the triggers earlier releases made: sync triggers that call embedding_trigger(),
-- and async ones whose enqueue function is the one create_embedding_trigger() generated for that
-- table and column (owned by the table's owner, in its schema), for models the owner may use.
-- Async triggers move to imgembed.enqueue_embedding() and the generated functions go.
DO $$
DECLARE
    o record;
    fn regprocedure;
    definition text;
    old_functions regprocedure[];
    old_triggers constant text := $q$
        SELECT t.oid AS trigger_oid, t.tgrelid::regclass AS tbl, t.tgname, p.oid::regprocedure AS fn,
               t.tgfoid = pg_catalog.to_regprocedure('imgembed.embedding_trigger()') AS sync, c.relowner AS owner,
               convert_from(decode(a[1], 'escape'), 'UTF8')::name AS image_column,
               convert_from(decode(a[2], 'escape'), 'UTF8')::name AS vector_column,
               convert_from(decode(a[3], 'escape'), 'UTF8') AS model,
               convert_from(decode(a[4], 'escape'), 'UTF8') AS on_error
          FROM pg_catalog.pg_trigger t
          JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
          JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
         CROSS JOIN LATERAL string_to_array(encode(t.tgargs, 'escape'), '\000') a
         WHERE t.tgnargs = 4
           AND (t.tgfoid = pg_catalog.to_regprocedure('imgembed.embedding_trigger()')
                OR (p.proname LIKE 'imgembed\_enqueue\_' || t.tgrelid || '\_%' AND p.pronamespace = c.relnamespace
                    AND p.proowner = c.relowner)
                OR (p.pronamespace = 'imgembed'::regnamespace AND p.proname LIKE 'enqueue\_' || t.tgrelid || '\_%'))$q$;
BEGIN
    EXECUTE 'INSERT INTO imgembed.bindings (tbl, vector_column, image_column, model, on_error, mode, triggers, created_by) '
            'SELECT o.tbl, o.vector_column, min(o.image_column), min(o.model), min(o.on_error), '
            '       CASE WHEN bool_and(o.sync) THEN ''sync'' ELSE ''async'' END, array_agg(o.tgname ORDER BY o.tgname), min(o.owner) '
            '  FROM (' || old_triggers || ') o '
            ' WHERE o.on_error IN (''error'', ''null'') AND imgembed.owner_may_use_model(o.tbl, o.model) '
            ' GROUP BY o.tbl, o.vector_column '
            'HAVING count(DISTINCT (o.image_column, o.model, o.on_error, o.sync)) = 1';
    EXECUTE 'SELECT array_agg(DISTINCT o.fn) FROM (' || old_triggers || ') o WHERE NOT o.sync' INTO old_functions;
    FOR o IN EXECUTE 'SELECT * FROM (' || old_triggers || ') o WHERE NOT o.sync '
                     'AND (o.tbl, o.vector_column) IN (SELECT b.tbl, b.vector_column FROM imgembed.bindings b)' LOOP
        -- pg_get_triggerdef() gives back the trigger's own events and WHEN clause
        definition := pg_catalog.regexp_replace(pg_catalog.pg_get_triggerdef(o.trigger_oid), 'EXECUTE FUNCTION .*$', '')
                      || pg_catalog.format('EXECUTE FUNCTION imgembed.enqueue_embedding(%L, %L, %L, %L)',
                                           o.image_column, o.vector_column, o.model, o.on_error);
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', o.tgname, o.tbl);
        EXECUTE definition;
    END LOOP;
    FOREACH fn IN ARRAY coalesce(old_functions, '{}') LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t WHERE t.tgfoid = fn::oid) THEN
            EXECUTE pg_catalog.format('DROP FUNCTION %s', fn);
        END IF;
    END LOOP;
END
$$;

-- ------------------------------------------------------------ queue: only the enqueue path adds jobs

-- Writers no longer touch the queue (the enqueue trigger adds and re-queues jobs as the
-- extension's owner); workers claim, finish and count jobs of every async binding.
REVOKE ALL ON imgembed.queue FROM PUBLIC;
DROP POLICY queue_writers_read ON imgembed.queue;
DROP POLICY queue_writers_add ON imgembed.queue;
DROP POLICY queue_writers_requeue ON imgembed.queue;
DROP POLICY queue_owners_drop ON imgembed.queue;
DROP POLICY queue_workers ON imgembed.queue;
CREATE POLICY queue_workers ON imgembed.queue FOR ALL
    USING (pg_catalog.pg_has_role('imgembed_worker', 'MEMBER'))
    WITH CHECK (pg_catalog.pg_has_role('imgembed_worker', 'MEMBER'));
GRANT SELECT, UPDATE, DELETE ON imgembed.queue TO imgembed_worker;
-- A table's owner drops its jobs (drop_embedding_trigger(), or a switch to sync).
GRANT SELECT (tbl, vector_column), DELETE ON imgembed.queue TO PUBLIC;
CREATE POLICY queue_owners_read ON imgembed.queue FOR SELECT
    USING (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE'));
CREATE POLICY queue_owners_drop ON imgembed.queue FOR DELETE
    USING (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE'));
DROP POLICY queue_stats_workers ON imgembed.queue_stats;
CREATE POLICY queue_stats_workers ON imgembed.queue_stats
    USING (pg_catalog.pg_has_role('imgembed_worker', 'MEMBER'))
    WITH CHECK (pg_catalog.pg_has_role('imgembed_worker', 'MEMBER'));
-- Jobs keep their row key as the enqueue path now writes it (each value as text); jobs whose key
-- is not exactly the table's primary key, or that belong to no binding, could only have been
-- written by hand: they go.
DELETE FROM imgembed.queue q
 WHERE NOT EXISTS (SELECT FROM imgembed.bindings b WHERE b.tbl = q.tbl AND b.vector_column = q.vector_column AND b.mode = 'async')
    OR (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(q.row_key) k)
       IS DISTINCT FROM (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
                           FROM pg_catalog.pg_index i
                           JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                          WHERE i.indrelid = q.tbl AND i.indisprimary);
UPDATE imgembed.queue q
   SET row_key = (SELECT jsonb_object_agg(e.key, e.value #>> '{}') FROM jsonb_each(q.row_key) e)
 WHERE EXISTS (SELECT FROM jsonb_each(q.row_key) e WHERE jsonb_typeof(e.value) <> 'string');

-- ------------------------------------------------------------ errors: by table oid

-- An error row names its table by oid, so the read policy does not depend on the reader's
-- search_path and a later table of the same name inherits nothing; rows go with their table.
ALTER TABLE imgembed.errors ADD COLUMN tbl regclass;
UPDATE imgembed.errors SET tbl = pg_catalog.to_regclass(table_name);
DELETE FROM imgembed.errors WHERE tbl IS NULL;
DROP POLICY errors_read ON imgembed.errors;
DROP POLICY errors_writers ON imgembed.errors;
ALTER TABLE imgembed.errors ALTER COLUMN tbl SET NOT NULL, DROP COLUMN table_name;
-- Writers of a table record its errors, and so do workers for tables bound for async embedding.
GRANT DELETE ON imgembed.errors TO PUBLIC;
CREATE POLICY errors_writers ON imgembed.errors FOR INSERT
    WITH CHECK (pg_catalog.has_table_privilege(tbl, 'INSERT, UPDATE')
                OR (pg_catalog.pg_has_role('imgembed_worker', 'MEMBER')
                    AND EXISTS (SELECT FROM imgembed.bindings b WHERE b.tbl = errors.tbl AND b.mode = 'async')));
CREATE POLICY errors_read ON imgembed.errors FOR SELECT USING (pg_catalog.has_table_privilege(tbl, 'SELECT'));
-- A table's owner clears its errors (DELETE FROM imgembed.errors WHERE tbl = 'photos'::regclass).
CREATE POLICY errors_owners_clear ON imgembed.errors FOR DELETE
    USING (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE'));

-- ------------------------------------------------------------ workers: rows read as the table's owner

-- What imgembed.worker_read() returns for each job of a batch that still has its row: the job's
-- position in the batch, the image, the row version to write against, and the row's key with its
-- values typed as the columns are (what imgembed.errors shows on every path).
CREATE TYPE imgembed.worker_row AS (n integer, image bytea, row_version xid, row_key jsonb);
