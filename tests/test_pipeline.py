"""Pipeline models: the stored ONNX file alone determines the embedding."""

import hashlib
import io
import json

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from pg_imgembed.image.model_config import parse_config
from pg_imgembed.image.pipeline import build_pipeline
from pg_imgembed.image.pipeline_spec import METADATA_KEY
from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, embed, load_model, sql_error

PHOTO = images.jpeg(images.photo_like(80, 60, seed=4))


def stored_model(conn, name):
    return conn.execute("SELECT onnx FROM imgembed.model_store WHERE name = %s", (name,)).fetchone()[0]


def test_stored_pipeline_runs_alone_in_onnxruntime(conn):
    """Resize per the file's metadata, feed uint8 pixels: same vector as img_embedding."""
    load_model(conn, "tiny", onnx_models.conv_net(), TINY_CONFIG)
    pipeline = stored_model(conn, "tiny")
    model = onnx.load_from_string(pipeline)
    spec = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    resize = spec["config"]["preprocess"]["resize"]
    assert resize == {"height": 16, "width": 16} and spec["config"]["preprocess"]["resample"] == "bilinear"
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["embedding"]

    img = Image.open(io.BytesIO(PHOTO)).convert("RGB").resize((16, 16), Image.Resampling.BILINEAR)
    session = ort.InferenceSession(pipeline, providers=["CPUExecutionProvider"])
    (alone,) = session.run(["embedding"], {"image": np.asarray(img)[None]})
    np.testing.assert_allclose(alone[0], embed(conn, PHOTO, "tiny"), atol=1e-6)


def test_export_and_reload_keeps_sha256_and_vectors(conn):
    load_model(conn, "tiny", onnx_models.conv_net(), TINY_CONFIG)
    exported = stored_model(conn, "tiny")
    row = load_model(conn, "copy", exported)  # a pipeline model needs no config
    assert row["sha256"] == hashlib.sha256(exported).hexdigest()
    assert conn.execute("SELECT count(DISTINCT sha256) FROM imgembed.models").fetchone()[0] == 1
    np.testing.assert_array_equal(embed(conn, PHOTO, "copy"), embed(conn, PHOTO, "tiny"))
    assert conn.execute("SELECT a.preprocess = b.preprocess FROM imgembed.models a, imgembed.models b "
                        "WHERE a.name = 'tiny' AND b.name = 'copy'").fetchone()[0]


def test_pipeline_built_outside_the_database_loads_as_is(conn):
    pipeline = build_pipeline(onnx_models.conv_net(layout="NHWC"), parse_config(TINY_CONFIG))
    row = load_model(conn, "nhwc", pipeline)
    assert row["sha256"] == hashlib.sha256(pipeline).hexdigest()
    assert row["input"] == "NHWC 3x16x16"


def test_pipeline_with_a_config_is_refused(conn):
    pipeline = build_pipeline(onnx_models.conv_net(), parse_config(TINY_CONFIG))
    err = sql_error(conn, "SELECT imgembed.load_model('p', %s, '{}'::jsonb)", (pipeline,))
    assert err.sqlstate == "22023"
    assert err.diag.message_primary == "this is a pipeline model: its preprocessing is inside the file"


def test_bgr_and_pooling_and_no_normalisation_run_in_the_graph(conn):
    config = {"preprocess": {**TINY_CONFIG["preprocess"], "channel_order": "BGR"},
              "output": {"pooling": "mean", "normalize": False}}
    load_model(conn, "fm", onnx_models.conv_net(output="feature_map"), config)
    img = Image.open(io.BytesIO(PHOTO)).convert("RGB").resize((16, 16), Image.Resampling.BILINEAR)
    arr = (np.asarray(img, np.float64) / 255 - TINY_CONFIG["preprocess"]["mean"]) / TINY_CONFIG["preprocess"]["std"]
    want = onnx_models.conv_features(arr[..., ::-1].transpose(2, 0, 1)).mean(axis=(1, 2))
    got = embed(conn, PHOTO, "fm")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert abs(np.linalg.norm(got) - 1) > 1e-3  # not normalised, as configured


def test_a_pipeline_lists_each_opset_domain_once():
    import onnx

    model = onnx.load_from_string(build_pipeline(onnx_models.conv_net(), parse_config(TINY_CONFIG)))
    domains = [entry.domain for entry in model.opset_import]
    assert len(domains) == len(set(domains)) == 1
