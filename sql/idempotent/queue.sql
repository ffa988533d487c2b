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
