"""Released SQL is frozen by hash (sql/frozen.txt): the build refuses a released file that changed.

Each test runs scripts/build_sql.py in a copy of the checkout's sql/, scripts/ and package.
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for part in ("sql", "scripts", "pg_imgembed"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def build(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/build_sql.py", *args], cwd=checkout, capture_output=True, text=True)


def test_every_released_file_is_as_frozen(tmp_path):
    """frozen.txt is in sha256sum's format: `cd sql && sha256sum -c frozen.txt` checks it too."""
    for line in (ROOT / "sql" / "frozen.txt").read_text().splitlines():
        digest, path = line.split("  ")
        assert hashlib.sha256((ROOT / "sql" / path).read_bytes()).hexdigest() == digest, path
    assert (result := build(ROOT, "--output", str(tmp_path))).returncode == 0, result.stderr


def test_an_edited_frozen_file_fails_the_build(checkout):
    assert build(checkout, "--output", "build").returncode == 0
    with (checkout / "sql" / "incremental" / "002-0.2.0.sql").open("a") as f:
        f.write("-- a fix slipped into a released file\n")
    result = build(checkout, "--output", "build")
    assert result.returncode == 1
    assert result.stderr == (
        "build_sql.py: sql/incremental/002-0.2.0.sql changed since it was frozen (sql/frozen.txt): released SQL never "
        "changes; put the change in a new incremental file or in sql/idempotent/\n")
    # and it cannot be frozen again with its new bytes
    refreeze = build(checkout, "--freeze", "sql/incremental/002-0.2.0.sql")
    assert refreeze.returncode == 1
    assert "already frozen with other bytes" in refreeze.stderr


def test_a_release_fails_the_build_until_its_files_are_frozen(checkout):
    """A release puts its install script into sql/released/, which makes its incremental file released too."""
    new = ("released/pg_imgembed--99.0.0.sql", "incremental/099-99.0.0.sql")
    for path in new:
        (checkout / "sql" / path).write_text("-- a release\n")
    result = build(checkout, "--output", "build")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"build_sql.py: sql/{path} belongs to a released version but is not frozen: run scripts/build_sql.py --freeze sql/{path}"
        for path in new]
    assert build(checkout, "--freeze", *(f"sql/{path}" for path in new)).returncode == 0
    assert build(checkout, "--output", "build").returncode == 0
    assert "  incremental/099-99.0.0.sql\n" in (checkout / "sql" / "frozen.txt").read_text()


def test_a_deleted_frozen_file_fails_the_build(checkout):
    (checkout / "sql" / "released" / "pg_imgembed--0.1.0.sql").unlink()
    result = build(checkout, "--output", "build")
    assert result.returncode == 1
    assert "sql/released/pg_imgembed--0.1.0.sql is frozen (sql/frozen.txt) but missing" in result.stderr
