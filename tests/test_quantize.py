"""pg-imgembed models quantize: an INT8 copy of a stored pipeline, calibrated on the user's images,
stored with its provenance, reported on held-out images, and never silently mixed with its source."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from pg_imgembed.client.quantize import quantize_model
from pg_imgembed.errors import InvalidConfig
from tests import images
from tests.fidelity_models import patch_net
from tests.helpers import embed, sql_error

CONFIG = {"preprocess": {"resize": {"shortest_edge": 224}, "center_crop": {"height": 224, "width": 224},
                         "mean": [0.5] * 3, "std": [0.5] * 3}}


@pytest.fixture
def photos(conn):
    """A small conv net, and a table of photo-like images to calibrate and measure on."""
    conn.execute("SELECT imgembed.load_model('conv', %s, %s::jsonb)", (patch_net(224, 64, seed=3), json.dumps(CONFIG)))
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(64))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'conv')")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO items (id, photo) VALUES (%s, %s)",
                        [(i, images.jpeg(images.photo_like(320, 240, seed=i))) for i in range(40)])
    return conn


def cli(dsn, *args):
    return subprocess.run([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, *map(str, args)], capture_output=True, text=True)


def test_quantize_end_to_end(dsn, photos):
    done = cli(dsn, "models", "quantize", "conv", "--as", "conv_int8", "--calibrate", "SELECT photo FROM items ORDER BY id",
               "--samples", "24", "--held-out", "16")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert re.fullmatch(r"quantized conv -> conv_int8: [\d.]+ MB -> [\d.]+ MB, sha256 [0-9a-f]{64}", out[0])
    assert out[1] == "calibrated on 24 images; measured on 16 held-out images:"
    cosine = re.fullmatch(r"  cosine to conv: min ([\d.]+), median ([\d.]+)", out[2])
    assert cosine and float(cosine[1]) > 0.95 and float(cosine[2]) >= float(cosine[1])
    assert re.fullmatch(r"  top-10 retrieval overlap with conv: [\d.]+", out[3])
    assert re.fullmatch(r"  inference, batch 1: [\d.]+ ms -> [\d.]+ ms \([\d.]+x\), on \S.*", out[4])

    row = photos.execute("SELECT dimensions, input, derived_from FROM imgembed.models WHERE name = 'conv_int8'").fetchone()
    assert row[:2] == (64, "NCHW 3x224x224")
    (source_sha,) = photos.execute("SELECT sha256 FROM imgembed.models WHERE name = 'conv'").fetchone()
    assert row[2]["model"] == "conv" and row[2]["sha256"] == source_sha
    assert row[2]["calibration"] == {"query": "SELECT photo FROM items ORDER BY id", "images": 24}
    (ops,) = photos.execute("SELECT bytes FROM imgembed.models WHERE name = 'conv_int8'").fetchone()
    assert ops > 0
    photo = images.jpeg(images.photo_like(300, 200, seed=99))
    a, b = embed(photos, photo, "conv"), embed(photos, photo, "conv_int8")
    assert float(a @ b) > 0.95 and not np.array_equal(a, b)


def test_the_int8_copy_never_mixes_into_its_sources_column(dsn, photos):
    quantize_model(photos, "conv", "conv_int8", "SELECT photo FROM items", samples=16, held_out=8)
    err = sql_error(photos, "CALL imgembed.backfill('items', 'photo', 'embedding', 'conv_int8')")
    assert err.sqlstate == "55000" and 'bound to model "conv", not "conv_int8"' in err.diag.message_primary
    # Replacing the source by its INT8 copy under the same name makes the column stale.
    quantize_model(photos, "conv", "conv", "SELECT photo FROM items", samples=16, held_out=8, replace=True)
    assert photos.execute("SELECT stale FROM imgembed.vector_lineage WHERE vector_column = 'embedding'").fetchone() == (True,)
    assert photos.execute("SELECT derived_from->>'model' FROM imgembed.models WHERE name = 'conv'").fetchone() == ("conv",)


@pytest.mark.parametrize("query, message", [
    ("SELECT photo FROM items WHERE false", "the calibration query gave 0 usable images; quantizing needs at least 16"),
    ("SELECT photo FROM items LIMIT 10", "the calibration query gave 10 usable images; quantizing needs at least 16"),
    ("SELECT id FROM items", "the calibration query's first column is int, not bytea images"),
])
def test_too_few_or_no_images_are_refused(dsn, photos, query, message):
    with pytest.raises(InvalidConfig, match=re.escape(message)):
        quantize_model(photos, "conv", "q", query)
    assert photos.execute("SELECT count(*) FROM imgembed.models WHERE name = 'q'").fetchone() == (0,)
    done = cli(dsn, "models", "quantize", "conv", "--as", "q", "--calibrate", query)
    assert done.returncode == 2 and done.stderr.startswith(f"pg-imgembed: error: {message}")


def test_a_pipeline_stored_by_0_1_0_with_its_opset_twice_quantizes(dsn, photos):
    import onnx

    (stored,) = photos.execute("SELECT onnx FROM imgembed.model_store WHERE name = 'conv'").fetchone()
    model = onnx.load_from_string(bytes(stored))
    model.opset_import.append(onnx.helper.make_opsetid("", model.opset_import[0].version))  # as 0.1.0 built them
    photos.execute("SELECT imgembed.load_model('old', %s)", (model.SerializeToString(),))
    report = quantize_model(photos, "old", "old_int8", "SELECT photo FROM items", samples=16, held_out=8)
    assert report.cosine_median > 0.95


def test_too_small_a_sample_is_refused(photos):
    with pytest.raises(InvalidConfig, match="calibrate on at least 8 images and measure on at least 8, not 4 and 64"):
        quantize_model(photos, "conv", "q", "SELECT photo FROM items", samples=4)
