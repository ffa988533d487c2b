"""pg-imgembed: build, load (file, model directory, template), list, export round trip, drop, catalog."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import psycopg
import pytest

from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, embed

PHOTO = images.jpeg(images.photo_like(80, 60, seed=2))
# A ViT-style Hugging Face processor config for a 16x16 model.
HF_CONFIG = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 16, "width": 16},
             "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
             "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def cli(dsn, *args, ok=True):
    done = subprocess.run([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, *map(str, args)],
                          capture_output=True, text=True)
    assert (done.returncode == 0) == ok, done.stderr
    return done


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(onnx_models.conv_net())
    return path


def test_load_list_export_reload_drop(dsn, conn, onnx_file, tmp_path):
    out = cli(dsn, "models", "load", "tiny", onnx_file, "--config", json.dumps(TINY_CONFIG), "--default").stdout
    assert out.startswith("loaded tiny: 4 dimensions, input NCHW 3x16x16, sha256 ")
    assert "tiny" in cli(dsn, "models", "list").stdout

    exported = tmp_path / "exported.onnx"
    cli(dsn, "models", "export", "tiny", exported)
    (sha,) = conn.execute("SELECT sha256 FROM imgembed.models WHERE name = 'tiny'").fetchone()
    assert hashlib.sha256(exported.read_bytes()).hexdigest() == sha

    cli(dsn, "models", "load", "again", exported)  # database -> file -> database
    (again,) = conn.execute("SELECT sha256 FROM imgembed.models WHERE name = 'again'").fetchone()
    assert again == sha
    np.testing.assert_array_equal(embed(conn, PHOTO, "again"), embed(conn, PHOTO, "tiny"))

    cli(dsn, "models", "drop", "again")
    assert conn.execute("SELECT count(*) FROM imgembed.models").fetchone()[0] == 1


def test_export_in_chunks_reassembles_large_models(dsn, conn, tmp_path, monkeypatch):
    from pg_imgembed.client import cli as cli_module

    conn.execute("SELECT imgembed.load_model('wide', %s, %s::jsonb)",
                 (onnx_models.conv_net(extra_dims=4000), json.dumps(TINY_CONFIG)))
    monkeypatch.setattr(cli_module, "CHUNK", 1000)  # many round trips
    assert cli_module.main(["--dsn", dsn, "models", "export", "wide", str(tmp_path / "w.onnx")]) == 0
    (sha,) = conn.execute("SELECT sha256 FROM imgembed.models WHERE name = 'wide'").fetchone()
    assert hashlib.sha256((tmp_path / "w.onnx").read_bytes()).hexdigest() == sha


@pytest.mark.parametrize("layout", ["model.onnx", "onnx/model.onnx"])
def test_load_from_a_hugging_face_style_directory(dsn, conn, tmp_path, layout):
    (tmp_path / layout).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / layout).write_bytes(onnx_models.conv_net())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(HF_CONFIG))
    (tmp_path / "config.json").write_text("{}")
    cli(dsn, "models", "load", "vitlike", "--from-dir", tmp_path)
    (pre,) = conn.execute("SELECT preprocess FROM imgembed.models").fetchone()
    assert pre["mean"] == [0.5, 0.5, 0.5] and pre["resample"] == "bilinear"
    assert embed(conn, PHOTO, "vitlike").shape == (4,)


def test_directory_without_processor_config_needs_a_template(dsn, tmp_path):
    (tmp_path / "model.onnx").write_bytes(onnx_models.conv_net(224, 224))
    err = cli(dsn, "models", "load", "m", "--from-dir", tmp_path, ok=False).stderr
    assert f"pg-imgembed: error: {tmp_path} has no preprocessor_config.json" in err
    assert "hint: Name a template" in err
    assert "loaded m: 4 dimensions" in cli(dsn, "models", "load", "m", "--from-dir", tmp_path, "--template", "clip").stdout


def test_build_offline_then_load_keeps_the_file(dsn, conn, onnx_file, tmp_path):
    pipeline = tmp_path / "pipeline.onnx"
    out = cli(dsn, "models", "build", onnx_file, "--config", json.dumps(TINY_CONFIG), "-o", pipeline).stdout
    sha = hashlib.sha256(pipeline.read_bytes()).hexdigest()
    assert sha in out
    cli(dsn, "models", "load", "built", pipeline)
    assert conn.execute("SELECT sha256 FROM imgembed.models").fetchone()[0] == sha


def test_catalog_lists_the_known_models(dsn, conn):
    out = cli(dsn, "models", "catalog").stdout
    for model_id in ("Qdrant/resnet50-onnx", "Qdrant/clip-ViT-B-32-vision", "google/vit-base-patch16-224",
                     "facebook/convnext-tiny-224", "openai/clip-vit-base-patch32", "facebook/dinov2-small"):
        assert model_id in out
    (n,) = conn.execute("SELECT count(*) FROM imgembed.catalog WHERE model_id = 'facebook/dinov2-small' "
                        "AND template = 'dinov2' AND dimensions = 384").fetchone()
    assert n == 1


def test_catalog_download_offline_names_the_alternative(dsn):
    err = cli(dsn, "models", "load", "r", "--catalog", "Qdrant/resnet50-onnx", ok=False).stderr
    assert "pg-imgembed: error:" in err
    assert "--from-dir DIR" in err


def test_repository_without_onnx_says_how_to_export(dsn):
    err = cli(dsn, "models", "load", "v", "--catalog", "google/vit-base-patch16-224", ok=False).stderr
    assert "google/vit-base-patch16-224 ships no ONNX file" in err
    assert "optimum-cli export onnx" in err


def test_database_errors_are_reported_without_traceback(dsn, onnx_file):
    err = cli(dsn, "models", "drop", "nope", ok=False).stderr
    assert err.startswith('pg-imgembed: error: model "nope" does not exist')
    assert "Traceback" not in err


def test_templates_in_sql_and_config(dsn, conn):
    names = [r[0] for r in conn.execute("SELECT name FROM imgembed.templates ORDER BY name")]
    assert names == ["clip", "convnext", "dinov2", "keras-caffe", "torchvision-resnet", "vit"]
    conn.execute("SELECT imgembed.load_model('k', %s, '{\"template\": \"keras-caffe\"}')",
                 (onnx_models.conv_net(224, 224, layout="NHWC"),))
    (pre,) = conn.execute("SELECT preprocess FROM imgembed.models WHERE name = 'k'").fetchone()
    assert (pre["channel_order"], pre["layout"], pre["resample"], pre["rescale"]) == ("BGR", "NHWC", "nearest", None)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown template 'resnet'"):
        conn.execute("SELECT imgembed.load_model('x', %s, '{\"template\": \"resnet\"}')", (onnx_models.conv_net(),))
