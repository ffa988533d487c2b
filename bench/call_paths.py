#!/usr/bin/env python3
"""What a call crosses: the package's files on ``SELECT img_embedding(photo)`` and on a worker
batch, and a worker batch's round trips to the database (prints a report; not a test).

- files: ``sys.setprofile`` inside the backend (a PL/Python function in ``pg_temp`` traces the
  query it runs: PL/Python bodies run in the backend's one interpreter thread), for a backend's
  first call (imports included) and a warm one; the same around a worker batch in this process.
  A file counts when a function (or a module body) in it is called; PL/Python bodies count as one.
- round trips: the statements ``pg_stat_statements`` counted (top level, utility statements
  included) while a warm worker claimed and completed one batch on one connection.

Needs the extension installed (``make install``); runs on a throwaway local cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' model builders
from pg_imgembed.client.worker import Options, Worker
from tests import images
from tests.devcluster import LocalCluster, fresh_database
from tests.helpers import load_tiny

PACKAGE = "/pg_imgembed/"
BATCH = 16

TRACE = """
CREATE FUNCTION pg_temp.trace(query text, image bytea) RETURNS text[] LANGUAGE plpython3u AS $$
import sys
seen = []
def profile(frame, event, arg):
    if event == "call" and frame.f_code.co_filename not in seen:
        seen.append(frame.f_code.co_filename)
plan = plpy.prepare(query, ["bytea"])
sys.setprofile(profile)
try:
    plpy.execute(plan, [image])
finally:
    sys.setprofile(None)
return seen
$$"""


def ours(files: list[str]) -> list[str]:
    """The package's files (relative to it) and the PL/Python body, in the order first crossed."""
    inside = [f.rsplit(PACKAGE, 1)[1] if PACKAGE in f else f for f in files]
    return [f if f != "<string>" else "(PL/Python body)" for f in inside
            if f == "<string>" or (f.endswith(".py") and not f.startswith(("/", "venv/")))]


def traced(call) -> list[str]:
    seen: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename not in seen:
            seen.append(frame.f_code.co_filename)

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return seen


def show(title: str, files: list[str]) -> None:
    print(f"{title}: {len(files)} files")
    for f in files:
        print(f"    {f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="list the files")
    args = parser.parse_args()
    say = show if args.verbose else lambda title, files: print(f"{title}: {len(files)} files")
    photo = images.jpeg(images.photo_like(64, 48))
    with LocalCluster(settings={"shared_preload_libraries": "'pg_imgembed,pg_stat_statements'"}) as cluster:
        dsn = fresh_database(cluster.dsn, "imgembed_paths")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_imgembed CASCADE")
            conn.execute("CREATE EXTENSION pg_stat_statements")
            load_tiny(conn)
        with psycopg.connect(dsn, autocommit=True) as conn:  # a new backend
            conn.execute(TRACE)
            query = "SELECT img_embedding($1)"
            say("img_embedding, a backend's first call", ours(conn.execute("SELECT pg_temp.trace(%s, %s)", (query, photo)).fetchone()[0]))
            other = images.jpeg(images.photo_like(64, 48, seed=1))  # another image: a repeated one is memoized
            say("img_embedding, warm", ours(conn.execute("SELECT pg_temp.trace(%s, %s)", (query, other)).fetchone()[0]))

            conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
            conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'async')")
            conn.execute("INSERT INTO items SELECT g, %s FROM generate_series(1, %s) g", (photo, 2 * BATCH))
            worker = Worker(dsn, Options(batch_size=BATCH))
            with psycopg.connect(dsn, autocommit=True) as work:
                worker.complete(work, worker.claim(work))  # the model's session is cached from here on
                conn.execute("SELECT pg_stat_statements_reset()")
                files = ours(traced(lambda: worker.complete(work, worker.claim(work))))
                (trips,) = conn.execute("SELECT sum(calls)::int FROM pg_stat_statements WHERE dbid = "
                                        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                                        "AND query !~ 'pg_stat_statements'").fetchone()
                statements = conn.execute("SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_statements "
                                          "WHERE query !~ 'pg_stat_statements' ORDER BY calls DESC, query").fetchall()
            say(f"worker batch of {BATCH}, warm (claim + complete)", files)
            print(f"worker batch of {BATCH}, warm: {trips} round trips")
            if args.verbose:
                for calls, text in statements:
                    print(f"    {calls} x {text}")
            assert conn.execute("SELECT count(*) FROM items WHERE embedding IS NULL").fetchone()[0] == 0


if __name__ == "__main__":
    main()
