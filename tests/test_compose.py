"""docker/compose.yaml: a database container and a worker container embed across containers.

Runs with the Docker target (make test-docker), which builds the images it uses.
"""

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest

from tests import images
from tests.devcluster import free_port
from tests.helpers import embed, load_tiny, vector

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(6)]


class Compose:
    """A running project of docker/compose.yaml: its database's DSN, and docker-compose for it."""

    def __init__(self, command: list[str], env: dict[str, str], dsn: str) -> None:
        self.command, self.env, self.dsn = command, env, dsn

    def __call__(self, *args: str) -> None:
        subprocess.run([*self.command, *args], env=self.env, check=True, capture_output=True, timeout=300)


@pytest.fixture
def compose(server_kind):
    if server_kind != "docker":
        pytest.skip("needs the Docker target (make test-docker)")
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("needs docker-compose (docker/engine.sh installs it)")
    port = free_port()
    command = [compose, "-p", f"imgembed{uuid.uuid4().hex[:8]}", "-f", str(ROOT / "docker" / "compose.yaml")]
    env = {**os.environ, "POSTGRES_PASSWORD": "secret", "PG_IMGEMBED_PORT": str(port),
           "PG_IMGEMBED_IMAGE": os.environ.get("PG_IMGEMBED_TEST_IMAGE", "pg_imgembed:test")}
    project = Compose(command, env, f"host=127.0.0.1 port={port} user=postgres password=secret dbname=postgres")
    project("up", "-d")
    try:
        yield project
    finally:
        project("--profile", "serve", "down", "-v")


def queued_and_embedded(conn: psycopg.Connection) -> dict[int, np.ndarray]:
    """PHOTOS inserted into items under an async trigger; their vectors once the worker container wrote them."""
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'async')")
    conn.execute("INSERT INTO items SELECT g, (%s::bytea[])[g] FROM generate_series(1, 6) g", (PHOTOS,))
    deadline = time.monotonic() + 120
    while conn.execute("SELECT count(embedding) FROM items").fetchone()[0] < len(PHOTOS):
        assert time.monotonic() < deadline, "the worker container embedded nothing in 2 minutes"
        time.sleep(0.5)
    return {row_id: vector(text) for row_id, text in conn.execute("SELECT id, embedding::text FROM items")}


def test_a_worker_in_another_container_embeds_what_the_database_queues(compose):
    with psycopg.connect(compose.dsn, autocommit=True) as conn:
        load_tiny(conn)
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        for row_id, got in queued_and_embedded(conn).items():
            np.testing.assert_array_equal(got, embed(conn, PHOTOS[row_id - 1]))
        assert conn.execute("SELECT queued, done FROM imgembed.queue_status").fetchone() == (0, len(PHOTOS))


def test_the_serve_service_runs_the_models_of_every_backend_and_worker(compose):
    """The README's Docker deployment with pg-imgembed serve: the serve profile's container runs
    Triton (the image's Python 3.13 and numpy 2), the database's backends and the worker send it
    their images, and the vectors are the in-process ones, bit for bit."""
    with psycopg.connect(compose.dsn, autocommit=True) as conn:
        load_tiny(conn)
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        local = [embed(conn, photo) for photo in PHOTOS]
        compose("--profile", "serve", "up", "-d", "serve")
        conn.execute("ALTER SYSTEM SET imgembed.inference_server = 'http://serve:8000'")
        conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 180
        while True:  # until serve has loaded the model (it reads the table every 2 s)
            with psycopg.connect(compose.dsn, autocommit=True) as fresh:
                try:
                    served = [embed(fresh, photo) for photo in PHOTOS]
                    assert fresh.execute("SELECT imgembed.runtime()->'sessions_run_on'").fetchone()[0] == ["http://serve:8000"]
                    break
                except (psycopg.errors.ConnectionFailure, psycopg.errors.ObjectNotInPrerequisiteState):
                    assert time.monotonic() < deadline, "serve did not run the model within 3 minutes"
                    time.sleep(2)
        for got, want in zip(served, local):
            np.testing.assert_array_equal(got, want)
        # the worker container goes through serve too: the async path
        compose.env["PG_IMGEMBED_INFERENCE_SERVER"] = "http://serve:8000"
        compose("up", "-d", "worker")
        for row_id, got in queued_and_embedded(conn).items():
            np.testing.assert_array_equal(got, local[row_id - 1])
