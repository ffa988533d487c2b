\echo Use "CREATE EXTENSION pg_imgembed CASCADE" to load this file. \quit
-- Tables and views. Objects the user calls unqualified (img_embedding, vector_embedding) live in
-- the extension's schema (public by default); everything else lives in schema imgembed.

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
SELECT pg_catalog.pg_extension_config_dump('imgembed.errors', '');
SELECT pg_catalog.pg_extension_config_dump('imgembed.errors_id_seq', '');

-- imgembed.templates and imgembed.catalog, generated from pg_imgembed/templates.py and catalog.py:
CREATE VIEW imgembed.templates AS SELECT * FROM (VALUES
  ('vit', 'Hugging Face ViTImageProcessor: warp to 224x224 (bilinear), scale to [0, 1], mean/std 0.5; token outputs use the CLS token', '{"preprocess": {"resize": {"height": 224, "width": 224}, "resample": "bilinear", "rescale": 0.00392156862745098, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "output": {"pooling": "cls"}}'::jsonb),
  ('convnext', 'Hugging Face ConvNextImageProcessor at 224 with crop_pct 0.875: shortest side to int(224 / 0.875) = 256 (bicubic), center crop 224, ImageNet mean/std', '{"preprocess": {"resize": {"shortest_edge": 256}, "resample": "bicubic", "center_crop": {"height": 224, "width": 224}, "rescale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}'::jsonb),
  ('clip', 'Hugging Face CLIPImageProcessor: shortest side to 224 (bicubic), center crop 224, CLIP mean/std', '{"preprocess": {"resize": {"shortest_edge": 224}, "resample": "bicubic", "center_crop": {"height": 224, "width": 224}, "rescale": 0.00392156862745098, "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}'::jsonb),
  ('torchvision-resnet', 'torchvision ImageNet weights (ResNet and most classifiers): shortest side to 256 (bilinear), center crop 224 with torchvision''s rounding, ImageNet mean/std', '{"preprocess": {"resize": {"shortest_edge": 256}, "resample": "bilinear", "center_crop": {"height": 224, "width": 224}, "crop_rounding": "round", "rescale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}'::jsonb),
  ('keras-caffe', 'Keras preprocess_input for ResNet50/VGG16 (''caffe'' mode): load_img warp to 224x224 (nearest), RGB to BGR, subtract the ImageNet channel means, no scaling, NHWC', '{"preprocess": {"resize": {"height": 224, "width": 224}, "resample": "nearest", "rescale": null, "mean": [123.68, 116.779, 103.939], "std": [1.0, 1.0, 1.0], "channel_order": "BGR", "layout": "NHWC"}}'::jsonb),
  ('dinov2', 'DINOv2 (Hugging Face BitImageProcessor as configured for facebook/dinov2-*): shortest side to 256 (bicubic), center crop 224, ImageNet mean/std; token outputs use the CLS token', '{"preprocess": {"resize": {"shortest_edge": 256}, "resample": "bicubic", "center_crop": {"height": 224, "width": 224}, "rescale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, "output": {"pooling": "cls"}}'::jsonb)
) t(name, description, config);
COMMENT ON VIEW imgembed.templates IS 'Preprocessing templates: load_model(..., config => ''{"template": "clip"}'')';
GRANT SELECT ON imgembed.templates TO PUBLIC;
CREATE VIEW imgembed.catalog AS SELECT * FROM (VALUES
  ('Qdrant/resnet50-onnx', 'convnext', 2048, 'apache-2.0', 'model.onnx', NULL, 'fastembed; ResNet-50 pooled features'),
  ('Qdrant/clip-ViT-B-32-vision', 'clip', 512, 'mit', 'model.onnx', NULL, 'fastembed; CLIP ViT-B/32 image tower, projected embeddings'),
  ('Qdrant/Unicom-ViT-B-16', 'clip', 768, 'apache-2.0', 'model.onnx', NULL, 'fastembed'),
  ('Qdrant/Unicom-ViT-B-32', 'clip', 512, 'apache-2.0', 'model.onnx', NULL, 'fastembed'),
  ('google/vit-base-patch16-224', 'vit', 768, 'apache-2.0', NULL, 'last_hidden_state', 'export with optimum-cli export onnx --model google/vit-base-patch16-224 DIR'),
  ('facebook/convnext-tiny-224', 'convnext', 768, 'apache-2.0', NULL, 'pooler_output', 'export with optimum-cli export onnx --model facebook/convnext-tiny-224 DIR'),
  ('openai/clip-vit-base-patch32', 'clip', 512, 'mit', NULL, 'image_embeds', 'vision tower only: export CLIPVisionModelWithProjection to ONNX'),
  ('facebook/dinov2-small', 'dinov2', 384, 'apache-2.0', NULL, 'last_hidden_state', 'export with optimum-cli export onnx --model facebook/dinov2-small DIR')
) c(model_id, template, dimensions, license, onnx_file, output, notes);
COMMENT ON VIEW imgembed.catalog IS 'Known models: pg-imgembed models load NAME --catalog MODEL_ID';
GRANT SELECT ON imgembed.catalog TO PUBLIC;


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

CREATE VIEW imgembed.vector_lineage AS
SELECT l.tbl, l.vector_column, l.model, l.sha256 AS produced_by, m.sha256 AS current_sha256,
       m.sha256 IS DISTINCT FROM l.sha256 AS stale, l.target_sha256 IS NOT NULL AS reembedding, l.updated_at
  FROM imgembed.lineage l LEFT JOIN imgembed.model_store m ON m.name = l.model;
COMMENT ON VIEW imgembed.vector_lineage IS 'Per embedded column: the model that made its vectors and whether they are stale';
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

-- Functions. PL/Python bodies are thin: "#bootstrap" is replaced at build time by the preamble
-- that puts the runtime on sys.path once per session (scripts/build_sql.py), then each body calls
-- one function of the pg_imgembed package.
--
-- Everything that reads the model table is PARALLEL UNSAFE: PL/Python's SPI inside a parallel
-- query breaks the backend (the next call crashes the server), so such a query must stay serial.

CREATE FUNCTION img_embedding(image bytea) RETURNS vector
LANGUAGE plpython3u STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
return GD["imgembed"].img_embedding(image, None)
$python$;
COMMENT ON FUNCTION img_embedding(bytea) IS
    'Embedding of an image (JPEG, PNG, WebP, GIF, BMP, TIFF bytes) with the default model';

CREATE FUNCTION img_embedding(image bytea, model text) RETURNS vector
LANGUAGE plpython3u STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
return GD["imgembed"].img_embedding(image, model)
$python$;
COMMENT ON FUNCTION img_embedding(bytea, text) IS 'Embedding of an image with the named model';

CREATE FUNCTION vector_embedding(model text, image bytea) RETURNS vector
LANGUAGE plpython3u STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
return GD["imgembed"].img_embedding(image, model)
$python$;
COMMENT ON FUNCTION vector_embedding(text, bytea) IS
    'Embedding of an image with the named model (argument order of Oracle''s VECTOR_EMBEDDING)';

CREATE FUNCTION imgembed.load_model(name text, onnx bytea, config jsonb DEFAULT NULL,
                                    replace boolean DEFAULT false)
RETURNS SETOF imgembed.models
LANGUAGE plpython3u VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
return GD["imgembed"].load_model(name, onnx, config, replace)
$python$;
COMMENT ON FUNCTION imgembed.load_model(text, bytea, jsonb, boolean) IS
    'Validate an ONNX image model (load it, embed a probe image) and store it with its preprocessing config';

CREATE FUNCTION imgembed.set_default_model(name text) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
GD["imgembed"].set_default_model(name)
$python$;
COMMENT ON FUNCTION imgembed.set_default_model(text) IS 'Make a loaded model the one img_embedding(image) uses';

CREATE FUNCTION imgembed.drop_model(name text) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
GD["imgembed"].drop_model(name)
$python$;
COMMENT ON FUNCTION imgembed.drop_model(text) IS 'Remove a model; refused while an embedding trigger uses it';

CREATE FUNCTION imgembed.embedding_trigger() RETURNS trigger
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
return GD["imgembed"].on_row(TD)
$python$;
COMMENT ON FUNCTION imgembed.embedding_trigger() IS
    'Row trigger body installed by imgembed.create_embedding_trigger(); arguments: image column, vector column, model, on_error';

CREATE FUNCTION imgembed.create_embedding_trigger(tbl regclass, image_column name, vector_column name,
                                                  model text DEFAULT NULL, on_error text DEFAULT 'error',
                                                  mode text DEFAULT 'sync')
RETURNS void
LANGUAGE plpython3u VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
GD["imgembed"].create_embedding_trigger(tbl, image_column, vector_column, model, on_error, mode)
$python$;
COMMENT ON FUNCTION imgembed.create_embedding_trigger(regclass, name, name, text, text, text) IS
    'Keep vector_column = embedding of image_column on INSERT and on UPDATE of the image (mode sync), or queue it for pg-imgembed worker (mode async)';

CREATE FUNCTION imgembed.drop_embedding_trigger(tbl regclass, vector_column name) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
GD["imgembed"].drop_embedding_trigger(tbl, vector_column)
$python$;
COMMENT ON FUNCTION imgembed.drop_embedding_trigger(regclass, name) IS
    'Remove the triggers create_embedding_trigger() made for vector_column';

-- Triggers run as the writing user, who need not be able to read imgembed.errors.
CREATE FUNCTION imgembed.record_error(table_name text, row_key jsonb, model text, sqlstate text,
                                      message text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO imgembed.errors (table_name, row_key, model, sqlstate, message)
    VALUES (table_name, row_key, model, sqlstate, message)
$$;
COMMENT ON FUNCTION imgembed.record_error(text, jsonb, text, text, text) IS
    'Append to imgembed.errors (used by embedding triggers with on_error => ''null'')';

CREATE FUNCTION imgembed.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '0.1.0'::text $$;
COMMENT ON FUNCTION imgembed.version() IS 'Version of the installed SQL';

CREATE FUNCTION imgembed.runtime() RETURNS jsonb
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
return GD["imgembed"].runtime()
$python$;
COMMENT ON FUNCTION imgembed.runtime() IS
    'Where the Python runtime lives and the versions of the packages it uses, with the settings in effect';

-- Administration is for the database owner; grant EXECUTE (and write access on
-- imgembed.model_store) to roles that should manage models.
REVOKE ALL ON FUNCTION imgembed.load_model(text, bytea, jsonb, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION imgembed.set_default_model(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION imgembed.drop_model(text) FROM PUBLIC;

CREATE FUNCTION imgembed.embed_batch(model text, images bytea[]) RETURNS vector[]
LANGUAGE plpython3u STABLE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
return None if images is None else GD["imgembed"].embed_batch(model, images)
$python$;
COMMENT ON FUNCTION imgembed.embed_batch(text, bytea[]) IS
    'Embeddings of many images with one model session (NULL model: the default); NULL elements give NULL';

-- A procedure that commits cannot carry SET search_path: every name inside is schema-qualified.
CREATE PROCEDURE imgembed.backfill(tbl regclass, image_column name, vector_column name,
                                   model text DEFAULT NULL, batch_size integer DEFAULT 32,
                                   on_error text DEFAULT 'error')
LANGUAGE plpython3u
AS $python$
if "imgembed" not in GD:
    import ctypes, site, sys
    _get = ctypes.CDLL(None).GetConfigOption
    _get.restype, _get.argtypes = ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool)
    _root = (_get(b"imgembed.runtime_dir", True, False) or b"@RUNTIME_DIR@").decode()
    site.addsitedir("%s/venv/lib/python%d.%d/site-packages" % ((_root,) + sys.version_info[:2]))
    try:
        from pg_imgembed import server
    except ImportError as e:
        raise type("pg_imgembed", (plpy.Error,), {"__module__": "builtins", "sqlstate": "58P01",
                   "hint": "Run make install, or SET imgembed.runtime_dir to where it installed the runtime."})(
                   "cannot import the Python runtime from %s: %s" % (_root, e))
    GD["imgembed"] = server.start(plpy, "0.1.0", _root)
GD["imgembed"].backfill(tbl, image_column, vector_column, model, batch_size, on_error)
$python$;
COMMENT ON PROCEDURE imgembed.backfill(regclass, name, name, text, integer, text) IS
    'Embed rows whose vector is NULL in committed batches (FOR UPDATE SKIP LOCKED); re-run to continue';
