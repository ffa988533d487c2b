"""The async triggers' queue, as ``pg-imgembed worker`` works it (psycopg ``conn``, autocommit):
claim, read the rows, write the vectors back, settle the jobs, heartbeats.

Rows are read and vectors written only through ``imgembed.worker_read``/``worker_write``, which
act as the table's owner (see client/worker.py). Each function is one statement: workers on other
hosts pay a round trip for each.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..model_stats import Meter

# The jobs, each with the session's values of the settings named (the same for all: asked here,
# not in a statement of their own).
CLAIM = """
WITH c AS (SELECT id, claimed_until IS NOT NULL AS expired FROM imgembed.queue
            WHERE not_before <= now() AND (claimed_until IS NULL OR claimed_until < now())
            ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED),
     s AS (SELECT jsonb_object_agg(g, current_setting(g, true)) AS settings FROM unnest(%(settings)s::text[]) g)
UPDATE imgembed.queue q
   SET claimed_by = %(me)s, claimed_until = now() + make_interval(secs => %(lease)s), attempts = q.attempts + 1
  FROM c, s WHERE q.id = c.id
RETURNING q.id, q.tbl::oid AS relid, q.tbl::text AS tbl, q.image_column, q.vector_column, q.model,
          q.row_key, q.enqueued_at, q.attempts, c.expired, extract(epoch FROM now() - q.enqueued_at)::float8, s.settings"""

# The job's totals (imgembed.queue_status: totals, rate and ETA), from the ids it ended.
_COUNTED = """
total AS (
    INSERT INTO imgembed.queue_stats (tbl, vector_column, done, failed) SELECT %(tbl)s, %(col)s, done, failed FROM counts
    ON CONFLICT (tbl, vector_column) DO UPDATE SET done = imgembed.queue_stats.done + EXCLUDED.done,
                                                   failed = imgembed.queue_stats.failed + EXCLUDED.failed),
recent AS (
    INSERT INTO imgembed.queue_throughput (tbl, vector_column, minute, done, failed)
    SELECT %(tbl)s, %(col)s, date_trunc('minute', now()), done, failed FROM counts
    ON CONFLICT (tbl, vector_column, minute) DO UPDATE SET done = imgembed.queue_throughput.done + EXCLUDED.done,
                                                           failed = imgembed.queue_throughput.failed + EXCLUDED.failed),
pruned AS (
    DELETE FROM imgembed.queue_throughput
     WHERE tbl = %(tbl)s AND vector_column = %(col)s AND minute < now() - interval '1 hour')"""

# A batch's end in one statement: jobs that ended are dropped, except those re-queued meanwhile
# (their image changed again, so they stay for the newer image); the others go back to the
# queue without spending an attempt; the totals and the model's stats (path worker) are counted.
SETTLE = """
WITH ended AS (
    DELETE FROM imgembed.queue q USING unnest(%(ending)s::bigint[], %(ending_at)s::timestamptz[]) AS f(id, at)
     WHERE q.id = f.id AND q.enqueued_at = f.at RETURNING q.id),
released AS (
    UPDATE imgembed.queue SET claimed_by = NULL, claimed_until = NULL, attempts = greatest(attempts - 1, 0)
     WHERE id = ANY(%(claimed)s::bigint[]) AND id NOT IN (SELECT id FROM ended)),
counts AS (
    SELECT count(*) FILTER (WHERE id = ANY(%(written)s::bigint[])) AS done,
           count(*) FILTER (WHERE id = ANY(%(failed)s::bigint[])) AS failed FROM ended),""" + _COUNTED + """
SELECT ARRAY(SELECT id FROM ended),
       imgembed.report_worker_batch(%(model)s, %(images)s, %(codes)s::text[], %(refused)s::bigint[], %(batches)s,
                                    %(batched)s, %(t0)s, %(t1)s, %(t2)s, %(t3)s, %(t4)s, %(t5)s)"""

COUNT = "WITH counts AS (SELECT %(done)s::bigint AS done, %(failed)s::bigint AS failed)," + _COUNTED + "\nSELECT 1"

HEARTBEAT = """
INSERT INTO imgembed.worker_heartbeats (worker, done, failed) VALUES (%(me)s, %(done)s, %(failed)s)
ON CONFLICT (worker) DO UPDATE SET last_seen = now(), done = EXCLUDED.done, failed = EXCLUDED.failed"""


def claim(conn: Any, batch: int, me: str, lease_s: float, settings: Iterable[str]) -> list[tuple]:
    return conn.execute(CLAIM, {"batch": batch, "me": me, "lease": lease_s, "settings": list(settings)}).fetchall()


def current_user(conn: Any) -> str:
    return conn.execute("SELECT current_user").fetchone()[0]


def read_rows(conn: Any, relid: int, vector_column: str, keys: Sequence[dict[str, Any]]) -> list[tuple]:
    """(n, image, row_version, row_key) of the rows with these keys (n: 1-based position in keys)."""
    return conn.execute(
        "SELECT (r).n, (r).image, (r).row_version::text, (r).row_key::text FROM pg_catalog.unnest("
        "imgembed.worker_read(%s::oid::regclass, %s, %s::jsonb)) r",
        (relid, vector_column, json.dumps(list(keys))), binary=True).fetchall()


def write_vectors(conn: Any, relid: int, vector_column: str, embedded: list[dict[str, Any]]) -> set[int]:
    """The ``n`` of each vector written (its row still at the version read)."""
    (written,) = conn.execute("SELECT imgembed.worker_write(%s::oid::regclass, %s, %s::jsonb)",
                              (relid, vector_column, json.dumps(embedded))).fetchone()
    return set(written)


def settle(conn: Any, relid: int, vector_column: str, claimed: Sequence[Any], ending: Sequence[Any],
           written: Sequence[int], failed: Sequence[int], model: str, meter: Meter) -> set[int]:
    """End a batch (SETTLE); ``claimed`` and ``ending`` are jobs (``id``, ``enqueued_at``), written
    and failed job ids. Returns the ids of the jobs dropped."""
    codes = sorted(meter.refused)
    t = meter.times()
    (ended, _) = conn.execute(SETTLE, {
        "ending": [j.id for j in ending], "ending_at": [j.enqueued_at for j in ending], "claimed": [j.id for j in claimed],
        "written": list(written), "failed": list(failed), "tbl": relid, "col": vector_column,
        "model": model, "images": meter.images, "codes": codes, "refused": [meter.refused[c] for c in codes],
        "batches": meter.batches, "batched": meter.batched_images,
        "t0": t[0], "t1": t[1], "t2": t[2], "t3": t[3], "t4": t[4], "t5": t[5]}).fetchone()
    return set(ended)


def drop(conn: Any, jobs: Sequence[Any]) -> set[int]:
    """Drop the jobs, except those re-queued meanwhile; returns the ids dropped."""
    if not jobs:
        return set()
    return {job_id for (job_id,) in conn.execute(
        "DELETE FROM imgembed.queue q USING unnest(%s::bigint[], %s::timestamptz[]) AS f(id, at) "
        "WHERE q.id = f.id AND q.enqueued_at = f.at RETURNING q.id",
        ([j.id for j in jobs], [j.enqueued_at for j in jobs])).fetchall()}


def release(conn: Any, ids: Sequence[int]) -> None:
    """Back to the queue for another try, without counting this one as an attempt."""
    if ids:
        conn.execute("UPDATE imgembed.queue SET claimed_by = NULL, claimed_until = NULL, "
                     "attempts = greatest(attempts - 1, 0) WHERE id = ANY(%s::bigint[])", (list(ids),))


def retry_later(conn: Any, job_id: int, message: str, delay_s: float) -> None:
    conn.execute("UPDATE imgembed.queue SET claimed_by = NULL, claimed_until = NULL, last_error = %s, "
                 "not_before = now() + make_interval(secs => %s) WHERE id = %s", (message, delay_s, job_id))


def give_up(conn: Any, job: Any) -> None:
    """Drop a job that failed for good and count it failed."""
    conn.execute("DELETE FROM imgembed.queue WHERE id = %s", (job.id,))
    count(conn, job.relid, job.vector_column, done=0, failed=1)


def count(conn: Any, relid: int, vector_column: str, done: int, failed: int) -> None:
    conn.execute(COUNT, {"tbl": relid, "col": vector_column, "done": done, "failed": failed})


def heartbeat(conn: Any, me: str, done: int, failed: int) -> None:
    conn.execute(HEARTBEAT, {"me": me, "done": done, "failed": failed})


def sign_off(conn: Any, me: str) -> None:
    conn.execute("DELETE FROM imgembed.worker_heartbeats WHERE worker = %s", (me,))

