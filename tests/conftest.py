"""Fixtures: a real PostgreSQL with plpython3u, pgvector and pg_imgembed installed.

The server is chosen explicitly, never guessed from what happens to answer:
``PG_IMGEMBED_TEST_TARGET`` (or ``--target``) is ``local`` (the default: a throwaway cluster on
this machine, made for the session and removed after it), ``docker`` (testcontainers runs the
image ``PG_IMGEMBED_TEST_IMAGE``, default ``pg_imgembed:test``, which ``make docker-images``
builds from docker/Dockerfile) or ``dsn`` (the server at ``PG_IMGEMBED_TEST_DSN`` or ``--dsn``).
Every test gets its own database, cloned from a template that already has the extension.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.devcluster import LocalCluster, fresh_database

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "imgembed_test_template"


TARGETS = ("local", "docker", "dsn")
PRELOAD = {"shared_preload_libraries": "'pg_imgembed'"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--target", default=os.environ.get("PG_IMGEMBED_TEST_TARGET", "local"), choices=TARGETS,
                     help="server to test against: local (default), docker or dsn")
    parser.addoption("--dsn", default=os.environ.get("PG_IMGEMBED_TEST_DSN"), help="the server of --target dsn")
    parser.addoption("--update-surface", action="store_true",
                     help="rewrite tests/expected/surface.txt from a fresh install (make surface)")


@pytest.fixture(scope="session")
def server_kind(request: pytest.FixtureRequest) -> str:
    """local (a cluster on this machine), docker (testcontainers) or dsn (a server given)."""
    target = request.config.getoption("--target")
    if target == "dsn" and not request.config.getoption("--dsn"):
        raise pytest.UsageError("--target dsn needs PG_IMGEMBED_TEST_DSN or --dsn")
    return target


@pytest.fixture
def local_server(server_kind: str) -> None:
    """For tests that use this machine's files or client binaries against the server."""
    if server_kind != "local":
        pytest.skip("needs a server on this machine (not a given DSN or a container)")


@pytest.fixture(scope="session")
def server_dsn(request: pytest.FixtureRequest, server_kind: str) -> Iterator[str]:
    if server_kind == "dsn":
        yield request.config.getoption("--dsn")
    elif server_kind == "docker":
        from testcontainers.community.postgres import PostgresContainer

        image = os.environ.get("PG_IMGEMBED_TEST_IMAGE", "pg_imgembed:test")
        # trust: the tests log in as roles they create, without passwords, as on the local cluster
        container = PostgresContainer(image, username="postgres", password="postgres", driver=None)
        container.with_kwargs(shm_size="1g")  # as the README runs it: parallel HNSW builds outgrow Docker's 64 MB
        with container.with_env("POSTGRES_HOST_AUTH_METHOD", "trust") as pg:
            yield pg.get_connection_url()
    else:
        # Preloaded, as PostgreSQL 15 and 16 need for imgembed.model_stats (test_model_stats.py runs
        # a cluster without it too). Under /tmp: pytest's own tmp dir is closed to postgres.
        with LocalCluster(settings=PRELOAD) as cluster:
            yield cluster.dsn


@pytest.fixture(scope="session")
def template_dsn(server_dsn: str) -> str:
    dsn = fresh_database(server_dsn, TEMPLATE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_imgembed CASCADE")  # the image puts it in template1
    return dsn


def force_parallel_options(server_version_num: int) -> str:
    """Settings that make the planner use parallel plans wherever a query allows one."""
    force = "debug_parallel_query" if server_version_num >= 160000 else "force_parallel_mode"
    return (f"-c {force}=on -c parallel_setup_cost=0 -c parallel_tuple_cost=0 "
            "-c min_parallel_table_scan_size=0 -c max_parallel_workers_per_gather=2")


@pytest.fixture(params=["serial", "forced_parallel"])
def dsn(request: pytest.FixtureRequest, server_dsn: str, template_dsn: str) -> Iterator[str]:
    """A fresh database with the extension, dropped after the test. Every test runs twice:
    as is, and with parallel query forced (the extension must never do SPI in parallel mode)."""
    name = f"imgembed_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
        version = int(admin.execute("SHOW server_version_num").fetchone()[0])
    extra = {"options": force_parallel_options(version)} if request.param == "forced_parallel" else {}
    yield psycopg.conninfo.make_conninfo(server_dsn, dbname=name, **extra)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn
