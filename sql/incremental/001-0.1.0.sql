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
