\echo Use "CREATE EXTENSION pg_imgembed CASCADE" to load this file. \quit
-- 0.1.0's tables, exactly as released (run once: by a fresh install, or in 0.1.0's own script).
-- Views and functions are not here: sql/idempotent/ recreates them for every version.

-- Objects the user calls unqualified (img_embedding, vector_embedding) live in the extension's
-- schema (public by default); everything else lives in schema imgembed.

CREATE SCHEMA imgembed;
COMMENT ON SCHEMA imgembed IS 'pg_imgembed: model store, admin functions, trigger machinery';
GRANT USAGE ON SCHEMA imgembed TO PUBLIC;

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
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    loaded_by    name NOT NULL DEFAULT current_user
);
-- ONNX files are already dense: compressing them with pglz only costs time.
ALTER TABLE imgembed.model_store ALTER COLUMN onnx SET STORAGE EXTERNAL;
CREATE UNIQUE INDEX model_store_single_default ON imgembed.model_store ((true)) WHERE is_default;
COMMENT ON TABLE imgembed.model_store IS
    'ONNX models and their preprocessing; write through imgembed.load_model(), read through imgembed.models';
-- img_embedding() runs as its caller and reads the model bytes from here.
GRANT SELECT ON imgembed.model_store TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('imgembed.model_store', '');

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
SELECT pg_catalog.pg_extension_config_dump('imgembed.errors', '');
SELECT pg_catalog.pg_extension_config_dump('imgembed.errors_id_seq', '');

-- Which model (by sha256) produced the vectors of each column that triggers or backfill keep.
-- A model replaced under the same name makes the column stale until backfill re-embeds it;
-- a re-embedding in progress records the sha256 it moves to and the last primary key it did.
CREATE TABLE imgembed.lineage (
    tbl            regclass NOT NULL,
    vector_column  name NOT NULL,
    model          text NOT NULL,
    sha256         text NOT NULL,
    target_sha256  text,
    resume_after   jsonb,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tbl, vector_column)
);
COMMENT ON TABLE imgembed.lineage IS 'Model sha256 behind each embedded column; see imgembed.vector_lineage';
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
-- The enqueueing triggers run as the writing user: each role reaches only the jobs of tables it
-- may write. (Workers take the model and image column from the table's trigger, not the job.)
-- Deleting a job takes no more than a writer could do to the row itself; workers and
-- drop_embedding_trigger() do it, so a worker needs only SELECT and UPDATE on its tables.
GRANT SELECT, INSERT, UPDATE, DELETE ON imgembed.queue TO PUBLIC;
ALTER TABLE imgembed.queue ENABLE ROW LEVEL SECURITY;
CREATE POLICY queue_writers ON imgembed.queue
    USING (pg_catalog.has_table_privilege(tbl, 'INSERT, UPDATE'))
    WITH CHECK (pg_catalog.has_table_privilege(tbl, 'INSERT, UPDATE'));
GRANT USAGE ON SEQUENCE imgembed.queue_id_seq TO PUBLIC;

CREATE TABLE imgembed.queue_stats (
    tbl            regclass NOT NULL,
    vector_column  name NOT NULL,
    done           bigint NOT NULL DEFAULT 0,
    failed         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tbl, vector_column)
);
COMMENT ON TABLE imgembed.queue_stats IS 'Jobs workers finished (done) or gave up on (failed, see imgembed.errors)';
GRANT SELECT, INSERT, UPDATE ON imgembed.queue_stats TO PUBLIC;
ALTER TABLE imgembed.queue_stats ENABLE ROW LEVEL SECURITY;
CREATE POLICY queue_stats_writers ON imgembed.queue_stats
    USING (pg_catalog.has_table_privilege(tbl, 'INSERT, UPDATE'))
    WITH CHECK (pg_catalog.has_table_privilege(tbl, 'INSERT, UPDATE'));

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

-- 0.3.0's changes to the tables (run once: by a fresh install after 002, or by the update from
-- 0.1.0 or 0.2.0): text towers beside the image towers, and where a derived model came from.

-- ------------------------------------------------------------ models: derived models

-- A model made from another (an INT8 copy, pg-imgembed models quantize) records which and how, in
-- its own ONNX metadata (pg_imgembed.derived_from); load_model copies that here.
ALTER TABLE imgembed.model_store ADD COLUMN derived_from jsonb;

-- ------------------------------------------------------------ text towers

-- A model family is one name: its image tower in model_store and, optionally, the text tower of
-- the same model here (a CLIP pair), so text_embedding('clip', ...) and img_embedding(...,
-- 'clip') give vectors of one space. The tokenizer (tokenizer.json) is stored beside the ONNX;
-- both are what the reference pipelines run. image_sha256 pairs the tower with the image tower it
-- was loaded against: a replaced image tower leaves the text tower refused until it is reloaded.
CREATE TABLE imgembed.text_model_store (
    name             text PRIMARY KEY REFERENCES imgembed.model_store (name) ON DELETE CASCADE ON UPDATE CASCADE,
    onnx             bytea NOT NULL,
    sha256           text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes            bigint NOT NULL CHECK (bytes = length(onnx)),
    tokenizer        bytea NOT NULL,
    tokenizer_sha256 text NOT NULL CHECK (tokenizer_sha256 ~ '^[0-9a-f]{64}$'),
    dimensions       integer NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    max_length       integer NOT NULL CHECK (max_length > 0),
    config           jsonb NOT NULL,
    image_sha256     text NOT NULL CHECK (image_sha256 ~ '^[0-9a-f]{64}$'),
    generation       bigint NOT NULL DEFAULT pg_catalog.nextval('imgembed.model_generation'),
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    loaded_by        name NOT NULL DEFAULT current_user
);
ALTER TABLE imgembed.text_model_store ALTER COLUMN onnx SET STORAGE EXTERNAL;
COMMENT ON TABLE imgembed.text_model_store IS
    'Text towers (ONNX + tokenizer.json) of model families; write through imgembed.load_text_model(), read through imgembed.models';
SELECT pg_catalog.pg_extension_config_dump('imgembed.text_model_store', '');
-- The family's privileges: a role uses the text tower of the models it may use.
GRANT SELECT ON imgembed.text_model_store TO PUBLIC;
ALTER TABLE imgembed.text_model_store ENABLE ROW LEVEL SECURITY;
CREATE POLICY model_users ON imgembed.text_model_store FOR SELECT USING (imgembed.has_model_usage(name));
CREATE POLICY model_admins ON imgembed.text_model_store FOR ALL
    USING (pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'))
    WITH CHECK (pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'));

-- ------------------------------------------------------------ tables dropped without drop_embedding_trigger

-- A table dropped with DROP TABLE leaves its rows here behind (lineage, jobs, counts) and its
-- generated enqueue functions, and PostgreSQL reuses OIDs: a new table could inherit a "fresh"
-- lineage row of another model, or fail to get an async trigger. So every dropped table is
-- forgotten at the end of its DROP. SECURITY DEFINER: the dropping role owns the table, not these
-- rows; only the rows and functions of the tables that command dropped are touched.
-- Here, not with the other functions, because the event trigger below needs it.
CREATE FUNCTION imgembed.forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped oid[];
    enqueue regprocedure;
BEGIN
    IF pg_catalog.to_regclass('imgembed.lineage') IS NULL THEN
        RETURN;  -- DROP EXTENSION pg_imgembed: its tables went with it
    END IF;
    dropped := ARRAY(SELECT objid FROM pg_catalog.pg_event_trigger_dropped_objects() WHERE object_type = 'table');
    IF dropped = '{}' THEN
        RETURN;
    END IF;
    DELETE FROM imgembed.lineage WHERE tbl::oid = ANY (dropped);
    DELETE FROM imgembed.queue WHERE tbl::oid = ANY (dropped);
    DELETE FROM imgembed.queue_stats WHERE tbl::oid = ANY (dropped);
    FOR enqueue IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p, pg_catalog.unnest(dropped) d(relid)
                    WHERE p.proname LIKE 'imgembed\_enqueue\_' || d.relid || '\_%' LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION %s', enqueue);
    END LOOP;
END
$$;
COMMENT ON FUNCTION imgembed.forget_dropped_tables() IS
    'Event trigger: forget the lineage, jobs and enqueue functions of dropped tables';
CREATE EVENT TRIGGER imgembed_forget_dropped_tables ON sql_drop EXECUTE FUNCTION imgembed.forget_dropped_tables();

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

-- 0.5.0's tables (run once: by a fresh install after 004, or by an update from an earlier
-- release): what imgembed.queue_status needs for a throughput and an ETA, and the workers'
-- heartbeats for `pg-imgembed status`. imgembed.model_stats lives in shared memory, not here.

-- Jobs workers finished or gave up on, per table, vector column and minute: the last minutes of
-- imgembed.queue_stats, for a rate. Workers add to it with each batch and drop what is over an
-- hour old; dropped tables are forgotten with their other rows (imgembed.forget_dropped_tables).
CREATE TABLE imgembed.queue_throughput (
    tbl            regclass NOT NULL,
    vector_column  name NOT NULL,
    minute         timestamptz NOT NULL,
    done           bigint NOT NULL DEFAULT 0,
    failed         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tbl, vector_column, minute)
);
COMMENT ON TABLE imgembed.queue_throughput IS 'Jobs workers finished (done) or gave up on (failed) per minute, the last hour';
GRANT SELECT, INSERT, UPDATE, DELETE ON imgembed.queue_throughput TO imgembed_worker;
ALTER TABLE imgembed.queue_throughput ENABLE ROW LEVEL SECURITY;
-- as imgembed.queue_stats since 0.4.0: workers need no grant on the tables they embed
CREATE POLICY queue_throughput_workers ON imgembed.queue_throughput
    USING (pg_catalog.pg_has_role('imgembed_worker', 'MEMBER'))
    WITH CHECK (pg_catalog.pg_has_role('imgembed_worker', 'MEMBER'));

-- One row per running worker, renewed every few seconds while it claims; a worker that stops
-- cleanly removes its own. Worker roles write only their own rows; every role reads them through
-- imgembed.worker_status (name, heartbeats, counts: no table data).
CREATE TABLE imgembed.worker_heartbeats (
    worker      text PRIMARY KEY,
    role        name NOT NULL DEFAULT current_user,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    done        bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE imgembed.worker_heartbeats IS 'pg-imgembed workers: last heartbeat, jobs done and failed since they started';
GRANT SELECT, INSERT, UPDATE, DELETE ON imgembed.worker_heartbeats TO imgembed_worker;
ALTER TABLE imgembed.worker_heartbeats ENABLE ROW LEVEL SECURITY;
CREATE POLICY worker_heartbeats_own ON imgembed.worker_heartbeats FOR ALL TO imgembed_worker
    USING (role = current_user) WITH CHECK (role = current_user);

-- Models: the settings module, loading, replacing, dropping, locking, introspection.
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble that starts the
-- runtime once per session, then each body calls one method of pg_imgembed.server.Server.
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
CREATE OR REPLACE VIEW imgembed.templates AS SELECT * FROM (VALUES
  ('vit', 'Hugging Face ViTImageProcessor: warp to 224x224 (bilinear), scale to [0, 1], mean/std 0.5; token outputs use the CLS token', '{"preprocess": {"resize": {"height": 224, "width": 224}, "resample": "bilinear", "rescale": 0.00392156862745098, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "output": {"pooling": "cls"}}'::jsonb),
  ('convnext', 'Hugging Face ConvNextImageProcessor at 224 with crop_pct 0.875: shortest side to int(224 / 0.875) = 256 (bicubic), center crop 224, ImageNet mean/std', '{"preprocess": {"resize": {"shortest_edge": 256}, "resample": "bicubic", "center_crop": {"height": 224, "width": 224}, "rescale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}'::jsonb),
  ('clip', 'Hugging Face CLIPImageProcessor: shortest side to 224 (bicubic), center crop 224, CLIP mean/std', '{"preprocess": {"resize": {"shortest_edge": 224}, "resample": "bicubic", "center_crop": {"height": 224, "width": 224}, "rescale": 0.00392156862745098, "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}'::jsonb),
  ('torchvision-resnet', 'torchvision ImageNet weights (ResNet and most classifiers): shortest side to 256 (bilinear), center crop 224 with torchvision''s rounding, ImageNet mean/std', '{"preprocess": {"resize": {"shortest_edge": 256}, "resample": "bilinear", "center_crop": {"height": 224, "width": 224}, "crop_rounding": "round", "rescale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}'::jsonb),
  ('keras-caffe', 'Keras preprocess_input for ResNet50/VGG16 (''caffe'' mode): load_img warp to 224x224 (nearest), RGB to BGR, subtract the ImageNet channel means, no scaling, NHWC', '{"preprocess": {"resize": {"height": 224, "width": 224}, "resample": "nearest", "rescale": null, "mean": [123.68, 116.779, 103.939], "std": [1.0, 1.0, 1.0], "channel_order": "BGR", "layout": "NHWC"}}'::jsonb),
  ('dinov2', 'DINOv2 (Hugging Face BitImageProcessor as configured for facebook/dinov2-*): shortest side to 256 (bicubic), center crop 224, ImageNet mean/std; token outputs use the CLS token', '{"preprocess": {"resize": {"shortest_edge": 256}, "resample": "bicubic", "center_crop": {"height": 224, "width": 224}, "rescale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, "output": {"pooling": "cls"}}'::jsonb)
) t(name, description, config);
COMMENT ON VIEW imgembed.templates IS 'Preprocessing templates: load_model(..., config => ''{"template": "clip"}'')';
GRANT SELECT ON imgembed.templates TO PUBLIC;
CREATE OR REPLACE VIEW imgembed.catalog AS SELECT * FROM (VALUES
  ('Qdrant/resnet50-onnx', 'convnext', 2048, 'apache-2.0', 'model.onnx', NULL, 'fastembed; ResNet-50 pooled features', 'image'),
  ('Qdrant/clip-ViT-B-32-vision', 'clip', 512, 'mit', 'model.onnx', NULL, 'fastembed; CLIP ViT-B/32 image tower, projected embeddings', 'image'),
  ('Qdrant/clip-ViT-B-32-text', NULL, 512, 'mit', 'model.onnx', NULL, 'fastembed; CLIP ViT-B/32 text tower: load it under the name of Qdrant/clip-ViT-B-32-vision', 'text'),
  ('Qdrant/Unicom-ViT-B-16', 'clip', 768, 'apache-2.0', 'model.onnx', NULL, 'fastembed', 'image'),
  ('Qdrant/Unicom-ViT-B-32', 'clip', 512, 'apache-2.0', 'model.onnx', NULL, 'fastembed', 'image'),
  ('google/vit-base-patch16-224', 'vit', 768, 'apache-2.0', NULL, 'last_hidden_state', 'export with optimum-cli export onnx --model google/vit-base-patch16-224 DIR', 'image'),
  ('facebook/convnext-tiny-224', 'convnext', 768, 'apache-2.0', NULL, 'pooler_output', 'export with optimum-cli export onnx --model facebook/convnext-tiny-224 DIR', 'image'),
  ('openai/clip-vit-base-patch32', 'clip', 512, 'mit', NULL, 'image_embeds', 'no ONNX: export CLIPVisionModelWithProjection (and CLIPTextModelWithProjection for its text tower)', 'image'),
  ('facebook/dinov2-small', 'dinov2', 384, 'apache-2.0', NULL, 'last_hidden_state', 'export with optimum-cli export onnx --model facebook/dinov2-small DIR', 'image')
) c(model_id, template, dimensions, license, onnx_file, output, notes, modality);
COMMENT ON VIEW imgembed.catalog IS 'Known models: pg-imgembed models load NAME --catalog MODEL_ID';
GRANT SELECT ON imgembed.catalog TO PUBLIC;


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
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
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
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
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
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
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
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
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
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
GD["imgembed"].set_default_model(name)
$python$;
COMMENT ON FUNCTION imgembed._set_default_model(text) IS 'The body of set_default_model()';

CREATE OR REPLACE FUNCTION imgembed.set_default_model(name text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM imgembed._set_default_model(name);
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
END
$$;
COMMENT ON FUNCTION imgembed.set_default_model(text) IS 'Make a loaded model the one img_embedding(image) uses';
REVOKE ALL ON FUNCTION imgembed.set_default_model(text) FROM PUBLIC;  -- model administrators only
GRANT EXECUTE ON FUNCTION imgembed.set_default_model(text) TO imgembed_admin;

CREATE OR REPLACE FUNCTION imgembed._drop_model(name text) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
GD["imgembed"].drop_model(name)
$python$;
COMMENT ON FUNCTION imgembed._drop_model(text) IS 'The body of drop_model()';

CREATE OR REPLACE FUNCTION imgembed.drop_model(name text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM imgembed._drop_model(name);
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
END
$$;
COMMENT ON FUNCTION imgembed.drop_model(text) IS 'Remove a model; refused while an embedding trigger uses it';
REVOKE ALL ON FUNCTION imgembed.drop_model(text) FROM PUBLIC;  -- model administrators only
GRANT EXECUTE ON FUNCTION imgembed.drop_model(text) TO imgembed_admin;

CREATE OR REPLACE FUNCTION imgembed.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '0.5.0'::text $$;
COMMENT ON FUNCTION imgembed.version() IS 'Version of the installed SQL';

CREATE OR REPLACE FUNCTION imgembed._runtime() RETURNS jsonb
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
return GD["imgembed"].runtime()
$python$;
COMMENT ON FUNCTION imgembed._runtime() IS 'The body of runtime()';

CREATE OR REPLACE FUNCTION imgembed.runtime() RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._runtime();
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
END
$$;
COMMENT ON FUNCTION imgembed.runtime() IS
    'Where the Python runtime lives and the versions of the packages it uses, with the settings in effect';

-- Per-model usage privileges (the table and its policy are in sql/incremental/).
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble that starts the
-- runtime once per session, then each body calls one method of pg_imgembed.server.Server.
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

-- Embedding: one image, a batch, and backfill of a table's column.
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble that starts the
-- runtime once per session, then each body calls one method of pg_imgembed.server.Server.
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
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
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
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
END
$$;
COMMENT ON FUNCTION img_embedding(bytea) IS
    'Embedding of an image (JPEG, PNG, WebP, GIF, BMP, TIFF bytes) with the default model';

CREATE OR REPLACE FUNCTION img_embedding(image bytea, model text) RETURNS vector
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._embed(image, model);
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
END
$$;
COMMENT ON FUNCTION img_embedding(bytea, text) IS 'Embedding of an image with the named model';

CREATE OR REPLACE FUNCTION vector_embedding(model text, image bytea) RETURNS vector
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._embed(image, model);
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
END
$$;
COMMENT ON FUNCTION vector_embedding(text, bytea) IS
    'Embedding of an image with the named model (argument order of Oracle''s VECTOR_EMBEDDING)';

CREATE OR REPLACE FUNCTION imgembed._embed_batch(model text, images bytea[]) RETURNS text[]
LANGUAGE plpython3u STABLE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
return None if images is None else GD["imgembed"].embed_batch(model, images)
$python$;
COMMENT ON FUNCTION imgembed._embed_batch(text, bytea[]) IS 'Vector texts of many images; what embed_batch() returns';

CREATE OR REPLACE FUNCTION imgembed.embed_batch(model text, images bytea[]) RETURNS vector[]
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._embed_batch(model, images);  -- text[] to vector[] by the types' I/O
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
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
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
GD["imgembed"].backfill(tbl, image_column, vector_column, model, batch_size, on_error, switch_model)
$python$;
COMMENT ON PROCEDURE imgembed.backfill(regclass, name, name, text, integer, text, boolean) IS
    'Re-embed a stale column, then embed rows whose vector is NULL, in committed batches; re-run to continue. '
    'Model and on_error default to those of the column''s trigger; another model needs switch_model => true';

-- Text towers: loading one beside a model's image tower, and text queries into the same space.
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- Same shape as embedding.sql and models.sql: thin PL/Python bodies behind PL/pgSQL wrappers that
-- re-raise pg_imgembed's errors clean ("#reraise"), PARALLEL UNSAFE wherever the model table is read.

CREATE OR REPLACE FUNCTION imgembed._load_text_model(name text, onnx bytea, tokenizer bytea, config jsonb, replace boolean)
RETURNS SETOF imgembed.models
LANGUAGE plpython3u VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
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
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
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
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
return GD["imgembed"].text_embedding(model, query)
$python$;
COMMENT ON FUNCTION imgembed._text_embedding(text, text) IS 'Vector text of a text query; what text_embedding() returns';

CREATE OR REPLACE FUNCTION text_embedding(model text, query text) RETURNS vector
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN imgembed._text_embedding(model, query);
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
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
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
END
$$;
COMMENT ON FUNCTION vector_embedding(text, text) IS
    'Embedding of a text with the named model''s text tower (Oracle''s VECTOR_EMBEDDING argument order)';

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
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
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
                    IF detail = '' AND hint = '' THEN
                        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
                    ELSIF detail = '' THEN
                        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
                    ELSIF hint = '' THEN
                        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
                    ELSE
                        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
                    END IF;
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
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
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
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
END
$$;
COMMENT ON FUNCTION imgembed.create_embedding_trigger(regclass, name, name, text, text, text) IS
    'Keep vector_column = embedding of image_column on INSERT and on UPDATE of the image (mode sync), or queue it for pg-imgembed worker (mode async)';

CREATE OR REPLACE FUNCTION imgembed._drop_embedding_trigger(tbl regclass, vector_column name) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, sys
    _pg = ctypes.CDLL(None)
    _parallel = getattr(_pg, "IsInParallelMode", None)
    if _parallel is not None:
        _parallel.restype = ctypes.c_bool
    if _parallel() if _parallel is not None else ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber").value >= 0:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "25000"})(
            "pg_imgembed cannot start inside a parallel query")
    # Defines imgembed.* for real before any is read: values a role may not set are dropped here.
    try:
        plpy.execute("SELECT imgembed.load_settings()")
    except plpy.SPIError as e:
        _e = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})(e.args[0])
        _e.sqlstate, _e.detail, _e.hint = e.sqlstate, e.spidata[1], e.spidata[2]
        raise _e from None
    _get = _pg.GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    # First on sys.path, so the runtime's pinned packages win over the system's dist-packages.
    sys.path.insert(0, "%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or have a superuser set imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.5.0", _root)
GD["imgembed"].drop_embedding_trigger(tbl, vector_column)
$python$;
COMMENT ON FUNCTION imgembed._drop_embedding_trigger(regclass, name) IS 'The body of drop_embedding_trigger()';

CREATE OR REPLACE FUNCTION imgembed.drop_embedding_trigger(tbl regclass, vector_column name) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM imgembed._drop_embedding_trigger(tbl, vector_column);
EXCEPTION WHEN OTHERS THEN
    DECLARE
        message text; detail text; hint text; state text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        IF message NOT LIKE 'pg\_imgembed: %' THEN
            RAISE;  -- not one of pg_imgembed's own: as it was, Python traceback and all
        END IF;
        IF detail = '' AND hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14);
        ELSIF detail = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), HINT = hint;
        ELSIF hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail;
        ELSE
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = substr(message, 14), DETAIL = detail, HINT = hint;
        END IF;
    END;
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

-- Lineage: which model generation made each embedded column's vectors (see imgembed.lineage).
-- Idempotent: run by every install and every update (scripts/build_sql.py).

CREATE OR REPLACE VIEW imgembed.vector_lineage AS
SELECT l.tbl, l.vector_column, l.model, l.sha256 AS produced_by, m.sha256 AS current_sha256,
       l.generation AS produced_by_generation, m.generation AS current_generation,
       m.generation IS DISTINCT FROM l.generation AS stale, l.target_generation IS NOT NULL AS reembedding,
       l.updated_at
  FROM imgembed.lineage l LEFT JOIN imgembed.model_store m ON m.name = l.model;
COMMENT ON VIEW imgembed.vector_lineage IS
    'Per embedded column: the model (sha256, generation) that made its vectors and whether they are stale';
GRANT SELECT ON imgembed.vector_lineage TO PUBLIC;

-- Async embedding: what imgembed.queue holds, per table and vector column. Workers
-- (`pg-imgembed worker`) claim the jobs; the enqueue trigger functions are made per table by
-- imgembed.create_embedding_trigger(..., mode => 'async').
-- Idempotent: run by every install and every update (scripts/build_sql.py).

-- rate_per_s: jobs workers ended (done or failed) per second over the last five minutes of
-- imgembed.queue_throughput; eta: what is queued and in progress at that rate (NULL: no rate yet).
CREATE OR REPLACE VIEW imgembed.queue_status AS
SELECT coalesce(q.tbl, s.tbl) AS tbl, coalesce(q.vector_column, s.vector_column) AS vector_column,
       coalesce(q.queued, 0) AS queued, coalesce(q.in_progress, 0) AS in_progress,
       coalesce(s.failed, 0) AS failed, coalesce(s.done, 0) AS done, q.oldest_pending_age,
       coalesce(r.rate_per_s, 0) AS rate_per_s,
       CASE WHEN coalesce(q.queued, 0) + coalesce(q.in_progress, 0) = 0 THEN interval '0'
            WHEN r.rate_per_s > 0 THEN pg_catalog.make_interval(secs => round((q.queued + q.in_progress) / r.rate_per_s))
       END AS eta
  FROM (SELECT tbl, vector_column,
               count(*) FILTER (WHERE claimed_until IS NULL OR claimed_until < now()) AS queued,
               count(*) FILTER (WHERE claimed_until >= now()) AS in_progress,
               now() - min(enqueued_at) AS oldest_pending_age
          FROM imgembed.queue GROUP BY tbl, vector_column) q
  FULL JOIN imgembed.queue_stats s ON s.tbl = q.tbl AND s.vector_column = q.vector_column
  LEFT JOIN LATERAL (
       SELECT round(sum(t.done + t.failed) / greatest(extract(epoch FROM now() - min(t.minute)), 1), 3) AS rate_per_s
         FROM imgembed.queue_throughput t
        WHERE t.tbl = coalesce(q.tbl, s.tbl) AND t.vector_column = coalesce(q.vector_column, s.vector_column)
          AND t.minute >= now() - interval '5 minutes') r ON true
 -- The view reads the tables as its owner: show each role only the tables it may read (NULL,
 -- so hidden, for a table dropped since).
 WHERE pg_catalog.has_table_privilege(coalesce(q.tbl, s.tbl), 'SELECT');
COMMENT ON VIEW imgembed.queue_status IS
    'Per table and vector column: queued, in progress, failed, done, oldest pending age, jobs ended per second '
    'over the last five minutes, and the ETA of what is left at that rate';
GRANT SELECT ON imgembed.queue_status TO PUBLIC;

-- The last hour of imgembed.queue_throughput (per minute), for graphs: each role sees the tables it
-- may read, as in queue_status.
CREATE OR REPLACE VIEW imgembed.queue_history AS
SELECT tbl, vector_column, minute, done, failed
  FROM imgembed.queue_throughput
 WHERE pg_catalog.has_table_privilege(tbl, 'SELECT');
COMMENT ON VIEW imgembed.queue_history IS 'Jobs workers ended per table, vector column and minute, the last hour';
GRANT SELECT ON imgembed.queue_history TO PUBLIC;

-- Workers renew their heartbeat every 5 s while they claim, between batches: one silent for two
-- minutes (longer than a batch should take) is not alive. Read as the view's owner, so every role
-- sees how many leases each holds without seeing the jobs.
CREATE OR REPLACE VIEW imgembed.worker_status AS
SELECT h.worker, h.role, h.started_at, h.last_seen, h.last_seen > now() - interval '2 minutes' AS alive,
       (SELECT count(*) FROM imgembed.queue q WHERE q.claimed_by = h.worker AND q.claimed_until >= now()) AS leases_held,
       h.done, h.failed
  FROM imgembed.worker_heartbeats h;
COMMENT ON VIEW imgembed.worker_status IS
    'pg-imgembed workers: last heartbeat, alive (one in the last two minutes), leases held, jobs done and failed';
GRANT SELECT ON imgembed.worker_status TO PUBLIC;

-- The enqueue trigger of every async binding (see sql/incremental/004-0.4.0.sql for why it is
-- SECURITY DEFINER). It reads the row through EXECUTE ... USING NEW: field access and output
-- functions only, nothing a table owner defines.
CREATE OR REPLACE FUNCTION imgembed.enqueue_embedding() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b imgembed.bindings;
    keys text;
    has_image boolean;
    has_vector boolean;
    job_key jsonb;
BEGIN
    SELECT * INTO b FROM imgembed.bindings
     WHERE tbl = TG_RELID AND vector_column = TG_ARGV[1] AND mode = 'async' AND TG_NAME = ANY (triggers);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no async embedding trigger for column "%"', TG_RELID::regclass, TG_ARGV[1]
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    DETAIL = format('Trigger %s calls imgembed.enqueue_embedding() but was not made by imgembed.create_embedding_trigger().', TG_NAME),
                    HINT = 'Drop the trigger, and bind the column with imgembed.create_embedding_trigger(..., mode => ''async'').';
    END IF;
    SELECT string_agg(format('%L, pg_catalog.format(''%%s'', ($1).%I)', a.attname, a.attname), ', ' ORDER BY a.attnum)
      INTO keys
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = TG_RELID AND i.indisprimary;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'async embedding of % needs a primary key to find rows again', TG_RELID::regclass
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    EXECUTE format('SELECT ($1).%I IS NOT NULL, ($1).%I IS NOT NULL, pg_catalog.jsonb_build_object(%s)',
                   b.image_column, b.vector_column, keys)
       INTO has_image, has_vector, job_key USING NEW;
    IF has_vector THEN
        -- The old vector belongs to the old image.
        NEW := pg_catalog.jsonb_populate_record(NEW, pg_catalog.jsonb_build_object(b.vector_column, NULL));
    END IF;
    IF has_image THEN
        INSERT INTO imgembed.queue (tbl, image_column, vector_column, model, row_key)
        VALUES (TG_RELID, b.image_column, b.vector_column, b.model, job_key)
        ON CONFLICT (tbl, vector_column, row_key) DO UPDATE
           SET enqueued_at = pg_catalog.clock_timestamp(), attempts = 0, not_before = '-infinity',
               last_error = NULL, model = EXCLUDED.model;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION imgembed.enqueue_embedding() IS
    'Row trigger body of async bindings (create_embedding_trigger(..., mode => ''async'')): queue the row for pg-imgembed worker';

-- Statistics per model, tower and path, cluster-wide in shared memory (src/model_stats.c), and
-- what workers report into them. Idempotent: run by every install and every update.
-- On PostgreSQL 15 and 16 they need shared_preload_libraries = 'pg_imgembed'; without it reading
-- them gives no row and a NOTICE that says so, and embedding works as before.

CREATE OR REPLACE FUNCTION imgembed._model_stats(
    OUT model text, OUT tower text, OUT path text, OUT calls bigint, OUT images bigint, OUT refused bigint,
    OUT refused_sqlstates text[], OUT refused_counts bigint[], OUT batches bigint, OUT batched_images bigint,
    OUT decode_ms double precision, OUT decode_max_ms double precision,
    OUT preprocess_ms double precision, OUT preprocess_max_ms double precision,
    OUT inference_ms double precision, OUT inference_max_ms double precision, OUT stats_reset timestamptz)
RETURNS SETOF record
LANGUAGE c VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'imgembed_model_stats';
COMMENT ON FUNCTION imgembed._model_stats() IS
    'Counters of this database''s models the current role may use (imgembed.model_stats shows them)';

CREATE OR REPLACE VIEW imgembed.model_stats AS
SELECT model, tower, path, calls, images, refused,
       coalesce((SELECT pg_catalog.jsonb_object_agg(c, n) FROM ROWS FROM (pg_catalog.unnest(refused_sqlstates), pg_catalog.unnest(refused_counts)) u(c, n)),
                '{}') AS refused_by_sqlstate,
       batches,
       CASE WHEN batches > 0 THEN round(batched_images::numeric / batches, 2) END AS mean_batch_size,
       round(decode_ms::numeric, 3) AS total_decode_ms, round(decode_max_ms::numeric, 3) AS max_decode_ms,
       round(preprocess_ms::numeric, 3) AS total_preprocess_ms, round(preprocess_max_ms::numeric, 3) AS max_preprocess_ms,
       round(inference_ms::numeric, 3) AS total_inference_ms, round(inference_max_ms::numeric, 3) AS max_inference_ms,
       stats_reset
  FROM imgembed._model_stats();
COMMENT ON VIEW imgembed.model_stats IS
    'Per model, tower (image, text) and path (function, trigger, backfill, worker), since stats_reset: calls, '
    'images embedded (texts for a text tower), images refused by SQLSTATE, onnxruntime batches and their mean size, '
    'total and max ms of decode and preprocessing (per image) and inference (per batch); only models the role may use';
GRANT SELECT ON imgembed.model_stats TO PUBLIC;

CREATE OR REPLACE FUNCTION imgembed.model_stats_reset() RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'imgembed_model_stats_reset';
COMMENT ON FUNCTION imgembed.model_stats_reset() IS 'Zero imgembed.model_stats in every database (superusers; grantable)';
REVOKE ALL ON FUNCTION imgembed.model_stats_reset() FROM PUBLIC;

-- Workers count their batches here: members of imgembed_worker only, for models they may use,
-- under path worker only (src/model_stats.c).
CREATE OR REPLACE FUNCTION imgembed.report_worker_batch(
    model text, images bigint, refused_sqlstates text[], refused_counts bigint[], batches bigint, batched_images bigint,
    decode_ms double precision, decode_max_ms double precision, preprocess_ms double precision,
    preprocess_max_ms double precision, inference_ms double precision, inference_max_ms double precision)
RETURNS boolean
LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'imgembed_report_worker_batch';
COMMENT ON FUNCTION imgembed.report_worker_batch(text, bigint, text[], bigint[], bigint, bigint, double precision,
                                                double precision, double precision, double precision, double precision,
                                                double precision) IS
    'For workers: count one batch in imgembed.model_stats (path worker); false where the statistics are off';
REVOKE ALL ON FUNCTION imgembed.report_worker_batch(text, bigint, text[], bigint[], bigint, bigint, double precision,
                                                   double precision, double precision, double precision,
                                                   double precision, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION imgembed.report_worker_batch(text, bigint, text[], bigint[], bigint, bigint, double precision,
                                                      double precision, double precision, double precision,
                                                      double precision, double precision) TO imgembed_worker;
