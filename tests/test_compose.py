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


@pytest.fixture
def compose_dsn(server_kind):
    if server_kind != "docker":
        pytest.skip("needs the Docker target (make test-docker)")
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("needs docker-compose (docker/engine.sh installs it)")
    port = free_port()
    command = [compose, "-p", f"imgembed{uuid.uuid4().hex[:8]}", "-f", str(ROOT / "docker" / "compose.yaml")]
    env = {**os.environ, "POSTGRES_PASSWORD": "secret", "PG_IMGEMBED_PORT": str(port),
           "PG_IMGEMBED_IMAGE": os.environ.get("PG_IMGEMBED_TEST_IMAGE", "pg_imgembed:test")}
    subprocess.run([*command, "up", "-d"], env=env, check=True, capture_output=True, timeout=300)
    try:
        yield f"host=127.0.0.1 port={port} user=postgres password=secret dbname=postgres"
    finally:
        subprocess.run([*command, "down", "-v"], env=env, check=True, capture_output=True, timeout=300)


def test_a_worker_in_another_container_embeds_what_the_database_queues(compose_dsn):
    with psycopg.connect(compose_dsn, autocommit=True) as conn:
        load_tiny(conn)
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'async')")
        conn.execute("INSERT INTO items SELECT g, (%s::bytea[])[g] FROM generate_series(1, 6) g", (PHOTOS,))
        deadline = time.monotonic() + 120
        while conn.execute("SELECT count(embedding) FROM items").fetchone()[0] < len(PHOTOS):
            assert time.monotonic() < deadline, "the worker container embedded nothing in 2 minutes"
            time.sleep(0.5)
        for row_id, text in conn.execute("SELECT id, embedding::text FROM items"):
            np.testing.assert_array_equal(vector(text), embed(conn, PHOTOS[row_id - 1]))
        assert conn.execute("SELECT queued, done FROM imgembed.queue_status").fetchone() == (0, len(PHOTOS))
