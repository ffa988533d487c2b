"""README.md's Reference is the catalog's: every function, view, table and setting of the extension
with its signature and COMMENT, as scripts/reference.py renders them from the server under test."""

from __future__ import annotations

import difflib
import re
import shlex
import subprocess
import sys
from pathlib import Path

from scripts import reference

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_reference_is_current(conn):
    readme = (ROOT / "README.md").read_text()
    expected = reference.render(conn)
    written = reference.current_reference(readme)
    diff = "".join(difflib.unified_diff(written.splitlines(True), expected.splitlines(True), "README.md", "catalog", n=0))
    assert written == expected, (f"README.md's Reference is not what the catalog says: run `{reference.COMMAND}` "
                                 f"(after make install; --dsn DSN for another server)\n{diff}")


def test_the_reference_names_the_public_surface(conn):
    text = reference.render(conn)
    for name in ("`img_embedding(image bytea)`", "`vector_embedding(model text, query text)`", "`imgembed.backfill(tbl regclass",
                 "`imgembed.models`", "`imgembed.max_image_pixels`", "`imgembed.errors`"):
        assert name in text, name
    assert "imgembed._embed" not in text  # the PL/Python bodies behind the wrappers
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert all(not line.endswith("|  |") for line in rows), "every object has a COMMENT (sql/idempotent/*.sql)"


def test_the_regeneration_command_of_development_md_rewrites_the_reference(server_dsn, tmp_path):
    """DEVELOPMENT.md's command, run as written (on a copy, against the server under test)."""
    text = (ROOT / "DEVELOPMENT.md").read_text()
    section = text[text.index("\n## The README's Reference\n"):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL).group(1)
    command = [line.split("#")[0].strip() for line in block.splitlines() if "scripts/reference.py" in line]
    assert command == [reference.COMMAND]
    copy = tmp_path / "README.md"
    copy.write_text(reference.replace_reference((ROOT / "README.md").read_text(), f"{reference.BEGIN}\n{reference.END}\n"))
    argv = shlex.split(command[0])[1:]  # this venv's python: the command's .venv is the checkout's
    subprocess.run([sys.executable, *argv, "--dsn", server_dsn, "--readme", str(copy)], cwd=ROOT, check=True,
                   capture_output=True)
    assert copy.read_text() == (ROOT / "README.md").read_text()
