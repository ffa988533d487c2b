"""Inference on a V2 server: pg-imgembed serve (Triton's own tritonserver, on the CPU here), the
backends' and the worker's client, identity checks, failures, and who may choose the server.

Every test runs against the real tritonserver from nvidia-pytriton (make triton-venv) and the
real server; vectors through it must equal the in-process ones bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pg_imgembed.client.worker import Options, Worker
from tests import clip_models, images, onnx_models
from tests.conftest import ROOT, TEMPLATE
from tests.devcluster import free_port
from tests.helpers import TINY_CONFIG, load_model, load_tiny, sql_error

PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(8)]
TEXTS = ["a photo of a cat", "", "A DOG on the beach, at sunset!"]
TRITON_VENV = Path(os.environ.get("PG_IMGEMBED_TRITON_VENV", ROOT / ".triton-venv"))


class Served:
    """A running ``pg-imgembed serve``: its URL, ports, process."""

    def __init__(self, dsn: str, names: list[str], ports: tuple[int, int, int] | None = None, poll: float = 0.5) -> None:
        self.ports = ports or (free_port(), free_port(), free_port())
        self.url = f"http://127.0.0.1:{self.ports[0]}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, "serve", *names, "--triton-venv", str(TRITON_VENV),
             "--http-port", str(self.ports[0]), "--grpc-port", str(self.ports[1]), "--metrics-port", str(self.ports[2]),
             "--poll", str(poll), "--threads", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while not self.ready():
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}: {self.process.stdout.read()}")  # type: ignore[union-attr]
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[2]}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+\{[^}]*\}) (\S+)$", text, re.M)}

    def count(self, metric: str, model: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith(metric + "{") and f'model="{model}"' in k)

    def kill_triton(self) -> None:
        """SIGKILL the tritonserver itself, as a crash would; serve notices and exits 1."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        assert self.process.wait(timeout=60) == 1

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, out
        return out


@pytest.fixture(scope="module")
def db(server_kind: str, server_dsn: str, template_dsn: str) -> Iterator[str]:
    """One database for the module (a tritonserver start costs seconds): tiny (default) and clip (both towers)."""
    if server_kind != "local":
        pytest.skip("backends must reach the tritonserver started on this machine")
    if not (TRITON_VENV / "bin" / "python").exists():
        pytest.skip(f"no tritonserver venv at {TRITON_VENV} (make triton-venv)")
    name = f"imgembed_serve_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
    dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        load_tiny(conn)
        tokenizer = (clip_models.tokenizer_dir() / "tokenizer.json").read_bytes()
        conn.execute("SELECT * FROM imgembed.load_model('clip', %s, %s::jsonb)",
                     (clip_models.image_tower(64), json.dumps(clip_models.CLIP_PREPROCESSOR)))
        conn.execute("SELECT * FROM imgembed.load_text_model('clip', %s, %s, %s::jsonb)",
                     (clip_models.text_tower(64), tokenizer, json.dumps({"tokenizer": {"max_length": 77}})))
    yield dsn
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def served(db: str) -> Iterator[Served]:
    server = Served(db, ["tiny", "clip"])
    yield server
    server.stop()  # SIGTERM: Triton stops, serve exits 0


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db, autocommit=True) as conn:
        yield conn


def through(conn: psycopg.Connection, url: str, query: str, params: object = None) -> list[tuple]:
    """The query's rows with the models run by the server at ``url`` (then in this process again)."""
    conn.execute(f"SET imgembed.inference_server = '{url}'")
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.execute("RESET imgembed.inference_server")


def table(conn: psycopg.Connection, mode: str | None = None) -> str:
    name = f"items_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    if mode is not None:
        conn.execute("SELECT imgembed.create_embedding_trigger(%s, 'photo', 'embedding', mode => %s)", (name, mode))
    return name


# ------------------------------------------------------------------ same vectors on every path

def test_every_path_gives_the_in_process_vectors_bit_for_bit(conn, served):
    before = served.count("nv_inference_count", "tiny")
    photos = (PHOTOS,)
    queries = [
        ("SELECT img_embedding(p)::text FROM unnest(%s::bytea[]) p", photos),
        ("SELECT vector_embedding('tiny', p)::text FROM unnest(%s::bytea[]) p", photos),
        ("SELECT unnest(imgembed.embed_batch('tiny', %s::bytea[]))::text", photos),
        ("SELECT img_embedding(p, 'clip')::text FROM unnest(%s::bytea[]) p", photos),
        ("SELECT text_embedding('clip', t)::text FROM unnest(%s::text[]) t", (TEXTS,)),
        ("SELECT vector_embedding('clip', t)::text FROM unnest(%s::text[]) t", (TEXTS,)),
    ]
    for query, params in queries:
        local = conn.execute(query, params).fetchall()
        assert through(conn, served.url, query, params) == local, query
    assert served.count("nv_inference_count", "tiny") - before >= 3 * len(PHOTOS)
    assert served.count("nv_inference_count", "clip.text") >= 2 * len(TEXTS)


def test_triggers_backfill_and_the_worker_write_the_in_process_vectors(conn, served):
    sync, filled, queued = table(conn, "sync"), table(conn), table(conn, "async")
    conn.execute(f"SET imgembed.inference_server = '{served.url}'")
    rows = [(i, PHOTOS[i % 8]) for i in range(1, 13)]
    with conn.cursor() as cur:
        for name in (sync, filled, queued):
            cur.executemany(f"INSERT INTO {name} (id, photo) VALUES (%s, %s)", rows)
    conn.execute(f"CALL imgembed.backfill('{filled}', 'photo', 'embedding', model => 'tiny', batch_size => 5)")
    worker = Worker(conn.info.dsn, Options(once=True, inference_server=served.url))
    worker.run()
    assert worker.done == len(rows)
    conn.execute("RESET imgembed.inference_server")
    expected = {i: conn.execute("SELECT img_embedding(%s)::text", (p,)).fetchone()[0] for i, p in rows}
    for name in (sync, filled, queued):
        assert dict(conn.execute(f"SELECT id, embedding::text FROM {name}").fetchall()) == expected, name


def test_the_worker_speaks_grpc_with_the_same_vectors_and_the_same_checks(conn, served):
    from pg_imgembed.client.inference_grpc import GrpcV2Client
    from pg_imgembed.errors import InferenceServerUnavailable, ServedModelMismatch
    from pg_imgembed.serving.inference_server import RemoteSession

    url = f"grpc://127.0.0.1:{served.ports[1]}"
    queued = table(conn, "async")
    rows = [(i, PHOTOS[i % 8]) for i in range(1, 13)]
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {queued} (id, photo) VALUES (%s, %s)", rows)
    before = served.count("nv_inference_count", "tiny")
    worker = Worker(conn.info.dsn, Options(once=True, inference_server=url))
    worker.run()
    assert worker.done == len(rows)
    assert served.count("nv_inference_count", "tiny") - before >= len(rows)  # Triton ran them, over gRPC
    expected = {i: conn.execute("SELECT img_embedding(%s)::text", (p,)).fetchone()[0] for i, p in rows}
    assert dict(conn.execute(f"SELECT id, embedding::text FROM {queued}").fetchall()) == expected
    sha, generation = conn.execute("SELECT sha256, generation FROM imgembed.model_store WHERE name = 'tiny'").fetchone()
    client = GrpcV2Client(url)
    assert RemoteSession(client, "tiny", generation, sha).get_providers() == [url]
    with pytest.raises(ServedModelMismatch, match=f"it serves sha256 {sha}, version {generation}"):
        RemoteSession(client, "tiny", generation, "0" * 64)
    with pytest.raises(ServedModelMismatch, match=f"it has no version {generation + 1} of it ready"):
        RemoteSession(client, "tiny", generation + 1, sha)
    client.close()
    closed = free_port()
    with pytest.raises(InferenceServerUnavailable, match=f"inference server grpc://127.0.0.1:{closed} cannot be reached"):
        RemoteSession(GrpcV2Client(f"grpc://127.0.0.1:{closed}", timeout_ms=2000), "tiny", generation, sha)


def test_the_session_reports_where_its_models_run(conn, served):
    runtime = through(conn, served.url, "SELECT img_embedding(%s)::text, imgembed.runtime()", (PHOTOS[0],))[0][1]
    assert runtime["sessions_run_on"] == [served.url]
    assert runtime["settings"]["inference_server"] == served.url


def test_concurrent_callers_are_batched_by_triton(db, served):
    """Row by row from 8 connections: Triton's dynamic batcher runs them in fewer executions."""
    before = served.count("nv_inference_count", "tiny"), served.count("nv_inference_exec_count", "tiny")

    def caller(n: int) -> None:
        with psycopg.connect(db, autocommit=True) as c:
            c.execute(f"SET imgembed.inference_server = '{served.url}'")
            for i in range(25):
                c.execute("SELECT img_embedding(%s)", (PHOTOS[(n + i) % 8] + bytes([n, i]),))  # no memo of the last image

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    inferences = served.count("nv_inference_count", "tiny") - before[0]
    executions = served.count("nv_inference_exec_count", "tiny") - before[1]
    assert inferences == 200
    assert executions < inferences


# ------------------------------------------------------------------ identity

def test_a_model_the_server_does_not_serve_is_refused_naming_it(conn, served):
    load_model(conn, "unserved", clip_models.image_tower(64, seed=5), clip_models.CLIP_PREPROCESSOR)
    sha, generation = conn.execute("SELECT sha256, generation FROM imgembed.model_store WHERE name = 'unserved'").fetchone()
    conn.execute(f"SET imgembed.inference_server = '{served.url}'")
    err = sql_error(conn, "SELECT img_embedding(%s, 'unserved')", (PHOTOS[0],))
    assert err.sqlstate == "55000"
    assert err.diag.message_primary.startswith(
        f'inference server {served.url} does not serve model "unserved" as stored (sha256 {sha}, '
        f"generation {generation}): it has no version {generation} of it ready")


def test_other_bytes_under_the_served_name_and_generation_are_refused(server_dsn, template_dsn, db, served):
    """Another database's "tiny", of the generation served but other bytes: both sha256s named, no vector."""
    with psycopg.connect(db, autocommit=True) as c:
        served_sha, generation = c.execute("SELECT sha256, generation FROM imgembed.model_store WHERE name = 'tiny'").fetchone()
    name = f"imgembed_other_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(server_dsn, dbname=name), autocommit=True) as other:
            other.execute("SELECT setval('imgembed.model_generation', %s, false)", (generation,))
            load_model(other, "tiny", clip_models.image_tower(64, seed=9), clip_models.CLIP_PREPROCESSOR)
            sha = other.execute("SELECT sha256 FROM imgembed.model_store WHERE name = 'tiny' AND generation = %s",
                                (generation,)).fetchone()[0]
            other.execute(f"SET imgembed.inference_server = '{served.url}'")
            err = sql_error(other, "SELECT img_embedding(%s, 'tiny')", (PHOTOS[0],))
            assert (err.sqlstate, err.diag.message_primary) == ("55000",
                f'inference server {served.url} does not serve model "tiny" as stored (sha256 {sha}, '
                f"generation {generation}): it serves sha256 {served_sha}, version {generation}")
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_replaced_model_is_served_as_its_new_generation(conn, served):
    """serve loads the new generation; until it has, the old one is refused, never used."""
    config = {"preprocess": {**TINY_CONFIG["preprocess"], "mean": [0.5, 0.5, 0.5]}}
    load_model(conn, "tiny", onnx_models.conv_net(), config, replace=True)
    expected = conn.execute("SELECT img_embedding(%s)::text", (PHOTOS[1],)).fetchone()[0]
    conn.execute(f"SET imgembed.inference_server = '{served.url}'")
    refused = 0
    for _ in range(600):  # serve polls every 0.5 s; loading takes a few seconds
        try:
            assert conn.execute("SELECT img_embedding(%s)::text", (PHOTOS[1],)).fetchone()[0] == expected
            break
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            assert "does not serve model \"tiny\" as stored" in str(exc)
            refused += 1
            time.sleep(0.1)
    else:
        raise AssertionError("serve never loaded the replaced model")
    generation = conn.execute("SELECT generation FROM imgembed.model_store WHERE name = 'tiny'").fetchone()[0]
    assert f'nv_inference_count{{model="tiny",version="{generation}"}}' in served.metrics()


# ------------------------------------------------------------------ who chooses the server

def test_a_role_may_not_choose_the_server_or_its_token(conn, db):
    role = f"hostile_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(db, user=role), autocommit=True) as app:
            seen: list[str] = []
            app.add_notice_handler(lambda d: seen.append(d.message_primary or ""))
            app.execute("SET imgembed.inference_server = 'http://attacker.example:80'")  # a placeholder until the first call
            assert app.execute("SELECT vector_dims(img_embedding(%s))", (PHOTOS[0],)).fetchone() == (4,)
            assert 'permission denied to set parameter "imgembed.inference_server"' in seen
            assert app.execute("SHOW imgembed.inference_server").fetchone() == ("",)
            for setting, value in (("imgembed.inference_server", "http://attacker.example:80"),
                                   ("imgembed.inference_token_file", "/etc/passwd")):
                err = sql_error(app, f"SET {setting} = '{value}'")
                assert (err.sqlstate, err.diag.message_primary) == ("42501", f'permission denied to set parameter "{setting}"')
                err = sql_error(app, f"ALTER ROLE {role} SET {setting} = '{value}'")
                assert err.sqlstate == "42501"
            err = sql_error(app, "SET imgembed.inference_timeout_ms = 60000")  # a limit: only lowered
            assert err.sqlstate == "42501"
            app.execute("SET imgembed.inference_timeout_ms = 1000")
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory the server's user can read (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="imgembed-serve-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_the_bearer_token_comes_from_the_superusers_file(conn, served, readable_dir):
    """Sent on every request (Triton ignores it); a file the server cannot read is a clear error."""
    tmp_path = readable_dir
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    os.chmod(token, 0o644)
    conn.execute(f"SET imgembed.inference_token_file = '{token}'")
    assert through(conn, served.url, "SELECT img_embedding(%s)::text", (PHOTOS[2],)) == \
        conn.execute("SELECT img_embedding(%s)::text", (PHOTOS[2],)).fetchall()
    conn.execute(f"SET imgembed.inference_token_file = '{tmp_path}/missing'")
    conn.execute(f"SET imgembed.inference_server = '{served.url}'")
    err = sql_error(conn, "SELECT img_embedding(%s)", (PHOTOS[3],))
    assert (err.sqlstate, err.diag.message_primary) == (
        "22023", f"cannot read the bearer token file {tmp_path}/missing (imgembed.inference_token_file): No such file or directory")


# ------------------------------------------------------------------ failures lose nothing

def test_an_unreachable_or_silent_server_is_a_connection_error(conn):
    closed = free_port()
    conn.execute(f"SET imgembed.inference_server = 'http://127.0.0.1:{closed}'")
    err = sql_error(conn, "SELECT img_embedding(%s)", (PHOTOS[0],))
    assert err.sqlstate == "08006"
    assert err.diag.message_primary.startswith(f"inference server http://127.0.0.1:{closed} cannot be reached")
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        conn.execute(f"SET imgembed.inference_server = 'http://127.0.0.1:{port}'")
        conn.execute("SET imgembed.inference_timeout_ms = 300")
        err = sql_error(conn, "SELECT img_embedding(%s)", (PHOTOS[0],))
    assert (err.sqlstate, err.diag.message_primary) == (
        "08006", f"inference server http://127.0.0.1:{port} did not answer within 300 ms")
    conn.execute("SET imgembed.inference_server = 'grpc://127.0.0.1:8001'")
    assert sql_error(conn, "SELECT img_embedding(%s)", (PHOTOS[0],)).sqlstate == "22023"


N = 30


def counted_table(conn: psycopg.Connection, mode: str | None) -> str:
    """A table whose vector writes are counted, and whose 10th write pauses (pg_sleep): a window to
    kill the server in while the run is under way."""
    name = table(conn, mode)
    conn.execute(f"CREATE TABLE {name}_writes (id int)")
    conn.execute(f"""CREATE FUNCTION {name}_count() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN INSERT INTO {name}_writes VALUES (NEW.id);
                           IF NEW.id = 10 THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$""")
    conn.execute(f"CREATE TRIGGER counted AFTER UPDATE OF embedding ON {name} FOR EACH ROW "
                 f"WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION {name}_count()")
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name} (id, photo) VALUES (%s, %s)", [(i, PHOTOS[i % 8]) for i in range(1, N + 1)])
    return name


def kill_while_paused(conn: psycopg.Connection, server: Served) -> None:
    """Wait until a write pauses in pg_sleep, then kill tritonserver."""
    for _ in range(600):
        if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'").fetchone()[0]:
            server.kill_triton()
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached its 10th write")


def assert_every_row_embedded_once(conn: psycopg.Connection, name: str) -> None:
    expected = {i: conn.execute("SELECT img_embedding(%s)::text", (PHOTOS[i % 8],)).fetchone()[0] for i in range(1, N + 1)}
    assert dict(conn.execute(f"SELECT id, embedding::text FROM {name}").fetchall()) == expected
    assert conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {name}_writes").fetchone() == (N, N)


def test_a_backfill_stops_when_the_server_dies_and_keeps_its_batches(conn, db):
    name = counted_table(conn, None)
    server = Served(db, ["tiny"])
    conn.execute(f"SET imgembed.inference_server = '{server.url}'")
    errors: list[Exception] = []

    def run() -> None:
        with psycopg.connect(db, autocommit=True) as c:
            c.execute(f"SET imgembed.inference_server = '{server.url}'")
            try:
                c.execute(f"CALL imgembed.backfill('{name}', 'photo', 'embedding', model => 'tiny', batch_size => 4)")
            except psycopg.Error as exc:
                errors.append(exc)

    backfill = threading.Thread(target=run)
    backfill.start()
    kill_while_paused(conn, server)
    backfill.join()
    assert [e.sqlstate for e in errors] == ["08006"]
    assert "inference server " + server.url in str(errors[0])
    kept = conn.execute(f"SELECT count(embedding) FROM {name}").fetchone()[0]
    assert 0 < kept < N  # the batches up to the paused one's committed
    restarted = Served(db, ["tiny"], server.ports)
    conn.execute(f"CALL imgembed.backfill('{name}', 'photo', 'embedding', model => 'tiny', batch_size => 4)")
    restarted.stop()
    conn.execute("RESET imgembed.inference_server")
    assert_every_row_embedded_once(conn, name)


def test_the_worker_waits_out_a_dead_server_and_loses_nothing(conn, db):
    name = counted_table(conn, "async")
    server = Served(db, ["tiny"])
    worker = Worker(db, Options(once=True, batch_size=4, retry_base_s=0.5, max_attempts=2, inference_server=server.url))
    thread = threading.Thread(target=worker.run)
    thread.start()
    kill_while_paused(conn, server)
    down = conn.execute("SELECT count(embedding) FROM " + name).fetchone()[0]
    restarted = Served(db, ["tiny"], server.ports)
    thread.join()
    restarted.stop()
    assert 0 < down < N
    assert (worker.done, worker.failed) == (N, 0)
    assert conn.execute("SELECT count(*) FROM imgembed.queue").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM imgembed.errors").fetchone() == (0,)
    assert_every_row_embedded_once(conn, name)


# ------------------------------------------------------------------ a repository for NVIDIA's Triton images

def parse_config(path: Path) -> dict:
    """config.pbtxt through Triton's own model_config protobuf (tritonclient, in the tritonserver venv)."""
    script = ("import json, sys; from google.protobuf import json_format, text_format; "
              "from tritonclient.grpc import model_config_pb2 as m; "
              "c = text_format.Parse(open(sys.argv[1]).read(), m.ModelConfig()); "
              "print(json.dumps(json_format.MessageToDict(c, preserving_proto_field_name=True)))")
    return json.loads(subprocess.run([str(TRITON_VENV / "bin" / "python"), "-c", script, str(path)],
                                     check=True, capture_output=True, text=True).stdout)


def test_export_writes_a_triton_repository_of_both_towers(conn, db, readable_dir):
    import hashlib

    import onnxruntime as ort

    from pg_imgembed.client.cli import main

    out = readable_dir / "repository"
    assert main(["--dsn", db, "models", "export", "clip", str(out), "--triton", "--tensorrt-fp16"]) == 0
    stored = {"clip": conn.execute("SELECT sha256, generation FROM imgembed.model_store WHERE name = 'clip'").fetchone(),
              "clip.text": conn.execute("SELECT sha256, generation FROM imgembed.text_model_store WHERE name = 'clip'").fetchone()}
    assert sorted(p.name for p in out.iterdir()) == ["clip", "clip.text"]
    types = {"tensor(uint8)": "TYPE_UINT8", "tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}
    for name, (sha, generation) in stored.items():
        onnx = (out / name / str(generation) / "model.onnx").read_bytes()
        assert hashlib.sha256(onnx).hexdigest() == sha
        config = parse_config(out / name / "config.pbtxt")
        assert (config["name"], config["platform"], config["max_batch_size"]) == (name, "onnxruntime_onnx", 16)
        assert config["parameters"]["pg_imgembed.sha256"] == {"string_value": sha}
        assert config["parameters"]["pg_imgembed.version"] == {"string_value": str(generation)}
        assert config["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
        assert "dynamic_batching" in config
        (accelerator,) = config["optimization"]["execution_accelerators"]["gpu_execution_accelerator"]
        assert accelerator == {"name": "tensorrt", "parameters": {"precision_mode": "FP16"}}
        session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        for kind, args in (("input", session.get_inputs()), ("output", session.get_outputs())):
            assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config[kind]] == \
                [(a.name, types[a.type], [d if isinstance(d, int) else -1 for d in a.shape[1:]]) for a in args]
    image = parse_config(out / "clip" / "config.pbtxt")
    assert json.loads(image["parameters"]["pg_imgembed.pipeline"]["string_value"])["config"]  # the pipeline's spec rides along
    assert [t["name"] for t in parse_config(out / "clip.text" / "config.pbtxt")["input"]][0] == "input_ids"
    assert main(["--dsn", db, "models", "export", "clip", str(out), "--triton"]) == 2  # never written over


def test_the_readmes_scaling_out_commands_are_the_ones_tested():
    """Every pg-imgembed line of README's "Scaling out" parses, with options these tests run."""
    from pg_imgembed.client.cli import parser

    text = (ROOT / "README.md").read_text().split("## Scaling out")[1].split("\n## ")[0]
    lines = [line.split("#")[0].split() for line in re.findall(r"^pg-imgembed .*$", text, re.M)]
    commands = [parser().parse_args(line[1:]) for line in lines]
    assert [(c.command, getattr(c, "subcommand", None)) for c in commands] == [
        ("serve", None), ("worker", None), ("models", "export"), ("worker", None)]
    assert commands[0].names == ["resnet50", "clip"] and commands[0].provider == "auto"
    assert commands[2].triton and commands[2].tensorrt_fp16
    assert "ALTER SYSTEM SET imgembed.inference_server = 'http://127.0.0.1:8000'" in text
    assert "make triton-venv" in text
