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
