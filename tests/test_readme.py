"""The README's "Using it from Python" runs as written: every Python block, and the CLI lines, in
a directory laid out as `make demo` leaves it (a small model and real JPEGs in place of the
demo's export), against the test server named by the PG* variables, as the README says."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests import images, onnx_models
from tests.helpers import TINY_CONFIG

ROOT = Path(__file__).resolve().parent.parent
PG_VARIABLES = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE",
                "options": "PGOPTIONS"}


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    return text[start:text.index("\n## ", start + 1)]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section("Using it from Python"), flags=re.DOTALL)


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """What `make demo` leaves in .demo: the model, its config, photos and query photos."""
    demo = tmp_path / ".demo"
    (demo / "photos" / "query").mkdir(parents=True)
    (demo / "efficientnet-lite0.onnx").write_bytes(onnx_models.conv_net())
    (demo / "efficientnet-lite0.json").write_text(json.dumps(TINY_CONFIG))
    for i, name in enumerate(("cat-1", "cat-2", "coffee-1", "rocket", "flower")):
        (demo / "photos" / f"{name}.jpg").write_bytes(images.jpeg(images.photo_like(96, 64, seed=i)))
    for i, name in enumerate(("cat", "coffee")):
        (demo / "photos" / "query" / f"{name}.jpg").write_bytes(images.jpeg(images.photo_like(96, 64, seed=10 + i)))
    return tmp_path


def pg_environment(dsn: str, options: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({PG_VARIABLES[k]: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items() if k in PG_VARIABLES})
    if options:
        env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {options}".strip()
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # pg-imgembed of this venv
    return env


# Every search the README shows must be one the HNSW index answers. The tables here hold a handful
# of rows, where the planner rightly prefers a sequential scan; with enable_seqscan off it still
# scans sequentially where the index cannot answer the ORDER BY (a volatile operand, say).
NO_SEQSCAN = "-c enable_seqscan=off"
ORDER_BY_DISTANCE = re.compile(r"ORDER BY\s+[\w.]+\s*<=>|<=>.*\bAS distance\b.*ORDER BY distance", re.DOTALL | re.IGNORECASE)

# Prepended to a README Python block: every query that orders by a distance is EXPLAINed first,
# with the same parameters, and its plan printed to stderr.
EXPLAIN_SEARCHES = r"""
import re as _re, sys as _sys
import psycopg as _psycopg
_execute = _psycopg.Cursor.execute
def _explained(self, query, params=None, **kwargs):
    text = query if isinstance(query, str) else query.as_string(self.connection)
    if _re.search(r"ORDER BY\s+[\w.]+\s*<=>|<=>.*\bAS distance\b.*ORDER BY distance", text, _re.DOTALL | _re.IGNORECASE):
        with self.connection.cursor() as cur:
            plan = " | ".join(row[0] for row in _execute(cur, "EXPLAIN " + text, params).fetchall())
        print("PLAN " + plan, file=_sys.stderr)
    return _execute(self, query, params, **kwargs)
_psycopg.Cursor.execute = _explained
"""


def sql_searches() -> list[str]:
    """The statements of the README's SQL blocks that order by a vector distance."""
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL):
        code = re.sub(r"--[^\n]*", "", block)
        found += [statement.strip() for statement in code.split(";") if ORDER_BY_DISTANCE.search(statement)]
    return found


def test_the_section_has_the_examples_it_promises():
    python, bash = blocks("python"), blocks("bash")
    assert len(python) == 2 and "import psycopg" in python[0] and "sqlalchemy" in python[1]
    assert any("pg-imgembed backfill photos" in b for b in bash)


@pytest.mark.parametrize("index", [0, 1], ids=["psycopg", "sqlalchemy"])
def test_python_examples_run_and_search_through_the_index(index, dsn, demo_dir):
    done = subprocess.run([sys.executable, "-c", EXPLAIN_SEARCHES + blocks("python")[index]], cwd=demo_dir,
                          env=pg_environment(dsn, NO_SEQSCAN), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    plans = [line for line in done.stderr.splitlines() if line.startswith("PLAN ")]
    assert len(plans) == 1, done.stderr
    assert re.search(r"Index Scan using \w+ on (album|photos_orm)", plans[0]), plans[0]
    out = done.stdout.splitlines()
    if index == 0:
        assert len(out) == 4 and all(re.fullmatch(r"\S+\.jpg +cosine distance [\d.]+", line) for line in out[:3])
        assert out[3] == "(4,) float32"
    else:
        assert re.fullmatch(r"\S+\.jpg 4", out[0]) and out[1].startswith("['")


def test_cli_lines_run(dsn, conn, demo_dir):
    """The CLI block line by line, against a database laid out as the demo leaves it (its table photos)."""
    env = pg_environment(dsn)
    lines = [line.split("#")[0].strip() for line in blocks("bash")[-1].splitlines() if line.startswith("pg-imgembed")]
    load, listing, backfill, status = lines
    subprocess.run(shlex.split(load), cwd=demo_dir, env=env, check=True, capture_output=True)
    assert "lite0" in subprocess.run(shlex.split(listing), cwd=demo_dir, env=env, check=True, capture_output=True, text=True).stdout
    conn.execute("CREATE TABLE photos (id serial PRIMARY KEY, name text, photo bytea, embedding vector(4))")
    conn.execute("INSERT INTO photos (name, photo) VALUES ('cat.jpg', %s)", (images.jpeg(images.photo_like(seed=1)),))
    conn.execute("SELECT imgembed.create_embedding_trigger('photos', 'photo', 'embedding', 'lite0')")
    subprocess.run(shlex.split(backfill), cwd=demo_dir, env=env, check=True, capture_output=True)
    assert conn.execute("SELECT count(embedding) FROM photos").fetchone() == (1,)
    assert "lineage (imgembed.vector_lineage)" in subprocess.run(shlex.split(status), cwd=demo_dir, env=env, check=True,
                                                                 capture_output=True, text=True).stdout


def test_every_sql_search_uses_the_index(conn):
    searches = sql_searches()
    assert len(searches) >= 2 and any("img_embedding" in q for q in searches) and any("text_embedding" in q for q in searches)
    for table in {re.search(r"FROM\s+(\w+)", q).group(1) for q in searches}:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, photo bytea, embedding vector(4))")
        conn.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops)")
    conn.execute("SET enable_seqscan = off")
    for query in searches:
        plan = " | ".join(row[0] for row in conn.execute(f"EXPLAIN {query}").fetchall())
        assert re.search(r"Index Scan using \w+_hnsw", plan), f"{query}\n{plan}"


def test_the_volatile_form_would_not_use_the_index(conn):
    """The check above can tell: the Tour's search as it was written before is a sequential scan."""
    conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_cosine_ops)")
    conn.execute("SET enable_seqscan = off")
    plan = " | ".join(row[0] for row in conn.execute(
        "EXPLAIN SELECT id FROM items ORDER BY embedding <=> img_embedding(pg_read_binary_file('/tmp/q.jpg')) LIMIT 5"))
    assert "Seq Scan on items" in plan and "Index Scan" not in plan
