"""test/sql/*.sql through PostgreSQL's own pg_regress, against the suite's server, compared with
test/expected/*.out: what needs no model (who may set which setting, who may call which function,
argument checks, NULL handling), as psql shows it, errors and hints verbatim.

The outputs are the same on PostgreSQL 15 (the host's) and 17 (the Docker image's, driven by the
host's pg_regress and psql); should another version word something otherwise, pg_regress takes an
alternative expected file (test/expected/NAME_1.out). A failure shows pg_regress's diff.
"""

import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.devcluster import pg_bindir

TEST = Path(__file__).resolve().parent.parent / "test"
DATABASE = "imgembed_regress"
ROLES = ("regress_imgembed_user", "regress_imgembed_admin")  # what test/sql/*.sql create


def pg_regress() -> Path:
    """The pg_regress of the newest installed PostgreSQL (postgresql-server-dev-NN ships it)."""
    pgxs = subprocess.run([pg_bindir() / "pg_config", "--pgxs"], capture_output=True, text=True, check=True).stdout
    return Path(pgxs.strip()).parent.parent / "test" / "regress" / "pg_regress"


def test_regression_outputs_match_test_expected(server_dsn, tmp_path):
    regress = pg_regress()
    if not regress.exists():
        pytest.skip(f"needs pg_regress ({regress}): apt-get install postgresql-server-dev-{pg_bindir().parent.name}")
    server = psycopg.conninfo.conninfo_to_dict(server_dsn)
    tests = sorted(f.stem for f in (TEST / "sql").glob("*.sql"))
    try:
        # Without --use-existing: pg_regress drops and makes its database, then loads the extensions.
        result = subprocess.run(
            [regress, f"--bindir={pg_bindir()}", f"--inputdir={TEST}", f"--outputdir={tmp_path}",
             f"--host={server.get('host', 'localhost')}", f"--port={server.get('port', 5432)}", f"--user={server['user']}",
             f"--dbname={DATABASE}", "--load-extension=plpython3u", "--load-extension=vector",
             "--load-extension=pg_imgembed", *tests],
            capture_output=True, text=True, env={**os.environ, "PGPASSWORD": str(server.get("password", ""))})
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {', '.join(ROLES)}")  # where a file failed before dropping them
    if result.returncode != 0:
        diffs = tmp_path / "regression.diffs"
        pytest.fail(result.stdout + result.stderr + (diffs.read_text() if diffs.exists() else ""), pytrace=False)
