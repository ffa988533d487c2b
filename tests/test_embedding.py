"""img_embedding / vector_embedding against an independent numpy computation."""

import numpy as np
import pytest
from PIL import Image

from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, embed, expected_tiny, load_model, load_tiny, sql_error, vector


def test_default_model_embedding_equals_numpy_reference(conn):
    load_tiny(conn)
    img = images.photo_like(64, 48)
    got = embed(conn, images.png(img))
    np.testing.assert_allclose(got, expected_tiny(img), atol=2e-6)
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-6)


def test_a_large_image_resized_in_bands_gives_the_reference_vector(conn):
    load_tiny(conn)
    img = images.photo_like(1536, 1024, seed=3)
    conn.execute("SET imgembed.intra_op_threads = 1")
    one_piece = embed(conn, images.png(img))
    np.testing.assert_allclose(one_piece, expected_tiny(img), atol=2e-6)
    conn.execute("SET imgembed.intra_op_threads = 2")  # one row at a time: the resize takes both threads
    np.testing.assert_array_equal(embed(conn, images.png(img)), one_piece)


def test_named_model_and_vector_embedding_agree(conn):
    load_tiny(conn, default=False)
    data = images.jpeg()
    by_name = embed(conn, data, "tiny")
    (oracle_style,) = conn.execute("SELECT vector_embedding('tiny', %s)::text", (data,)).fetchone()
    np.testing.assert_array_equal(by_name, vector(oracle_style))
    np.testing.assert_allclose(by_name, expected_tiny(Image.open(__import__("io").BytesIO(data))), atol=2e-6)


def test_unqualified_names_work_with_default_search_path(conn):
    load_tiny(conn)
    (path,) = conn.execute("SHOW search_path").fetchone()
    assert path == '"$user", public'
    (dims,) = conn.execute("SELECT vector_dims(img_embedding(%s))", (images.png(),)).fetchone()
    assert dims == onnx_models.OUT_CHANNELS


def test_null_image_gives_null(conn):
    load_tiny(conn)
    assert conn.execute("SELECT img_embedding(NULL::bytea), vector_embedding('tiny', NULL)").fetchone() == (None, None)


def test_vectors_are_bit_exact_through_text(conn):
    """The hex-float text path loses nothing: the stored float32s equal numpy's float32 result."""
    load_tiny(conn)
    img = images.photo_like(40, 40, seed=3)
    got = embed(conn, images.png(img))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected_tiny(img).astype(np.float32), rtol=0, atol=2e-6)


def test_similarity_search_orders_by_the_query_image(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    for i in range(6):
        data = images.png(images.photo_like(48, 48, seed=i))
        conn.execute("INSERT INTO items VALUES (%s, %s, img_embedding(%s))", (i, data, data))
    query = images.png(images.photo_like(48, 48, seed=4))
    (best,) = conn.execute(
        "SELECT id FROM items ORDER BY embedding <=> img_embedding(%s) LIMIT 1", (query,)
    ).fetchone()
    assert best == 4


@pytest.mark.parametrize("output", ["feature_map", "tokens"])
def test_feature_maps_and_tokens_are_pooled(conn, output):
    load_model(conn, "m", onnx_models.conv_net(output=output), TINY_CONFIG)
    img = images.photo_like(32, 32, seed=5)
    got = embed(conn, images.png(img), "m")
    arr = np.asarray(img.resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    feats = onnx_models.conv_features(((arr - TINY_CONFIG["preprocess"]["mean"]) / TINY_CONFIG["preprocess"]["std"]).transpose(2, 0, 1))
    want = feats.mean(axis=(1, 2)) if output == "feature_map" else feats[:, 0, 0]  # CLS = first token
    np.testing.assert_allclose(got, onnx_models.l2(want), atol=2e-6)


def test_nhwc_model_matches_nchw_model(conn):
    load_model(conn, "nchw", onnx_models.conv_net(), TINY_CONFIG)
    load_model(conn, "nhwc", onnx_models.conv_net(layout="NHWC"), TINY_CONFIG)
    data = images.jpeg()
    np.testing.assert_allclose(embed(conn, data, "nchw"), embed(conn, data, "nhwc"), atol=1e-6)
    (layout,) = conn.execute("SELECT input FROM imgembed.models WHERE name = 'nhwc'").fetchone()
    assert layout == "NHWC 3x16x16"


def test_query_image_repeated_per_row_is_embedded_once(conn):
    """Without an index, `ORDER BY e <=> img_embedding(q)` calls the function once per row."""
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int, e vector(4))")
    conn.execute("INSERT INTO items SELECT g, img_embedding(%s) FROM generate_series(1, 50) g", (images.png(),))
    counted = "SELECT (imgembed.runtime()->>'images_embedded')::int"
    (before,) = conn.execute(counted).fetchone()
    query = images.png(images.photo_like(seed=9))
    (n,) = conn.execute("SELECT count(*) FROM (SELECT id FROM items ORDER BY e <=> img_embedding(%s)) s",
                        (query,)).fetchone()
    assert n == 50
    assert conn.execute(counted).fetchone()[0] == before + 1
    # A setting change is part of the memo's key: the lowered limit applies at once.
    conn.execute("SET imgembed.max_image_pixels = 1")
    assert sql_error(conn, "SELECT img_embedding(%s)", (query,)).sqlstate == "54000"
