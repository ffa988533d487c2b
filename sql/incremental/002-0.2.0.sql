-- 0.2.0's changes to the tables (run once: by a fresh install after 001, or by the update from
-- 0.1.0): model generations and per-model privileges, lineage by generation, and who may touch
-- jobs and error records.

-- ------------------------------------------------------------ models: generations, source sha256

-- Every load or replacement of a model takes a new generation. Lineage compares generations, not
-- sha256s, so a model replaced and then replaced back still marks the vectors made in between.
CREATE SEQUENCE imgembed.model_generation;
SELECT pg_catalog.pg_extension_config_dump('imgembed.model_generation', '');
ALTER TABLE imgembed.model_store
    ADD COLUMN generation bigint NOT NULL DEFAULT pg_catalog.nextval('imgembed.model_generation'),
    -- sha256 of the ONNX file as the user loaded it (what sha256sum prints); NULL for models
    -- loaded by 0.1.0. sha256 is the stored pipeline's.
    ADD COLUMN source_sha256 text CHECK (source_sha256 ~ '^[0-9a-f]{64}$');

-- ------------------------------------------------------------ models: who may use them

-- Per-model privileges, in the spirit of Oracle's GRANT ... ON MINING MODEL: who may use a model
-- (embed with it, bind a trigger to it, read its bytes). Grantee 'PUBLIC' or a role name; a model
-- loaded without grant_public => false is usable by PUBLIC, as every model of 0.1.0 stays.
-- Model administrators (roles that may UPDATE imgembed.model_store) use every model.
CREATE TABLE imgembed.model_usage (
    model    text NOT NULL REFERENCES imgembed.model_store (name) ON DELETE CASCADE ON UPDATE CASCADE,
    grantee  text NOT NULL,
    PRIMARY KEY (model, grantee)
);
COMMENT ON TABLE imgembed.model_usage IS
    'Who may use each model; change through imgembed.grant_model_usage() and revoke_model_usage()';
GRANT SELECT ON imgembed.model_usage TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('imgembed.model_usage', '');
INSERT INTO imgembed.model_usage (model, grantee) SELECT name, 'PUBLIC' FROM imgembed.model_store;

-- Here, not with the other functions, because the policy below needs it.
CREATE FUNCTION imgembed.has_model_usage(model text) RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE')
        OR EXISTS (SELECT FROM imgembed.model_usage u LEFT JOIN pg_catalog.pg_roles r ON r.rolname = u.grantee
                    WHERE u.model = $1 AND (u.grantee = 'PUBLIC' OR pg_catalog.pg_has_role(r.oid, 'USAGE')))
$$;
COMMENT ON FUNCTION imgembed.has_model_usage(text) IS 'Whether the current role may use the model';

-- img_embedding() runs as its caller and reads the model from here: each role sees the rows of
-- the models it may use (imgembed.models lists every model's metadata, never its bytes).
ALTER TABLE imgembed.model_store ENABLE ROW LEVEL SECURITY;
CREATE POLICY model_users ON imgembed.model_store FOR SELECT USING (imgembed.has_model_usage(name));
CREATE POLICY model_admins ON imgembed.model_store FOR ALL
    USING (pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'))
    WITH CHECK (pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'));

-- ------------------------------------------------------------ errors: only writers record them

-- Writers record the images they could not embed, so only a writer of a table records its errors
-- (imgembed.record_error() now runs as its caller); each role reads the errors of the tables it
-- may read.
GRANT SELECT, INSERT ON imgembed.errors TO PUBLIC;
GRANT USAGE ON SEQUENCE imgembed.errors_id_seq TO PUBLIC;
ALTER TABLE imgembed.errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY errors_read ON imgembed.errors FOR SELECT
    USING (pg_catalog.has_table_privilege(pg_catalog.to_regclass(table_name), 'SELECT'));
CREATE POLICY errors_writers ON imgembed.errors FOR INSERT
    WITH CHECK (pg_catalog.has_table_privilege(pg_catalog.to_regclass(table_name), 'INSERT, UPDATE'));

-- ------------------------------------------------------------ lineage: by generation

-- Which model (name, generation) produced the vectors of each column that triggers, backfill and
-- workers keep. Why this cannot say "fresh" over mixed vectors: every writer of such a column
-- holds the model's row FOR SHARE (imgembed.lock_model) in the transaction that writes the
-- vectors, so a replacement waits for writers that embedded with the old model, and writers after
-- it embed with the new one (READ COMMITTED) or fail to serialize (REPEATABLE READ). No vector of
-- an older generation commits after a newer one is loaded; backfill re-embeds every row after that
-- point before it records the new generation.
--
-- A column 0.1.0 recorded as made by the model's current sha256 takes its current generation; any
-- other stays stale (generation 0), and a re-embedding in progress starts over.
ALTER TABLE imgembed.lineage ADD COLUMN generation bigint, ADD COLUMN target_generation bigint;
UPDATE imgembed.lineage l
   SET generation = coalesce((SELECT m.generation FROM imgembed.model_store m
                               WHERE m.name = l.model AND m.sha256 = l.sha256 AND l.target_sha256 IS NULL), 0),
       resume_after = NULL;
ALTER TABLE imgembed.lineage ALTER COLUMN generation SET NOT NULL, DROP COLUMN target_sha256;
COMMENT ON TABLE imgembed.lineage IS 'Model generation behind each embedded column; see imgembed.vector_lineage';

-- ------------------------------------------------------------ queue: writers add, workers work

-- The enqueue triggers run as the writing role: a writer of a table may add its jobs and re-queue
-- them (column privileges allow the upsert; the policy lets a writer's update only make a job
-- ready again), never claim, delay, finish or delete them. Workers are members of
-- imgembed_worker (the DBA grants it) and claim, finish and count the jobs of tables they may
-- UPDATE; a table's owner deletes its jobs when it drops the trigger.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'imgembed_worker') THEN
        CREATE ROLE imgembed_worker NOLOGIN;
    END IF;
END
$$;
REVOKE ALL ON imgembed.queue, imgembed.queue_stats FROM PUBLIC;
DROP POLICY queue_writers ON imgembed.queue;
DROP POLICY queue_stats_writers ON imgembed.queue_stats;
GRANT INSERT, DELETE, SELECT (tbl, vector_column, row_key, model),
      UPDATE (enqueued_at, attempts, not_before, last_error, model) ON imgembed.queue TO PUBLIC;
GRANT SELECT, UPDATE ON imgembed.queue TO imgembed_worker;
CREATE POLICY queue_writers_read ON imgembed.queue FOR SELECT
    USING (pg_catalog.has_table_privilege(tbl, 'INSERT, UPDATE'));
CREATE POLICY queue_writers_add ON imgembed.queue FOR INSERT
    WITH CHECK (pg_catalog.has_table_privilege(tbl, 'INSERT, UPDATE'));
CREATE POLICY queue_writers_requeue ON imgembed.queue FOR UPDATE
    USING (pg_catalog.has_table_privilege(tbl, 'INSERT, UPDATE'))
    WITH CHECK (pg_catalog.has_table_privilege(tbl, 'INSERT, UPDATE')
                AND not_before = '-infinity' AND attempts = 0 AND last_error IS NULL);
CREATE POLICY queue_workers ON imgembed.queue FOR ALL
    USING (pg_catalog.pg_has_role('imgembed_worker', 'MEMBER') AND pg_catalog.has_table_privilege(tbl, 'UPDATE'))
    WITH CHECK (pg_catalog.pg_has_role('imgembed_worker', 'MEMBER') AND pg_catalog.has_table_privilege(tbl, 'UPDATE'));
CREATE POLICY queue_owners_drop ON imgembed.queue FOR DELETE
    USING (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE'));
GRANT SELECT, INSERT, UPDATE ON imgembed.queue_stats TO imgembed_worker;
CREATE POLICY queue_stats_workers ON imgembed.queue_stats
    USING (pg_catalog.has_table_privilege(tbl, 'UPDATE'))
    WITH CHECK (pg_catalog.has_table_privilege(tbl, 'UPDATE'));
