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
