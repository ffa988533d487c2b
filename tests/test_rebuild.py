"""Pipelines stored by earlier versions: they keep working, and imgembed.rebuild_model re-emits them
with this version's preprocessing prefix, keeping their generation only where the vectors measure
the same.

The "before" pipelines are built by the pipeline builder of 0.4.0 as released (its package from
the release commit), so what is rebuilt is exactly what users have stored.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import numpy as np
import onnx
import onnxruntime as ort
import psycopg
import pytest

from pg_imgembed.image.model_config import parse_config
from pg_imgembed.image.pipeline import build_pipeline, compare_pipelines, rebuild_prefix
from pg_imgembed.image.pipeline_spec import FORMAT, METADATA_KEY
from pg_imgembed.store.model_store import SAME_VECTORS_TOLERANCE
from tests import clip_models, images, onnx_models
from tests.fidelity_models import patch_net
from tests.helpers import TINY_CONFIG, embed, load_model, sql_error
from tests.released import PIPELINE_0_4_0, pipeline_builder

PHOTOS = [images.jpeg(images.photo_like(80, 60, seed=i)) for i in range(3)]
BGR_FEATURES = {"preprocess": {**TINY_CONFIG["preprocess"], "channel_order": "BGR"}, "output": {"pooling": "mean", "normalize": False}}
CASES = {  # name: (plain model, config)
    "nchw": (onnx_models.conv_net(), TINY_CONFIG),
    "nhwc": (onnx_models.conv_net(layout="NHWC"), TINY_CONFIG),
    "bgr-feature-map": (onnx_models.conv_net(output="feature_map"), BGR_FEATURES),
    "bgr-nhwc": (onnx_models.conv_net(layout="NHWC"), {"preprocess": {**TINY_CONFIG["preprocess"], "channel_order": "BGR"}}),
    "rescale-only": (onnx_models.conv_net(), {"preprocess": {"resample": "bilinear", "mean": None, "std": None}}),
    "no-arithmetic": (onnx_models.conv_net(), {"preprocess": {"resample": "bilinear", "rescale": None, "mean": None, "std": None}}),
    "vit-224": (patch_net(224, 32, seed=5), {"template": "vit", "output": {"pooling": "auto"}}),
}


@pytest.fixture(scope="module")
def released_builder(tmp_path_factory):
    """0.4.0's pipeline builder: (plain model, config dict) -> pipeline bytes."""
    try:
        with pipeline_builder(PIPELINE_0_4_0, tmp_path_factory.mktemp("release")) as builder:
            yield builder
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"needs git and the release commit {PIPELINE_0_4_0}")


def released(builder, case: str) -> bytes:
    return builder(*CASES[case])


def _config(config: dict):
    from pg_imgembed.image.templates import expand_template

    return parse_config(expand_template(config))


def prefix_ops(pipeline: bytes) -> list[str]:
    """The node types before the model's own nodes."""
    nodes = onnx.load_from_string(pipeline).graph.node
    return [n.op_type for n in nodes[:next(i for i, n in enumerate(nodes) if n.output[0] == "pg_imgembed/pixels") + 1]]


def run(pipeline: bytes, pixels: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(pipeline, providers=["CPUExecutionProvider"]).run(["embedding"], {"image": pixels})[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_released_pipeline_rebuilds_to_what_this_version_builds(released_builder, case):
    plain, config = CASES[case]
    old = released(released_builder, case)
    assert "Sub" in prefix_ops(old) or "Mul" in prefix_ops(old) or case == "no-arithmetic"
    rebuilt = rebuild_prefix(old)
    assert rebuilt is not None and rebuild_prefix(rebuilt) is None  # once is enough
    fresh = build_pipeline(plain, _config(config))
    assert json.loads({p.key: p.value for p in onnx.load_from_string(rebuilt).metadata_props}[METADATA_KEY])["format"] == FORMAT
    assert prefix_ops(rebuilt) == prefix_ops(fresh)
    assert "Sub" not in prefix_ops(rebuilt) and "Div" not in prefix_ops(rebuilt)
    size = onnx.load_from_string(old).graph.input[0].type.tensor_type.shape.dim[1].dim_value
    pixels = np.random.default_rng(1).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    np.testing.assert_array_equal(run(rebuilt, pixels), run(fresh, pixels))  # the same graph as a fresh build
    difference, cosine = compare_pipelines(old, rebuilt)
    assert difference <= SAME_VECTORS_TOLERANCE and cosine > 0.999999, (difference, cosine)


def test_the_new_prefix_does_the_arithmetic_of_the_config():
    """Against float64 numpy: rescale, mean, std in RGB order, then BGR, then the layout."""
    pre = _config(CASES["bgr-feature-map"][1]).preprocess
    pixels = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    graph = onnx.load_from_string(build_pipeline(*CASES["bgr-feature-map"][:1], _config(CASES["bgr-feature-map"][1])))
    prefix = onnx.utils.Extractor(graph).extract_model(["image"], ["pg_imgembed/pixels"])
    got = ort.InferenceSession(prefix.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": pixels})[0]
    want = ((pixels * pre.rescale - np.array(pre.mean)) / np.array(pre.std))[..., ::-1].transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


@pytest.fixture
def stored_old(conn, released_builder):
    """A model as 0.4.0 stored it, embedding a column that is current."""
    load_model(conn, "tiny", released(released_builder, "nchw"))
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'tiny')")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO items VALUES (%s, %s)", list(enumerate(PHOTOS)))
    return conn


def model_row(conn, name="tiny"):
    return conn.execute("SELECT sha256, generation FROM imgembed.model_store WHERE name = %s", (name,)).fetchone()


def test_rebuild_model_keeps_the_generation_of_the_same_vectors(stored_old):
    conn = stored_old
    sha_before, generation = model_row(conn)
    before = [embed(conn, p, "tiny") for p in PHOTOS]
    row = conn.execute("SELECT * FROM imgembed.rebuild_model('tiny')").fetchone()
    model, rebuilt, old_sha, new_sha, new_generation, same, difference, cosine = row
    assert (model, rebuilt, old_sha, same, new_generation) == ("tiny", True, sha_before, True, generation)
    assert model_row(conn) == (new_sha, generation) and new_sha != sha_before
    assert 0 <= difference <= SAME_VECTORS_TOLERANCE and cosine > 0.999999
    stored = bytes(conn.execute("SELECT onnx FROM imgembed.model_store WHERE name = 'tiny'").fetchone()[0])
    assert "Sub" not in prefix_ops(stored)
    for photo, old in zip(PHOTOS, before):
        np.testing.assert_allclose(embed(conn, photo, "tiny"), old, rtol=0, atol=1e-6)
    assert conn.execute("SELECT stale, produced_by = current_sha256 FROM imgembed.vector_lineage").fetchone() == (False, False)
    # A second rebuild finds nothing to do.
    assert conn.execute("SELECT rebuilt, sha256, generation FROM imgembed.rebuild_model('tiny')").fetchone() == (
        False, new_sha, generation)


def test_a_rebuild_that_changes_the_vectors_is_a_new_generation(stored_old, released_builder):
    """The spec is what a rebuild follows: a pipeline whose graph disagrees with its spec (here its
    recorded mean) comes back with other vectors, so its columns show stale."""
    model = onnx.load_from_string(released(released_builder, "nchw"))
    props = {p.key: p.value for p in model.metadata_props}
    spec = json.loads(props[METADATA_KEY])
    spec["config"]["preprocess"]["mean"] = [0.2, 0.2, 0.2]
    onnx.helper.set_model_props(model, {**props, METADATA_KEY: json.dumps(spec)})
    load_model(stored_old, "tiny", model.SerializeToString(), replace=True)
    stored_old.execute("CALL imgembed.backfill('items', 'photo', 'embedding', 'tiny')")
    _, generation = model_row(stored_old)
    row = stored_old.execute("SELECT rebuilt, same_vectors, generation, max_difference FROM imgembed.rebuild_model('tiny')").fetchone()
    assert row[:2] == (True, False) and row[2] > generation and row[3] > 1e-3
    assert stored_old.execute("SELECT stale FROM imgembed.vector_lineage").fetchone() == (True,)


def test_a_text_tower_stays_paired_with_a_rebuilt_image_tower(conn, released_builder):
    clip = clip_models.image_tower(dims=64)
    old = released_builder(clip, {"template": "clip"})
    load_model(conn, "clip", old)
    conn.execute("""SELECT * FROM imgembed.load_text_model('clip', %s, %s, '{"tokenizer": {"max_length": 77}}')""",
                 (clip_models.text_tower(dims=64), (clip_models.tokenizer_dir() / "tokenizer.json").read_bytes()))
    before = conn.execute("SELECT text_embedding('clip', 'a photo of a cat')::text").fetchone()
    assert conn.execute("SELECT same_vectors FROM imgembed.rebuild_model('clip')").fetchone() == (True,)
    assert conn.execute("SELECT text_embedding('clip', 'a photo of a cat')::text").fetchone() == before


def test_rebuild_model_is_for_model_administrators(conn, dsn, released_builder):
    load_model(conn, "tiny", released(released_builder, "nchw"))
    role = f"app_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, user=role), autocommit=True) as app:
            err = sql_error(app, "SELECT * FROM imgembed.rebuild_model('tiny')")
            assert err.sqlstate == "42501"
        assert model_row(conn)[0] == conn.execute("SELECT sha256 FROM imgembed.models WHERE name = 'tiny'").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM imgembed.rebuild_model(NULL)").fetchone() == (0,)
        err = sql_error(conn, "SELECT * FROM imgembed.rebuild_model('nope')")
        assert err.sqlstate == "42704" and err.diag.message_primary == 'model "nope" does not exist'
    finally:
        conn.execute(f"DROP ROLE {role}")


def test_an_int8_copy_of_a_released_pipeline_rebuilds(released_builder, tmp_path):
    """The quantizer left the prefix in float (it excludes pg_imgembed's own nodes); a rebuild
    replaces it and keeps every quantized node."""
    from pg_imgembed.client.quantize import quantize_pipeline
    from pg_imgembed.image.model_config import ModelConfig
    from pg_imgembed.image.tower import ImageTower

    old = released_builder(patch_net(224, 32, seed=3), CASES["vit-224"][1])
    (tmp_path / "fp32.onnx").write_bytes(old)
    fp32 = ImageTower(old, ModelConfig(), threads=1)
    calibration = [fp32.preprocess(fp32.decode(images.jpeg(images.photo_like(320, 240, seed=i)), max_pixels=10**8)) for i in range(8)]
    int8 = quantize_pipeline(tmp_path, fp32, calibration, reduce_range=False, derived={"model": "x"})
    rebuilt = rebuild_prefix(int8)
    assert rebuilt is not None
    ops = [n.op_type for n in onnx.load_from_string(rebuilt).graph.node]
    assert ops.count("QuantizeLinear") == [n.op_type for n in onnx.load_from_string(int8).graph.node].count("QuantizeLinear") > 0
    assert "Sub" not in prefix_ops(rebuilt)
    _, cosine = compare_pipelines(int8, rebuilt)
    assert cosine > 0.999


def test_the_cli_rebuilds_every_model_it_can_see(conn, dsn, released_builder):
    load_model(conn, "old", released(released_builder, "nhwc"))
    load_model(conn, "new", CASES["nchw"][0], TINY_CONFIG)  # built by this version
    sha_old, generation = model_row(conn, "old")
    done = subprocess.run([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, "models", "rebuild"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    new_sha, kept = model_row(conn, "old")
    assert kept == generation
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"new: already current (sha256 {model_row(conn, 'new')[0][:12]})")
    assert lines[1].startswith(f"old: rebuilt, sha256 {sha_old[:12]} -> {new_sha[:12]}; vectors unchanged (largest difference ")
    assert lines[1].endswith(f"of their length), generation {generation} kept") and len(lines) == 2
    missing = subprocess.run([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, "models", "rebuild", "nope"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and 'model "nope" does not exist' in missing.stderr


def test_a_stored_model_that_refers_to_external_data_is_not_rebuilt(conn, released_builder):
    """Stored before 0.4.0 refused such models: the rebuild checks the bytes before any session
    (a session would read the server file)."""
    from tests.test_trust import external

    model = onnx.load_from_string(released(released_builder, "nchw"))
    model.graph.initializer.append(external("leak", "postgresql.conf", [4]))
    load_model(conn, "tiny", released(released_builder, "nchw"))
    conn.execute("UPDATE imgembed.model_store SET onnx = %s, bytes = length(%s) WHERE name = 'tiny'", [model.SerializeToString()] * 2)
    err = sql_error(conn, "SELECT * FROM imgembed.rebuild_model('tiny')")
    assert err.sqlstate == "22023" and err.diag.message_primary.startswith('the model refers to external data (tensor "leak"')
