"""``pg-imgembed worker``: embeds the rows async triggers queued, outside the database.

It loads the same pipeline model from the model table and runs the same decode / pipeline /
vector-text code as ``img_embedding``, so its vectors equal the in-database ones. Several workers,
on one host or many, share the queue:

- **claim:** a batch is claimed with ``FOR UPDATE SKIP LOCKED`` and marked with a lease
  (``claimed_until``) in one short transaction. A worker that dies loses nothing: its jobs come
  back when the lease ends.
- **as the table's owner:** rows are read and vectors written only through
  ``imgembed.worker_read``/``worker_write``, which act as the table's owner: nothing the owner
  defined on the table (triggers, rules, defaults, domains) runs with the worker's privileges, and
  the worker needs no grant on any user table. The job names only the row (its primary key, as
  the enqueue trigger wrote it); the model and image column come from the binding that
  ``create_embedding_trigger`` recorded, and the table's owner must still be allowed the model.
- **write:** the vector is written only if the row's ``xmin`` is still the one that was read.
  If the row changed meanwhile, the job is retried, and a job whose image changed again was
  re-queued in place (newer ``enqueued_at``), so it stays for the newer image.
- **failure:** an unusable image is permanent: recorded in ``imgembed.errors`` and dropped.
  Anything else (database or inference trouble) is retried with exponential backoff, up to
  ``--max-attempts``. A batch that fails is tried again one job at a time, so a failure is
  charged only to the job that caused it.
- **SIGTERM/SIGINT:** stop claiming, finish the batch in hand, exit 0.
- **a role that is not a member of imgembed_worker:** stop at the first claim, exit 2.
- **packages that compute vectors (onnxruntime, numpy, Pillow) at other versions than the server's
  runtime:** refuse to start, exit 2 (``--allow-version-mismatch`` overrides), since its vectors
  must equal ``img_embedding``'s. ``pip install 'pg_imgembed[worker]'`` pins the server's versions.
- **``--provider cuda`` that cannot start** (no GPU, no CUDA libraries): release the jobs without
  spending an attempt, stop, exit 2. ``auto`` (the default) uses the CPU there instead.
- **``--inference-server URL``:** a V2 server runs the model (serving.py); decoding stays here. When
  it does not answer, the jobs in hand are released without spending an attempt and the worker
  waits, doubling the wait up to a minute, until it answers again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import ImageError, ImgEmbedError, InferenceServerUnavailable, ProviderUnavailable, RuntimeMismatch, WorkerNotAllowed
from ..image.decode import keep_buffers
from ..image.tower import ImageTower
from ..model_stats import Meter
from ..serving.serving import OnBadImage, Serving
from ..settings import SETTING_NAMES, Settings, read_settings
from ..store import queue
from ..store.embedded_tables import async_trigger, record_error
from ..store.model_store import ModelStore
from ..vectors import vector_to_text
from . import inference_grpc
from .pg_database import PsycopgDatabase

if TYPE_CHECKING:
    from .worker_metrics import WorkerMetrics

log = logging.getLogger("pg_imgembed.worker")

@dataclass(frozen=True)
class Options:
    concurrency: int = 1
    batch_size: int = 16
    lease_s: float = 120.0
    max_attempts: int = 5
    retry_base_s: float = 2.0
    threads: int = 1  # onnxruntime threads per worker thread
    provider: str = "auto"  # onnxruntime execution provider: auto (CUDA where it runs), cpu, cuda
    decode_threads: int = 0  # per worker thread; 0: the cores shared out among the worker threads
    idle_s: float = 1.0
    once: bool = False  # stop when the queue has nothing ready
    inference_server: str = ""  # a V2 server's URL that runs the models; "": onnxruntime here
    inference_token_file: str = ""
    inference_timeout_ms: int = 30_000


@dataclass(frozen=True)
class Job:
    id: int
    relid: int
    tbl: str
    image_column: str
    vector_column: str
    model: str
    row_key: dict[str, Any]
    enqueued_at: Any
    attempts: int
    expired: bool  # an earlier claim's lease ran out (its worker died or took too long)
    age_s: float  # since it was queued, when claimed
    settings: dict[str, str | None]  # the session's imgembed.* values when claimed


class Worker:
    def __init__(self, dsn: str, options: Options, name: str | None = None, metrics: WorkerMetrics | None = None) -> None:
        self.dsn = dsn
        self.options = options
        self.metrics = metrics
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()
        self.serving = Serving(warn=lambda message, hint: log.warning("%s (%s)", message, hint), connect=inference_grpc.connect)
        self._announced: set[int] = set()
        # A worker owns its host, unlike a backend: large photos are bound by decoding, so by
        # default every core decodes (a GPU host's inference leaves them all to it).
        self.decode_threads = options.decode_threads or max(1, (os.cpu_count() or 1) // max(1, options.concurrency))
        self.done = 0
        self.failed = 0
        self.fatal: ImgEmbedError | None = None  # why the worker stopped on its own
        self.server_down_s = 0.0  # the current wait for the inference server; 0 while it answers
        self._count_lock = threading.Lock()
        self._last_heartbeat = 0.0

    # ------------------------------------------------------------ running

    def run(self) -> None:
        threads = [threading.Thread(target=self._loop, name=f"worker-{i}", daemon=True)
                   for i in range(self.options.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)  # wakes up for signals
        self._sign_off()

    def _loop(self) -> None:
        import psycopg

        while not self.stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    while not self.stop.is_set():
                        jobs = self.claim(conn)
                        self._heartbeat(conn)
                        if not jobs:
                            if self.options.once:
                                return
                            self.stop.wait(self.options.idle_s)
                            continue
                        self.complete(conn, jobs)
            except psycopg.OperationalError as exc:  # lost the server: leases bring the jobs back
                log.warning("connection failed (%s); retrying", exc)
                self.stop.wait(self.options.retry_base_s)

    def claim(self, conn: Any) -> list[Job]:
        import psycopg

        try:
            rows = queue.claim(conn, self.options.batch_size, self.name, self.options.lease_s, SETTING_NAMES)
        except psycopg.errors.InsufficientPrivilege:
            role = queue.current_user(conn)
            self.fatal = WorkerNotAllowed(f'role "{role}" may not claim jobs: it is not a member of imgembed_worker',
                                          hint=f"GRANT imgembed_worker TO {role};")
            log.error("%s (%s); stopping", self.fatal.message, self.fatal.hint)
            self.stop.set()
            return []
        jobs = [Job(*row) for row in sorted(rows)]
        if self.metrics is not None:
            for tbl in {job.tbl for job in jobs}:
                claimed = [job for job in jobs if job.tbl == tbl]
                self.metrics.leases.labels(tbl).inc(len(claimed))
                self.metrics.expired.labels(tbl).inc(sum(job.expired for job in claimed))
                self.metrics.queue_lag.labels(tbl).set(max(job.age_s for job in claimed))
        return jobs

    def _heartbeat(self, conn: Any) -> None:
        """Renew this worker's row in imgembed.worker_heartbeats, at most every HEARTBEAT_S."""
        now = time.monotonic()
        with self._count_lock:
            if self.fatal is not None or now - self._last_heartbeat < HEARTBEAT_S:
                return
            self._last_heartbeat = now
            done, failed = self.done, self.failed
        queue.heartbeat(conn, self.name, done, failed)

    def _sign_off(self) -> None:
        """A clean stop removes the worker's heartbeat; one that dies leaves it to grow old."""
        import psycopg

        if not self._last_heartbeat:
            return
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                queue.sign_off(conn, self.name)
        except psycopg.Error as exc:
            log.warning("could not remove the heartbeat of %s: %s", self.name, exc)

    def complete(self, conn: Any, jobs: Sequence[Job]) -> None:
        groups: dict[tuple[int, str], list[Job]] = defaultdict(list)
        for job in jobs:
            groups[(job.relid, job.vector_column)].append(job)
        pending = list(groups.values())
        for n, group in enumerate(pending):
            try:
                self._complete_group(conn, group)
            except ProviderUnavailable as exc:  # this host cannot run any job: stop, spend no attempts
                log.error("%s (%s); stopping", exc.message, exc.hint)
                self.fatal = exc
                self.stop.set()
                queue.release(conn, [job.id for rest in pending[n:] for job in rest])
                return
            except InferenceServerUnavailable as exc:  # no job can run until it answers: wait, spend no attempts
                queue.release(conn, [job.id for rest in pending[n:] for job in rest])
                self.server_down_s = min(max(self.server_down_s * 2, self.options.retry_base_s), 60.0)
                log.warning("%s; jobs released, trying again in %.0f s", exc.message, self.server_down_s)
                self.stop.wait(self.server_down_s)
                return
        self.server_down_s = 0.0

    def _complete_group(self, conn: Any, group: list[Job]) -> None:
        import psycopg

        try:
            with conn.transaction():
                done, failed = self._process(conn, group)
            with self._count_lock:
                self.done += done
                self.failed += failed
        except (ProviderUnavailable, InferenceServerUnavailable, psycopg.OperationalError):
            raise
        except Exception as exc:  # transient: database, inference, a model being replaced...
            if len(group) == 1:
                log.warning("job %d failed: %s", group[0].id, exc)
                self._retry_later(conn, group, exc)
                return
            log.warning("batch of %d jobs failed (%s): trying them one at a time", len(group), exc)
            for job in group:
                self._complete_group(conn, [job])

    # ------------------------------------------------------------ one table/column/model

    def _process(self, conn: Any, jobs: list[Job]) -> tuple[int, int]:
        first = jobs[0]
        db = PsycopgDatabase(conn)
        model_name = self._bound_model(db, jobs)
        if model_name is None:
            queue.drop(conn, jobs)
            return 0, 0
        settings = self._settings(first.settings)
        model = self._model(db, model_name, settings)
        images, versions, keys = self._read(conn, jobs)
        present = sorted(i for i, image in images.items() if image is not None)
        meter = Meter(self.metrics.observer(model_name) if self.metrics is not None else None)
        failed_at: dict[int, ImageError] = {}

        def record(position: int, exc: ImageError) -> None:
            failed_at[present[position]] = exc
            record_error(db, str(first.relid), keys[present[position]], model_name, exc.sqlstate, f"worker: {exc.message}")

        vectors = self.serving.embed_images(model, [images[i] for i in present], settings, OnBadImage(record),
                                            self.decode_threads, meter)
        embedded = [{"n": i, "key": jobs[i].row_key, "vector": vector_to_text(vector), "row_version": versions[i]}
                    for p, i in enumerate(present) if i not in failed_at and (vector := vectors[p]) is not None]
        # One statement per batch, not per row: workers on other hosts pay a round trip each.
        written = queue.write_vectors(conn, first.relid, first.vector_column, embedded)
        # Written, failed for good, or nothing left to embed (row gone, image NULL): the job ends.
        # A row that changed since it was read is left for another try with what it holds now.
        ending = [jobs[i] for i in range(len(jobs)) if i in written or i in failed_at or i not in present]
        ended = queue.settle(conn, first.relid, first.vector_column, jobs, ending, [jobs[i].id for i in written],
                             [jobs[i].id for i in failed_at], model_name, meter)
        done = sum(jobs[i].id in ended for i in written)
        failed = {i: exc for i, exc in failed_at.items() if jobs[i].id in ended}
        self._observe(model_name, first.tbl, done, failed.values())
        return done, len(failed)

    def _bound_model(self, db: PsycopgDatabase, jobs: list[Job]) -> str | None:
        """The model of the column's async trigger, which the table's owner must still be allowed;
        None when the trigger is gone. The model and image column come from the binding
        create_embedding_trigger() recorded, never from the job."""
        first = jobs[0]
        trigger = async_trigger(db, str(first.relid), first.vector_column)
        if trigger is None:
            log.warning("%s.%s has no async embedding trigger any more: dropping %d jobs",
                        first.tbl, first.vector_column, len(jobs))
            return None
        return trigger.model

    def _settings(self, values: dict[str, str | None]) -> Settings:
        """The database's imgembed.* settings, except where the model runs: the worker's own
        choice (its command line), never the database's."""
        settings = replace(read_settings(values.get),
                           inference_server=self.options.inference_server,
                           inference_token_file=self.options.inference_token_file,
                           inference_timeout_ms=self.options.inference_timeout_ms)
        keep_buffers(settings.decode_buffer_mb)
        return settings

    def _read(self, conn: Any, jobs: list[Job]) -> tuple[dict[int, bytes | None], dict[int, str], dict[int, str]]:
        """Each found row's image, version and key, by the job's position in ``jobs``."""
        rows = queue.read_rows(conn, jobs[0].relid, jobs[0].vector_column, [j.row_key for j in jobs])
        return ({n - 1: image for n, image, _, _ in rows}, {n - 1: version for n, _, version, _ in rows},
                {n - 1: key for n, _, _, key in rows})

    def _observe(self, model: str, tbl: str, done: int, failures: Any) -> None:
        if self.metrics is not None:
            self.metrics.embedded.labels(model, tbl).inc(done)
            for exc in failures:
                self.metrics.failed.labels(model, tbl, exc.sqlstate).inc()

    def _retry_later(self, conn: Any, jobs: list[Job], exc: Exception) -> None:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        try:
            for job in jobs:
                if job.attempts >= self.options.max_attempts:
                    record_error(PsycopgDatabase(conn), str(job.relid), json.dumps(job.row_key), job.model,
                                 getattr(exc, "sqlstate", None) or "XX000",
                                 f"worker gave up after {job.attempts} attempts: {message}")
                    queue.give_up(conn, job)
                    if self.metrics is not None:
                        self.metrics.failed.labels(job.model, job.tbl, getattr(exc, "sqlstate", None) or "XX000").inc()
                else:
                    delay = min(self.options.retry_base_s * 2 ** (job.attempts - 1), 300.0)
                    queue.retry_later(conn, job.id, message, delay)
        except Exception as again:  # the lease will bring them back
            log.warning("could not reschedule jobs: %s", again)

    def _model(self, db: PsycopgDatabase, name: str, settings: Settings) -> ImageTower:
        """The model's session, through the same serving path as the backend's. The model is held
        FOR SHARE until the batch commits, so it cannot be replaced under vectors being written
        (see imgembed.lineage)."""
        store = ModelStore(db)
        stored = store.lookup_for_writing(name)
        model = self.serving.model(store, stored, settings, threads=self.options.threads, provider=self.options.provider)
        if id(model) not in self._announced:
            self._announced.add(id(model))
            log.info('model "%s" (sha256 %s) runs on %s', name, stored.sha256[:12], model.provider)
        return model


HEARTBEAT_S = 5.0  # how often a claiming worker renews its row in imgembed.worker_heartbeats


def vector_package_versions() -> dict[str, str]:
    """The versions of what turns image bytes into a vector, as imgembed.runtime() reports them."""
    import numpy
    import onnxruntime
    import PIL

    from ..image.decode import heif_decoder

    try:
        heif = heif_decoder().__version__
    except ImportError:  # installed before HEIC support: check_versions names the version to install
        heif = "not installed"
    return {"onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__,
            "pi_heif": heif}


def check_versions(dsn: str) -> None:
    """Refuse to write vectors that could differ from the server's own."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT imgembed.runtime()").fetchone()
    server = row[0] if row else {}
    differ = {name: version for name, version in vector_package_versions().items() if server.get(name) != version}
    if differ:
        pins = " ".join(f"'{name}=={server.get(name)}'" for name in differ)
        raise RuntimeMismatch("the worker's packages differ from the server's runtime: "
                              + "; ".join(f"{name} {version} here, {server.get(name)} in the server" for name, version in differ.items()),
                              hint=f"Install the server's versions (pip install {pins}), or start with "
                                   "--allow-version-mismatch if vectors may differ from img_embedding's.")


def run_from_args(dsn: str | None, args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pg-imgembed worker: %(message)s")
    if not args.allow_version_mismatch:
        check_versions(dsn or "")
    metrics = None
    if args.metrics_port is not None:
        from .worker_metrics import WorkerMetrics

        metrics = WorkerMetrics()
        metrics.serve(args.metrics_port, args.metrics_host)
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, args.metrics_port)
    worker = Worker(dsn or "", Options(concurrency=args.concurrency, batch_size=args.batch_size, lease_s=args.lease,
                                       max_attempts=args.max_attempts, retry_base_s=args.retry_base,
                                       threads=args.threads, provider=args.provider,
                                       decode_threads=args.decode_threads, once=args.once,
                                       inference_server=args.inference_server or "", inference_token_file=args.inference_token_file or "",
                                       inference_timeout_ms=args.inference_timeout_ms), metrics=metrics)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop.set())
    log.info("started %s: concurrency %d, batch size %d, %d decode threads each, %s", worker.name,
             args.concurrency, args.batch_size, worker.decode_threads,
             f"inference server {args.inference_server}" if args.inference_server else f"provider {args.provider}")
    worker.run()
    log.info("stopped: %d embedded, %d failed", worker.done, worker.failed)
    if worker.fatal is not None:
        raise SystemExit(2)



