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


def pg_environment(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({PG_VARIABLES[k]: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items() if k in PG_VARIABLES})
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # pg-imgembed of this venv
    return env


def test_the_section_has_the_examples_it_promises():
    python, bash = blocks("python"), blocks("bash")
    assert len(python) == 2 and "import psycopg" in python[0] and "sqlalchemy" in python[1]
    assert any("pg-imgembed backfill photos" in b for b in bash)


@pytest.mark.parametrize("index", [0, 1], ids=["psycopg", "sqlalchemy"])
def test_python_examples_run(index, dsn, demo_dir):
    done = subprocess.run([sys.executable, "-c", blocks("python")[index]], cwd=demo_dir, env=pg_environment(dsn),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
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
