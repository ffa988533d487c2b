"""pip install 'pg_imgembed[client]' / '[sqlalchemy]' / '[worker]' in fresh venvs: what each brings,
and that each works against the real server from its own interpreter."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests import images
from tests.helpers import embed, load_tiny

ROOT = Path(__file__).resolve().parent.parent


def venv_with(path: Path, *extras: str) -> Path:
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(path)], check=True)
    for extra in extras:  # one after another: what each adds is what it needs
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", f"{ROOT}[{extra}]"],
                       check=True, capture_output=True)
    return path


def packages(venv: Path) -> dict[str, str]:
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format", "json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed)}  # pi_heif: pi-heif


def runtime_pins() -> dict[str, str]:
    lines = (ROOT / "requirements-runtime.txt").read_text().splitlines()
    return dict(re.match(r"([\w-]+)==([\w.]+)", line).groups() for line in lines if re.match(r"[\w-]+==", line))  # type: ignore[misc]


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    return venv_with(tmp_path_factory.mktemp("venvs") / "client", "client", "sqlalchemy")


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory) -> Path:
    return venv_with(tmp_path_factory.mktemp("venvs") / "worker", "worker")


def test_the_client_extras_bring_no_inference_stack(client_venv):
    found = packages(client_venv)
    assert {"psycopg", "pgvector", "numpy", "sqlalchemy"} <= set(found)
    assert not {"onnxruntime", "onnx", "pillow", "protobuf"} & set(found), found


def test_the_client_install_embeds_searches_and_maps_against_the_server(client_venv, conn, dsn):
    load_tiny(conn)
    photo = images.jpeg(images.photo_like(64, 48, seed=4))
    script = """
import sys
import numpy as np
import psycopg
from sqlalchemy import select
from pg_imgembed.client import embed, search
from pg_imgembed.client.sqlalchemy import img_embedding
photo = open(sys.argv[2], "rb").read()
with psycopg.connect(sys.argv[1]) as conn:
    print(" ".join(f"{x:.6f}" for x in embed(conn, photo)))
"""
    (Path(client_venv) / "photo.jpg").write_bytes(photo)
    out = subprocess.run([str(client_venv / "bin" / "python"), "-c", script, dsn, str(client_venv / "photo.jpg")],
                         capture_output=True, text=True, check=True).stdout
    assert [float(x) for x in out.split()] == pytest.approx(embed(conn, photo).tolist(), abs=1e-6)
    version = subprocess.run([str(client_venv / "bin" / "pg-imgembed"), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("pg-imgembed 0.")
    listed = subprocess.run([str(client_venv / "bin" / "pg-imgembed"), "models", "list", "--dsn", dsn],
                            capture_output=True, text=True, check=True)
    assert listed.stdout.splitlines()[1].startswith("tiny ")
    worker = subprocess.run([str(client_venv / "bin" / "pg-imgembed"), "worker", "--dsn", dsn], capture_output=True, text=True)
    assert worker.returncode == 2
    assert worker.stderr.startswith("pg-imgembed: error: the worker computes vectors itself and needs onnxruntime, numpy and Pillow")
    assert worker.stderr.endswith("hint: pip install 'pg_imgembed[worker]' (the server runtime's versions)\n")
    for given, message in (("missing.onnx", "pg-imgembed: error: missing.onnx: no such file\n"),
                           (str(client_venv / "photo.jpg"), "pg-imgembed: error: building a pipeline model needs onnx, "
                                                             "onnxruntime and Pillow (No module named 'PIL')\n")):
        build = subprocess.run([str(client_venv / "bin" / "pg-imgembed"), "models", "build", given, "-o", "out.onnx"],
                               capture_output=True, text=True, cwd=client_venv)
        assert (build.returncode, build.stderr.splitlines(keepends=True)[0]) == (2, message), build.stderr


def test_the_worker_extra_pins_the_server_runtime_and_runs(worker_venv, conn, dsn):
    found, pins = packages(worker_venv), runtime_pins()
    for name in ("onnxruntime", "numpy", "pillow", "pi-heif"):
        assert found[name] == pins[name], name
    assert "onnx" not in found  # the worker runs pipeline models; it builds none
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'async')")
    photo = images.jpeg(images.photo_like(64, 48, seed=5))
    conn.execute("INSERT INTO items VALUES (1, %s)", (photo,))
    done = subprocess.run([str(worker_venv / "bin" / "pg-imgembed"), "worker", "--dsn", dsn, "--once"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (vector,) = conn.execute("SELECT embedding::text FROM items").fetchone()
    assert json.loads(vector) == pytest.approx(embed(conn, photo).tolist(), abs=1e-7)


def test_the_worker_extra_pins_equal_the_runtime_requirements():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = runtime_pins()
    for requirement in [r for r in extras["worker"][1:] + extras["build"] if "==" in r]:  # what computes vectors
        name, version = requirement.split("==")
        assert pins[name] == version, requirement


def test_client_and_build_extras_quantize(tmp_path):
    """`models quantize` needs onnx and onnxruntime's quantizer: [client,build] brings them."""
    venv = venv_with(tmp_path / "build", "client,build")
    found, pins = packages(venv), runtime_pins()
    assert {name: found[name] for name in ("onnx", "onnxruntime", "numpy", "pillow")} == \
        {name: pins[name] for name in ("onnx", "onnxruntime", "numpy", "pillow")}
    done = subprocess.run([str(venv / "bin" / "python"), "-c", "import onnxruntime.quantization, pg_imgembed.client.quantize"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
