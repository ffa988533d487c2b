"""Progress: the queue's rate and ETA, workers' heartbeats and leases, `pg-imgembed status [--watch]`."""

import signal
import subprocess
import sys
import uuid
from datetime import timedelta

import psycopg
import pytest

from pg_imgembed.client.worker import Options, Worker
from tests import images
from tests.helpers import load_tiny

PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(4)]


@pytest.fixture
def queued(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'async')")
    conn.execute("INSERT INTO items SELECT g, (%s::bytea[])[1 + g %% 4] FROM generate_series(1, 12) g", (PHOTOS,))
    return conn


def progress(conn):
    return conn.execute("SELECT queued, done, rate_per_s, eta FROM imgembed.queue_status").fetchone()


def test_the_queue_has_a_rate_and_an_eta_once_workers_ran(queued, dsn):
    queued_, done, rate, eta = progress(queued)
    assert (queued_, done, rate, eta) == (12, 0, 0, None)  # no rate yet: no ETA
    Worker(dsn, Options(once=True, batch_size=5)).run()
    assert queued.execute("SELECT sum(done), sum(failed) FROM imgembed.queue_throughput").fetchone() == (12, 0)
    queued_, done, rate, eta = progress(queued)
    assert (queued_, done, eta) == (0, 12, timedelta(0)) and rate > 0
    queued.execute("UPDATE items SET photo = %s WHERE id <= 6", (PHOTOS[0] + b"\0",))  # six jobs again
    queued_, done, rate, eta = progress(queued)
    assert queued_ == 6 and abs(eta.total_seconds() - 6 / float(rate)) <= 0.5 and eta.total_seconds() > 0


def test_dropping_a_table_forgets_its_throughput(queued, dsn):
    Worker(dsn, Options(once=True)).run()
    queued.execute("DROP TABLE items")
    assert queued.execute("SELECT count(*) FROM imgembed.queue_throughput").fetchone() == (0,)


def test_workers_show_their_heartbeat_and_leases_to_every_role(queued, dsn):
    worker = Worker(dsn, Options(batch_size=5))
    role = f"viewer_{uuid.uuid4().hex[:8]}"
    queued.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn, \
                psycopg.connect(psycopg.conninfo.make_conninfo(dsn, user=role), autocommit=True) as viewer:
            jobs = worker.claim(conn)
            worker._heartbeat(conn)
            seen = "SELECT worker, role, alive, leases_held, done FROM imgembed.worker_status"
            assert viewer.execute(seen).fetchall() == [(worker.name, "postgres", True, 5, 0)]
            worker.complete(conn, jobs)
            assert viewer.execute(seen).fetchall() == [(worker.name, "postgres", True, 0, 0)]
            worker._sign_off()
            assert viewer.execute(seen).fetchall() == []
    finally:
        queued.execute(f"DROP ROLE {role}")


def status_blocks(dsn, *args, blocks=1):
    """Run `pg-imgembed status` and return its reports (with --watch: stop it after ``blocks``)."""
    proc = subprocess.Popen([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, "status", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    while sum(line.startswith("lineage ") for line in lines) < blocks:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        lines.append(line.rstrip("\n"))
    if "--watch" in args:
        proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    return lines


def test_status_shows_eta_workers_and_models_and_watch_refreshes(queued, dsn):
    Worker(dsn, Options(once=True)).run()
    queued.execute("SELECT img_embedding(%s)", (PHOTOS[1],))
    out = status_blocks(dsn)
    assert out[2].split()[:6] == ["items", "embedding", "0", "0", "0", "12"] and out[2].split()[-1] == "00:00:00"
    models = out.index("models (imgembed.model_stats)")
    assert out[models + 1].split() == ["model", "tower", "path", "calls", "images", "refused", "ms/image", "images/s"]
    rows = {tuple(line.split()[:6]) for line in out[models + 2:models + 4]}
    assert rows == {("tiny", "image", "function", "1", "1", "0"), ("tiny", "image", "worker", "1", "12", "0")}
    watched = status_blocks(dsn, "--watch", "0.2", blocks=2)
    assert watched[0].endswith("every 0.2 s, Ctrl-C to stop")
    second = watched.index("models (imgembed.model_stats)", len(watched) // 2)
    assert [line.split()[-1] for line in watched[second + 2:second + 4]] == ["0.0", "0.0"]  # images/s: none since


def test_watch_needs_a_positive_interval(dsn):
    done = subprocess.run([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, "status", "--watch", "0"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "pg-imgembed: error: --watch takes a number of seconds above 0, not 0\n"
