"""The extension's whole surface, as a fresh install has it, against tests/expected/surface.txt:
every function's signature and attributes, every table, view, column, constraint, index, policy
and member (tests/catalog.py). A change to any of them shows as a diff to review; `make surface`
rewrites the file after one.
"""

import difflib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.catalog import surface
from tests.devcluster import fresh_database

GOLDEN = Path(__file__).resolve().parent / "expected" / "surface.txt"
HEADER = "# pg_imgembed's objects after CREATE EXTENSION on PostgreSQL {}, from tests/catalog.py: `make surface` rewrites this file.\n\n"


@pytest.fixture
def fresh(server_dsn: str) -> Iterator[str]:
    name = f"imgembed_surface_{uuid.uuid4().hex[:8]}"
    dsn = fresh_database(server_dsn, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_imgembed CASCADE")
    yield dsn
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_fresh_install_has_the_recorded_surface(fresh, request):
    with psycopg.connect(fresh) as conn:
        major = conn.info.server_version // 10000
    actual = HEADER.format(major) + surface(fresh)
    if request.config.getoption("--update-surface"):
        GOLDEN.write_text(actual)
        return
    expected = GOLDEN.read_text()
    recorded = int(re.search(r"on PostgreSQL (\d+)", expected).group(1))
    if recorded != major:
        # 17, say, adds MAINTAIN to table ACLs and lists row types among the extension's members
        pytest.skip(f"{GOLDEN.name} was rendered on PostgreSQL {recorded}, where ACLs and members print otherwise than on {major}")
    if actual != expected:
        diff = difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                    "tests/expected/surface.txt", "a fresh install")
        pytest.fail("".join(diff) + "\nIf the change is meant: make surface", pytrace=False)
