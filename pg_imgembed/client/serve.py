"""``pg-imgembed serve``: one Triton Inference Server for a host, serving models of the database.

Triton's own ``tritonserver`` binary (from the PyPI package ``nvidia-pytriton``, in a venv of its
own made from the system's Python: see ``make triton-venv``) serves V2 over HTTP and gRPC with
dynamic batching across all callers, health (``/v2/health/ready``) and Prometheus metrics
(``:PORT/metrics``). Its repository is written here, in a private temporary directory: each named
model (and its text tower, as ``NAME.text``) at version = its generation, checked as a backend
checks it (the stored sha256, no external data), run by ``triton_python_model.py`` in Triton's
Python backend. No names: every model the role may use. Every ``--poll`` seconds the table is read
again; a replaced model is written as its new version and Triton loads it (the old one is
unloaded), and with no names a model loaded since is served too. SIGTERM/SIGINT stop Triton and
remove the repository; exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ImgEmbedError, InvalidSetting
from ..serving import triton_repository
from ..serving.inference_server import V2Client
from ..serving.triton_repository import RepositoryModel, stored_models
from ..settings import default_threads
from ..store.model_store import ModelStore
from .pg_database import PsycopgDatabase

log = logging.getLogger("pg_imgembed.serve")
PACKAGE_PATH = str(Path(__file__).resolve().parent.parent.parent)  # what model.py puts on sys.path


@dataclass(frozen=True)
class Options:
    names: tuple[str, ...]
    venv: str
    address: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    provider: str = "auto"
    threads: int = 0  # onnxruntime threads per model instance; 0: half the cores, 1 to 4
    instances: int = 1
    max_batch_size: int = 16
    queue_delay_us: int = 2000
    poll_s: float = 5.0


def tritonserver(venv: str) -> tuple[str, str, str]:
    """The binary, its libraries and the Python stub of ``venv``'s nvidia-pytriton."""
    found = sorted(glob.glob(os.path.join(venv, "lib", "python3.*", "site-packages")))
    site = found[0] if found else ""
    binary = os.path.join(site, "pytriton", "tritonserver", "bin", "tritonserver")
    if not os.access(binary, os.X_OK):
        raise InvalidSetting(f"no tritonserver in {venv} (nvidia-pytriton is not installed there)",
                             hint="make triton-venv (or: /usr/bin/python3 -m venv DIR && DIR/bin/pip install -r "
                             "requirements-serve.txt), then --triton-venv DIR.")
    minor = os.path.basename(os.path.dirname(site))[len("python"):]
    return binary, os.path.join(site, "nvidia_pytriton.libs"), os.path.join(site, "pytriton", "tritonserver", "python_backend_stubs", minor)


class Serve:
    def __init__(self, dsn: str, options: Options) -> None:
        self.dsn = dsn
        self.options = options
        self.stop = threading.Event()
        self.served: dict[str, tuple[str, int]] = {}  # V2 name -> (sha256, generation) loaded
        self.client = V2Client(f"http://{options.address}:{options.http_port}", timeout_ms=600_000)  # a load can take minutes

    def run(self) -> int:
        binary, libraries, stub = tritonserver(self.options.venv)
        work = tempfile.mkdtemp(prefix="pg-imgembed-serve-")  # 0700, ours
        try:
            backend = os.path.join(work, "backends", "python")
            os.makedirs(backend, mode=0o700)
            python_backend = os.path.join(os.path.dirname(os.path.dirname(stub)), "backends", "python")
            for source in (os.path.join(python_backend, "libtriton_python.so"),
                           os.path.join(python_backend, "triton_python_backend_utils.py"),
                           os.path.join(stub, "triton_python_backend_stub")):
                os.symlink(source, os.path.join(backend, os.path.basename(source)))
            self.repository = os.path.join(work, "repository")
            os.mkdir(self.repository, 0o700)
            with self._database() as store:
                for name in self._names(store):
                    for model in stored_models(store, name, self.served, log.warning):
                        self._write(model)
            return self._run_server(binary, libraries, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run_server(self, binary: str, libraries: str, work: str) -> int:
        o = self.options
        command = [binary, "--model-repository", self.repository, "--backend-directory", os.path.join(work, "backends"),
                   "--model-control-mode", "explicit", *[f"--load-model={name}" for name in self.served],
                   "--http-address", o.address, "--http-port", str(o.http_port), "--grpc-address", o.address,
                   "--grpc-port", str(o.grpc_port), "--metrics-address", o.address, "--metrics-port", str(o.metrics_port),
                   "--exit-on-error", "true", "--exit-timeout-secs", "10", "--log-info", "false"]
        env = {**os.environ, "PATH": os.path.join(o.venv, "bin") + os.pathsep + os.environ.get("PATH", ""),
               "LD_LIBRARY_PATH": libraries}
        process = subprocess.Popen(command, env=env)
        try:
            while not self.stop.wait(0.2):
                if process.poll() is not None:
                    log.error("tritonserver exited with status %s before it was ready", process.returncode)
                    return 1
                with contextlib.suppress(ImgEmbedError):
                    if self.client.request("GET", "/v2/health/ready")[0] == 200:
                        break
            if self.stop.is_set():
                return 0
            log.info("serving %s: http://%s:%d (V2), grpc %s:%d, metrics http://%s:%d/metrics", ", ".join(self.served) or "no model yet",
                     o.address, o.http_port, o.address, o.grpc_port, o.address, o.metrics_port)
            while not self.stop.wait(o.poll_s):
                if process.poll() is not None:
                    log.error("tritonserver exited with status %s", process.returncode)
                    return 1
                self._reload_replaced()
            return 0
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.info("stopped")

    @contextlib.contextmanager
    def _database(self) -> Any:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            yield ModelStore(PsycopgDatabase(conn))

    def _names(self, store: ModelStore) -> list[str]:
        return list(self.options.names) or store.names()

    def _write(self, model: RepositoryModel) -> None:
        o = self.options
        python = {"pg_imgembed.package_path": PACKAGE_PATH, "pg_imgembed.provider": o.provider,
                  "pg_imgembed.threads": str(o.threads or default_threads())}
        config = triton_repository.config_pbtxt(model, python=python, max_batch_size=o.max_batch_size,
                                                instances=o.instances, queue_delay_us=o.queue_delay_us)
        model_py = Path(triton_repository.__file__).with_name("triton_python_model.py").read_bytes()
        version = os.path.join(self.repository, model.name, str(model.version))
        if os.path.isdir(version):  # the same generation with other bytes (a rebuild that kept its vectors)
            shutil.rmtree(version)
        triton_repository.write_model(self.repository, model, config, {"model.onnx": model.onnx, "model.py": model_py}, private=True)
        self.served[model.name] = (model.sha256, model.version)

    def _reload_replaced(self) -> None:
        try:
            with self._database() as store:
                for model in [m for name in self._names(store) for m in stored_models(store, name, self.served, log.warning)]:
                    old = self.served.get(model.name)
                    self._write(model)
                    status, _, data = self.client.request("POST", f"/v2/repository/models/{model.name}/load", b"{}")
                    if status != 200:
                        log.error("%s: Triton could not load generation %d: %s", model.name, model.version, data[:300].decode(errors="replace"))
                        continue
                    log.info("%s: generation %d (sha256 %s) loaded", model.name, model.version, model.sha256[:12])
                    if old is not None and old[1] != model.version:
                        shutil.rmtree(os.path.join(self.repository, model.name, str(old[1])), ignore_errors=True)
        except Exception as exc:  # the database away, a model dropped: keep serving what is loaded
            log.warning("could not check the models for replacements: %s", str(exc).splitlines()[0] if str(exc) else exc)


def run_from_args(dsn: str | None, args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pg-imgembed serve: %(message)s")
    venv = args.triton_venv or os.environ.get("PG_IMGEMBED_TRITON_VENV") or sys.prefix
    serve = Serve(dsn or "", Options(tuple(args.names), venv, args.address, args.http_port, args.grpc_port, args.metrics_port,
                                     args.provider, args.threads, args.instances, args.max_batch_size, args.queue_delay_us,
                                     args.poll))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: serve.stop.set())
    status = serve.run()
    if status:
        raise SystemExit(status)
