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

-- Models: the settings module, loading, replacing, dropping, locking, introspection.
-- Idempotent: CREATE OR REPLACE, run by every install and every update (scripts/build_sql.py).
-- PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble that starts the
-- runtime once per session, then each body calls one method of pg_imgembed.server.Server.
-- Everything that reads the model table is PARALLEL UNSAFE: PL/Python's SPI inside a parallel
-- query breaks the backend (the next call crashes the server), so such a query must stay serial.

CREATE OR REPLACE VIEW imgembed.models AS
SELECT name,
       dimensions,
       format('%s %sx%sx%s', input_layout, 3, input_height, input_width) AS input,
       config -> 'preprocess' AS preprocess,
       config -> 'output' AS output,
       bytes,
       sha256,
       loaded_at,
       is_default,
       source_sha256,
       generation,
       'image'::text AS modality,
       NULL::text AS tokenizer_sha256,
       derived_from
  FROM imgembed.model_store
UNION ALL
SELECT name, dimensions, format('text, up to %s tokens', max_length), config -> 'tokenizer', config -> 'output',
       bytes, sha256, loaded_at, false, NULL, generation, 'text', tokenizer_sha256, NULL
  FROM imgembed.text_model_store;
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

-- The advisory lock of a model: writers take it shared (lock_model), a replacement exclusive.
-- Row locks alone would let a stream of writers starve a replacement (a FOR SHARE lock needs no
-- queue once the previous writer has committed); advisory locks queue, so new writers wait behind
-- a waiting replacement.
CREATE OR REPLACE FUNCTION imgembed.model_lock_key(model text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.hashtextextended('pg_imgembed.model:' || model, 0) $$;
COMMENT ON FUNCTION imgembed.model_lock_key(text) IS 'The advisory lock key of a model (lock_model, replacements)';

-- Writers of embedded columns hold the model's row FOR SHARE until they commit (see
-- imgembed.lineage). SECURITY DEFINER because FOR SHARE needs UPDATE on the table; it returns the
-- generation of the newest committed version of the row, NULL if the model is gone.
CREATE OR REPLACE FUNCTION imgembed.lock_model(model text) RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    locked bigint;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(imgembed.model_lock_key(model));
    SELECT m.generation INTO locked FROM imgembed.model_store m WHERE m.name = model FOR SHARE;
    RETURN locked;
END
$$;
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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
REVOKE ALL ON FUNCTION imgembed.load_model(text, bytea, jsonb, boolean, boolean) FROM PUBLIC;  -- model administrators only: grant EXECUTE to them

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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
REVOKE ALL ON FUNCTION imgembed.set_default_model(text) FROM PUBLIC;  -- model administrators only: grant EXECUTE to them

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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
REVOKE ALL ON FUNCTION imgembed.drop_model(text) FROM PUBLIC;  -- model administrators only: grant EXECUTE to them

CREATE OR REPLACE FUNCTION imgembed.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '0.3.0'::text $$;
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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
    PERFORM imgembed.check_model_grant(model, grantee);
    INSERT INTO imgembed.model_usage (model, grantee)
    VALUES (model, CASE WHEN upper(grantee) = 'PUBLIC' THEN 'PUBLIC' ELSE grantee END)
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
    PERFORM imgembed.check_model_grant(model, grantee);
    DELETE FROM imgembed.model_usage u
     WHERE u.model = revoke_model_usage.model
       AND u.grantee = CASE WHEN upper(revoke_model_usage.grantee) = 'PUBLIC' THEN 'PUBLIC' ELSE revoke_model_usage.grantee END;
END
$$;
COMMENT ON FUNCTION imgembed.revoke_model_usage(text, text) IS 'Take back what grant_model_usage() gave';
REVOKE ALL ON FUNCTION imgembed.revoke_model_usage(text, text) FROM PUBLIC;  -- model administrators only: grant EXECUTE to them

CREATE OR REPLACE FUNCTION imgembed.check_model_grant(model text, grantee text) RETURNS void
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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
    image bytea;
    vector text;
BEGIN
    EXECUTE format('SELECT ($1).%I', TG_ARGV[0]) INTO image USING NEW;
    IF image IS NOT NULL THEN
        BEGIN
            vector := imgembed._embed_for_writing(image, TG_ARGV[2]);
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
                IF TG_ARGV[3] = 'null' AND state IN ('22P03', '54000') THEN
                    PERFORM imgembed.record_error(TG_RELID, row_key, TG_ARGV[2], state, substr(message, 14));
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
    RETURN jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[1], vector));
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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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
    GD["imgembed"] = server.start(plpy, "0.3.0", _root)
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

-- Runs as the caller: imgembed.errors' policy lets only writers of a table record its errors.
-- The table is stored by its schema-qualified name, which the policy resolves whatever the
-- caller's search_path.
CREATE OR REPLACE FUNCTION imgembed.record_error(tbl regclass, row_key jsonb, model text, sqlstate text,
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

-- What the backend and the workers both need to know about embedded tables, in one place.
CREATE OR REPLACE FUNCTION imgembed.embedding_triggers()
RETURNS TABLE (tbl regclass, trigger_name name, image_column name, vector_column name, model text,
               on_error text, mode text)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- tgargs holds the trigger's arguments, each ending in NUL (escape-encoded to split, decoded back
    -- to UTF-8); 0.1.0 made the async functions in imgembed.
    SELECT t.tgrelid::regclass, t.tgname, arg.image_column::name, arg.vector_column::name, arg.model, arg.on_error,
           CASE WHEN t.tgfoid = 'imgembed.embedding_trigger()'::regprocedure THEN 'sync' ELSE 'async' END
      FROM pg_trigger t
      JOIN pg_proc p ON p.oid = t.tgfoid
     CROSS JOIN LATERAL string_to_array(encode(t.tgargs, 'escape'), '\000') a
     CROSS JOIN LATERAL (SELECT convert_from(decode(a[1], 'escape'), 'UTF8'), convert_from(decode(a[2], 'escape'), 'UTF8'),
                                convert_from(decode(a[3], 'escape'), 'UTF8'), convert_from(decode(a[4], 'escape'), 'UTF8')
                        ) arg(image_column, vector_column, model, on_error)
     WHERE t.tgfoid = 'imgembed.embedding_trigger()'::regprocedure
        OR p.proname LIKE 'imgembed\_enqueue\_%'
        OR (p.pronamespace = 'imgembed'::regnamespace AND p.proname LIKE 'enqueue\_%')
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

CREATE OR REPLACE VIEW imgembed.queue_status AS
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
