"""A throwaway local PostgreSQL cluster, for the tests and the demo.

``initdb``/``pg_ctl`` refuse to run as root, so as root they run as ``postgres`` through
``runuser`` with a clean environment (root's PATH and PYTHON* must not leak into the server).
The cluster listens only on a Unix socket in its own directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def pg_bindir() -> Path:
    override = os.environ.get("PG_BINDIR")
    if override:
        return Path(override)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not candidates:
        raise RuntimeError("no PostgreSQL server found under /usr/lib/postgresql: run `make install`")
    return candidates[-1].parent


def fresh_database(dsn: str, name: str) -> str:
    """Drop and create database ``name`` on the server at ``dsn``, from template0 (the Docker
    image's template1 has the extension already); returns a DSN for it."""
    import psycopg  # a client-side dependency: the server's runtime never imports this module
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, root: Path | None = None, port: int | None = None, settings: dict[str, str] | None = None):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="pg_imgembed-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = port or free_port()
        self.settings = settings or {}
        self.bindir = pg_bindir()
        self._as_postgres = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname=postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", "env", "-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", *cmd]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}")

    def _own(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        if self._as_postgres:
            shutil.chown(path, "postgres", "postgres")

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        self._own(self.root, 0o755)
        self._own(self.data, 0o700)
        self._own(self.socket_dir, 0o755)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8")
        conf = {"port": str(self.port), "listen_addresses": "''", "unix_socket_directories": f"'{self.socket_dir}'",
                "fsync": "off", **self.settings}
        with open(self.data / "postgresql.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())

    def start(self) -> LocalCluster:
        if not self.initialised():
            self.init()
        if self._as_postgres and not self.log.exists():
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()
