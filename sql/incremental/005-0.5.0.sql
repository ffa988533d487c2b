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
