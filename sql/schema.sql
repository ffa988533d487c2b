-- Tables and views. Objects the user calls unqualified (img_embedding, vector_embedding) live in
-- the extension's schema (public by default); everything else lives in schema imgembed.

CREATE SCHEMA imgembed;
COMMENT ON SCHEMA imgembed IS 'pg_imgembed: model store, admin functions, trigger machinery';
GRANT USAGE ON SCHEMA imgembed TO PUBLIC;

-- Every load or replacement of a model takes a new generation. Lineage compares generations, not
-- sha256s, so a model replaced and then replaced back still marks the vectors made in between.
CREATE SEQUENCE imgembed.model_generation;
SELECT pg_catalog.pg_extension_config_dump('imgembed.model_generation', '');

CREATE TABLE imgembed.model_store (
    name         text PRIMARY KEY CHECK (name <> ''),
    onnx         bytea NOT NULL,
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes        bigint NOT NULL CHECK (bytes = length(onnx)),
    dimensions   integer NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    input_name   text NOT NULL,
    input_layout text NOT NULL CHECK (input_layout IN ('NCHW', 'NHWC')),
    input_height integer NOT NULL CHECK (input_height > 0),
    input_width  integer NOT NULL CHECK (input_width > 0),
    config       jsonb NOT NULL,
    is_default   boolean NOT NULL DEFAULT false,
    generation   bigint NOT NULL DEFAULT pg_catalog.nextval('imgembed.model_generation'),
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    loaded_by    name NOT NULL DEFAULT current_user
);
-- ONNX files are already dense: compressing them with pglz only costs time.
ALTER TABLE imgembed.model_store ALTER COLUMN onnx SET STORAGE EXTERNAL;
CREATE UNIQUE INDEX model_store_single_default ON imgembed.model_store ((true)) WHERE is_default;
COMMENT ON TABLE imgembed.model_store IS
    'ONNX models and their preprocessing; write through imgembed.load_model(), read through imgembed.models';
SELECT pg_catalog.pg_extension_config_dump('imgembed.model_store', '');

-- Per-model privileges, in the spirit of Oracle's GRANT ... ON MINING MODEL: who may use a model
-- (embed with it, bind a trigger to it, read its bytes). Grantee 'PUBLIC' or a role name; a model
-- loaded without grant_public => false is usable by PUBLIC. Model administrators (roles that may
-- UPDATE imgembed.model_store) use every model.
CREATE TABLE imgembed.model_usage (
    model    text NOT NULL REFERENCES imgembed.model_store (name) ON DELETE CASCADE ON UPDATE CASCADE,
    grantee  text NOT NULL,
    PRIMARY KEY (model, grantee)
);
COMMENT ON TABLE imgembed.model_usage IS
    'Who may use each model; change through imgembed.grant_model_usage() and revoke_model_usage()';
GRANT SELECT ON imgembed.model_usage TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('imgembed.model_usage', '');

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
GRANT SELECT ON imgembed.model_store TO PUBLIC;
ALTER TABLE imgembed.model_store ENABLE ROW LEVEL SECURITY;
CREATE POLICY model_users ON imgembed.model_store FOR SELECT USING (imgembed.has_model_usage(name));
CREATE POLICY model_admins ON imgembed.model_store FOR ALL
    USING (pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'))
    WITH CHECK (pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'));

CREATE VIEW imgembed.models AS
SELECT name,
       dimensions,
       format('%s %sx%sx%s', input_layout, 3, input_height, input_width) AS input,
       config -> 'preprocess' AS preprocess,
       config -> 'output' AS output,
       bytes,
       sha256,
       loaded_at,
       is_default
  FROM imgembed.model_store;
COMMENT ON VIEW imgembed.models IS 'Loaded models: dimensions, input geometry, preprocessing, size, sha256, default';
GRANT SELECT ON imgembed.models TO PUBLIC;

CREATE TABLE imgembed.errors (
    id          bigserial PRIMARY KEY,
    table_name  text NOT NULL,
    row_key     jsonb,
    model       text,
    sqlstate    text NOT NULL,
    message     text NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE imgembed.errors IS
    'Images that triggers with on_error => ''null'' could not embed: the row got a NULL vector';
-- Writers record the images they could not embed, so only a writer of a table records its errors;
-- each role reads the errors of the tables it may read.
GRANT SELECT, INSERT ON imgembed.errors TO PUBLIC;
GRANT USAGE ON SEQUENCE imgembed.errors_id_seq TO PUBLIC;
ALTER TABLE imgembed.errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY errors_read ON imgembed.errors FOR SELECT
    USING (pg_catalog.has_table_privilege(pg_catalog.to_regclass(table_name), 'SELECT'));
CREATE POLICY errors_writers ON imgembed.errors FOR INSERT
    WITH CHECK (pg_catalog.has_table_privilege(pg_catalog.to_regclass(table_name), 'INSERT, UPDATE'));
SELECT pg_catalog.pg_extension_config_dump('imgembed.errors', '');
SELECT pg_catalog.pg_extension_config_dump('imgembed.errors_id_seq', '');

-- imgembed.templates and imgembed.catalog, generated from pg_imgembed/templates.py and catalog.py:
-- @data_views@

-- Which model (name, generation) produced the vectors of each column that triggers, backfill and
-- workers keep. A model replaced under the same name, or a trigger switched to another model,
-- makes the column stale until backfill has re-embedded it; a re-embedding in progress records
-- the generation it moves to and the last primary key it did.
--
-- Why this cannot say "fresh" over mixed vectors: every writer of such a column holds the
-- model's row FOR SHARE (imgembed.lock_model) in the transaction that writes the vectors, so a
-- replacement waits for writers that embedded with the old model, and writers after it embed with
-- the new one (READ COMMITTED) or fail to serialize (REPEATABLE READ). No vector of an older
-- generation commits after a newer one is loaded; backfill re-embeds every row after that point
-- before it records the new generation.
CREATE TABLE imgembed.lineage (
    tbl               regclass NOT NULL,
    vector_column     name NOT NULL,
    model             text NOT NULL,
    sha256            text NOT NULL,
    generation        bigint NOT NULL,
    target_generation bigint,
    resume_after      jsonb,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tbl, vector_column)
);
COMMENT ON TABLE imgembed.lineage IS 'Model generation behind each embedded column; see imgembed.vector_lineage';
-- Written by the callers of create_embedding_trigger and backfill. A row says which model made a
-- column's vectors, so only a role that may write that column may write its row.
GRANT SELECT, INSERT, UPDATE ON imgembed.lineage TO PUBLIC;
ALTER TABLE imgembed.lineage ENABLE ROW LEVEL SECURITY;
CREATE POLICY lineage_read ON imgembed.lineage FOR SELECT USING (true);
CREATE POLICY lineage_add ON imgembed.lineage FOR INSERT
    WITH CHECK (pg_catalog.has_column_privilege(tbl, vector_column, 'UPDATE'));
CREATE POLICY lineage_change ON imgembed.lineage FOR UPDATE
    USING (pg_catalog.has_column_privilege(tbl, vector_column, 'UPDATE'))
    WITH CHECK (pg_catalog.has_column_privilege(tbl, vector_column, 'UPDATE'));
SELECT pg_catalog.pg_extension_config_dump('imgembed.lineage', '');

CREATE VIEW imgembed.vector_lineage AS
SELECT l.tbl, l.vector_column, l.model, l.sha256 AS produced_by, m.sha256 AS current_sha256,
       l.generation AS produced_by_generation, m.generation AS current_generation,
       m.generation IS DISTINCT FROM l.generation AS stale, l.target_generation IS NOT NULL AS reembedding,
       l.updated_at
  FROM imgembed.lineage l LEFT JOIN imgembed.model_store m ON m.name = l.model;
COMMENT ON VIEW imgembed.vector_lineage IS
    'Per embedded column: the model (sha256, generation) that made its vectors and whether they are stale';
GRANT SELECT ON imgembed.vector_lineage TO PUBLIC;

-- Async embedding: triggers with mode => 'async' only enqueue; `pg-imgembed worker` processes.
-- One job per row (re-queued in place when the image changes again). Workers claim jobs with a
-- lease (claimed_until): a worker that dies loses nothing, its jobs come back when the lease ends.
CREATE TABLE imgembed.queue (
    id             bigserial PRIMARY KEY,
    tbl            regclass NOT NULL,
    image_column   name NOT NULL,
    vector_column  name NOT NULL,
    model          text NOT NULL,
    row_key        jsonb NOT NULL,
    enqueued_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts       integer NOT NULL DEFAULT 0,
    not_before     timestamptz NOT NULL DEFAULT '-infinity',
    claimed_by     text,
    claimed_until  timestamptz,
    last_error     text
);
CREATE UNIQUE INDEX queue_one_job_per_row ON imgembed.queue (tbl, vector_column, row_key);
CREATE INDEX queue_ready ON imgembed.queue (not_before, id);
COMMENT ON TABLE imgembed.queue IS 'Rows waiting for an embedding from a pg-imgembed worker';
-- Who may do what with jobs. The enqueue triggers run as the writing role: a writer of a table may
-- add its jobs and re-queue them (column privileges allow the upsert; the policy lets a writer's
-- update only make a job ready again), never claim, delay, finish or delete them. Workers are
-- members of imgembed_worker (the DBA grants it) and claim, finish and count the jobs of tables
-- they may UPDATE; a table's owner deletes its jobs when it drops the trigger.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'imgembed_worker') THEN
        CREATE ROLE imgembed_worker NOLOGIN;
    END IF;
END
$$;
GRANT INSERT, DELETE, SELECT (tbl, vector_column, row_key, model),
      UPDATE (enqueued_at, attempts, not_before, last_error, model) ON imgembed.queue TO PUBLIC;
GRANT SELECT, UPDATE ON imgembed.queue TO imgembed_worker;
GRANT USAGE ON SEQUENCE imgembed.queue_id_seq TO PUBLIC;
ALTER TABLE imgembed.queue ENABLE ROW LEVEL SECURITY;
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

CREATE TABLE imgembed.queue_stats (
    tbl            regclass NOT NULL,
    vector_column  name NOT NULL,
    done           bigint NOT NULL DEFAULT 0,
    failed         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tbl, vector_column)
);
COMMENT ON TABLE imgembed.queue_stats IS 'Jobs workers finished (done) or gave up on (failed, see imgembed.errors)';
GRANT SELECT, INSERT, UPDATE ON imgembed.queue_stats TO imgembed_worker;
ALTER TABLE imgembed.queue_stats ENABLE ROW LEVEL SECURITY;
CREATE POLICY queue_stats_workers ON imgembed.queue_stats
    USING (pg_catalog.has_table_privilege(tbl, 'UPDATE'))
    WITH CHECK (pg_catalog.has_table_privilege(tbl, 'UPDATE'));

CREATE VIEW imgembed.queue_status AS
SELECT coalesce(q.tbl, s.tbl) AS tbl, coalesce(q.vector_column, s.vector_column) AS vector_column,
       coalesce(q.queued, 0) AS queued, coalesce(q.in_progress, 0) AS in_progress,
       coalesce(s.failed, 0) AS failed, coalesce(s.done, 0) AS done, q.oldest_pending_age
  FROM (SELECT tbl, vector_column,
               count(*) FILTER (WHERE claimed_until IS NULL OR claimed_until < now()) AS queued,
               count(*) FILTER (WHERE claimed_until >= now()) AS in_progress,
               now() - min(enqueued_at) AS oldest_pending_age
          FROM imgembed.queue GROUP BY tbl, vector_column) q
  FULL JOIN imgembed.queue_stats s ON s.tbl = q.tbl AND s.vector_column = q.vector_column
 -- The view reads the tables as its owner: show each role only the tables it may read (NULL,
 -- so hidden, for a table dropped since).
 WHERE pg_catalog.has_table_privilege(coalesce(q.tbl, s.tbl), 'SELECT');
COMMENT ON VIEW imgembed.queue_status IS 'Per table and vector column: queued, in progress, failed, done, oldest pending age';
GRANT SELECT ON imgembed.queue_status TO PUBLIC;
