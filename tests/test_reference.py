"""README.md's Reference is the catalog's: every function, view, table and setting of the extension
with its signature and COMMENT, as scripts/reference.py renders them from the server under test."""

from __future__ import annotations

import difflib
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
