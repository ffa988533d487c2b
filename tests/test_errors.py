"""The errors users see: SQLSTATE, message, hint. Asserted verbatim: they are the interface."""

import json

import pytest

from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, load_tiny, sql_error


def test_undecodable_bytes(conn):
    load_tiny(conn)
    err = sql_error(conn, "SELECT img_embedding(%s)", (b"this is not an image at all",))
    assert err.sqlstate == "22P03"
    assert err.diag.message_primary == "" + (
        "cannot decode image (27 bytes): not a known image format"
    )
    assert err.diag.message_detail == 'model "tiny"'
    assert err.diag.message_hint == "Supported formats: JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, HEIC/HEIF."
    assert "Traceback" not in err.diag.message_primary


def test_truncated_jpeg_names_the_format(conn):
    load_tiny(conn)
    data = images.jpeg(images.photo_like(200, 150))[:600]
    err = sql_error(conn, "SELECT img_embedding(%s)", (data,))
    assert err.sqlstate == "22P03"
    assert err.diag.message_primary.startswith("cannot decode image (600 bytes, looks like JPEG): JPEG ")


def test_formats_outside_the_supported_list_are_refused(conn):
    """Pillow can read more (ICO, PPM, EPS via Ghostscript...), but every decoder is attack surface."""
    load_tiny(conn)
    err = sql_error(conn, "SELECT img_embedding(%s)", (images.encode(images.photo_like(), "PPM"),))
    assert err.sqlstate == "22P03"
    assert err.diag.message_primary.endswith("not a known image format")


def test_unknown_model(conn):
    load_tiny(conn)
    err = sql_error(conn, "SELECT img_embedding(%s, 'resnet5')", (images.png(),))
    assert err.sqlstate == "42704"
    assert err.diag.message_primary == 'model "resnet5" does not exist'
    assert err.diag.message_hint == (
        "Loaded models: tiny. Load one with imgembed.load_model(name, onnx_bytes, config)."
    )


def test_no_default_model(conn):
    load_tiny(conn, default=False)
    err = sql_error(conn, "SELECT img_embedding(%s)", (images.png(),))
    assert err.sqlstate == "55000"
    assert err.diag.message_primary == "no default model is set"
    assert err.diag.message_hint == (
        "Call imgembed.set_default_model('name'), or name the model: img_embedding(image, 'name'). "
        "Loaded models: tiny."
    )


def test_image_over_max_pixels(conn):
    load_tiny(conn)
    conn.execute("SET imgembed.max_image_pixels = 1000")
    err = sql_error(conn, "SELECT img_embedding(%s)", (images.png(images.photo_like(50, 40)),))
    assert err.sqlstate == "54000"
    assert err.diag.message_primary == "" + (
        "image of 50x40 pixels (2000 pixels) exceeds imgembed.max_image_pixels (1000)"
    )
    assert err.diag.message_hint.startswith("Downscale the image before storing it")
    conn.execute("RESET imgembed.max_image_pixels")
    assert conn.execute("SELECT img_embedding(%s) IS NOT NULL", (images.png(images.photo_like(50, 40)),)).fetchone()[0]


def test_decompression_bomb_is_rejected_before_decoding(conn):
    """A 30000x30000 PNG is 2.7 GB of pixels but a few hundred kB of bytes; the default guard
    (100 MP) rejects it from the header."""
    from PIL import Image

    load_tiny(conn)
    bomb = images.encode(Image.new("L", (30000, 30000)), "PNG", optimize=False)
    assert len(bomb) < 5_000_000
    err = sql_error(conn, "SELECT img_embedding(%s)", (bomb,))
    assert err.sqlstate == "54000"
    assert "30000x30000" in err.diag.message_primary


def test_bad_setting_value_is_refused_by_set(conn):
    load_tiny(conn)  # loads the settings module
    err = sql_error(conn, "SET imgembed.max_image_pixels = 'lots'")
    assert err.sqlstate == "22023"
    assert err.diag.message_primary == 'invalid value for parameter "imgembed.max_image_pixels": "lots"'
    err = sql_error(conn, "SET imgembed.max_image_pixels = 0")
    assert err.sqlstate == "22023"
    assert err.diag.message_primary == (
        '0 is outside the valid range for parameter "imgembed.max_image_pixels" (1 .. 1000000000)')


def test_a_bad_value_set_before_the_module_loaded_is_dropped(conn):
    conn.execute("SET imgembed.max_image_pixels = 'lots'")  # a placeholder until the first call
    load_tiny(conn)
    assert conn.execute("SHOW imgembed.max_image_pixels").fetchone()[0] == "100000000"


def test_load_model_rejects_garbage_bytes(conn):
    err = sql_error(conn, "SELECT imgembed.load_model('junk', %s)", (b"\x00not onnx" * 10,))
    assert err.sqlstate == "22023"
    assert err.diag.message_primary.startswith("onnxruntime cannot load the model (90 bytes): ")
    assert "not a PyTorch .pt" in err.diag.message_hint
    assert conn.execute("SELECT count(*) FROM imgembed.model_store").fetchone()[0] == 0


@pytest.mark.parametrize("model, message", [
    (onnx_models.two_input_model,
     "model has 2 inputs (a, b); an image embedding model takes exactly one image tensor"),
    (onnx_models.grayscale_model,
     "model input 'x' has shape ['N', 1, 8, 8]: neither axis 1 (NCHW) nor axis 3 (NHWC) has 3 (RGB) channels"),
    (onnx_models.nan_model, "the model produced NaN or infinite values for this image"),
])
def test_load_model_rejects_unusable_models(conn, model, message):
    err = sql_error(conn, "SELECT imgembed.load_model('bad', %s)", (model(),))
    assert err.diag.message_primary == "" + message
    assert conn.execute("SELECT count(*) FROM imgembed.model_store").fetchone()[0] == 0


def test_load_model_rejects_output_too_wide_for_pgvector(conn):
    err = sql_error(conn, "SELECT imgembed.load_model('wide', %s, %s::jsonb)",
                    (onnx_models.conv_net(extra_dims=16001), json.dumps(TINY_CONFIG)))
    assert err.diag.message_primary == "" + (
        "the model's output has 16001 dimensions; pgvector's vector holds at most 16000"
    )


def test_load_model_rejects_bad_config(conn):
    err = sql_error(conn, "SELECT imgembed.load_model('m', %s, %s::jsonb)",
                    (onnx_models.conv_net(), json.dumps({"preprocess": {"resise": 3}})))
    assert err.sqlstate == "22023"
    assert err.diag.message_primary == "unknown preprocess key 'resise'"
    assert err.diag.message_hint.startswith("Known preprocess keys: background, center_crop, channel_order,")


def test_load_model_needs_resize_for_dynamic_input(conn):
    err = sql_error(conn, "SELECT imgembed.load_model('m', %s)", (onnx_models.conv_net("H", "W"),))
    assert err.diag.message_primary == "the model accepts any image size, so the config must say how to resize"


def test_load_model_rejects_size_mismatch(conn):
    config = {"preprocess": {"resize": {"height": 20, "width": 20}}}
    err = sql_error(conn, "SELECT imgembed.load_model('m', %s, %s::jsonb)", (onnx_models.conv_net(), json.dumps(config)))
    assert err.diag.message_primary == "" + (
        "preprocessing produces 20x20 images but the model input 'pixel_values' is 16x16"
    )


def test_load_model_null_arguments(conn):
    err = sql_error(conn, "SELECT imgembed.load_model('m', NULL)")
    assert err.sqlstate == "22004"
    assert err.diag.message_primary == 'ONNX bytes for model "m" are NULL'


def test_duplicate_model_needs_replace(conn):
    load_tiny(conn)
    err = sql_error(conn, "SELECT imgembed.load_model('tiny', %s, %s::jsonb)", (onnx_models.conv_net(), json.dumps(TINY_CONFIG)))
    assert err.sqlstate == "42710"
    assert err.diag.message_primary == 'model "tiny" already exists'
    assert err.diag.message_hint.startswith("Pass replace => true")


def test_errors_leave_the_connection_usable(conn):
    load_tiny(conn)
    for _ in range(3):
        sql_error(conn, "SELECT img_embedding(%s)", (b"junk",))
    assert conn.execute("SELECT vector_dims(img_embedding(%s))", (images.png(),)).fetchone()[0] == 4


def test_missing_runtime_is_a_clear_error(conn):
    conn.execute("SET imgembed.runtime_dir = '/nonexistent/runtime'")
    err = sql_error(conn, "SELECT imgembed.runtime()")
    assert err.sqlstate == "58P01"
    assert err.diag.message_hint.startswith("Run make install, or have a superuser set imgembed.runtime_dir")
    assert err.diag.message_primary == "" + (
        "cannot import the Python runtime from /nonexistent/runtime: No module named 'pg_imgembed'"
    )


# ---------------------------------------------------------------- clean errors

def test_expected_errors_carry_no_python_traceback_or_class_name(conn):
    load_tiny(conn)
    for query, args in [("SELECT img_embedding(%s)", (b"junk",)), ("SELECT img_embedding(%s, 'nosuch')", (images.png(),)),
                        ("SELECT imgembed.embed_batch('tiny', ARRAY[%s::bytea])", (b"junk",)),
                        ("SELECT imgembed.set_default_model('nosuch')", None)]:
        err = sql_error(conn, query, args)
        assert not err.diag.message_primary.startswith("pg_imgembed:"), query
        assert "Traceback" not in (err.diag.context or "") and "PL/Python" not in (err.diag.context or ""), query


def test_a_bad_image_through_a_trigger_names_the_table_and_the_row(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding')")
    err = sql_error(conn, "INSERT INTO items VALUES (7, 'junk')")
    assert (err.sqlstate, err.diag.message_primary) == ("22P03", "cannot decode image (4 bytes): not a known image format")
    assert err.diag.message_detail == 'model "tiny"; table public.items; row {"id": 7}'
    assert err.diag.message_hint == "Supported formats: JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, HEIC/HEIF."
    assert "Traceback" not in (err.diag.context or "")
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)


def test_admin_bodies_refuse_roles_that_may_not_execute_the_admin_functions(conn, dsn):
    import psycopg

    conn.execute("CREATE ROLE app LOGIN")
    try:
        with psycopg.connect(dsn, user="app", autocommit=True) as app:
            err = sql_error(app, "SELECT * FROM imgembed._load_model('x', %s, NULL, false, true)", (onnx_models.conv_net(),))
            assert (err.sqlstate, err.diag.message_primary) == (
                "42501", "pg_imgembed: permission denied for function imgembed.load_model")
            assert sql_error(app, "SELECT imgembed._drop_model('tiny')").sqlstate == "42501"
            assert sql_error(app, "SELECT imgembed._set_default_model('tiny')").sqlstate == "42501"
            assert sql_error(app, "SELECT * FROM imgembed._rebuild_model('tiny')").sqlstate == "42501"
        conn.execute("GRANT EXECUTE ON FUNCTION imgembed.drop_model(text) TO app")  # the wrapper's grant opens the body
        with psycopg.connect(dsn, user="app", autocommit=True) as app:
            err = sql_error(app, "SELECT imgembed._drop_model('no such model')")
            assert err.sqlstate != "42501", err.diag.message_primary
    finally:
        conn.execute("DROP OWNED BY app; DROP ROLE app")


def test_an_oversized_image_and_a_too_long_text_share_a_limit_not_a_kind():
    from pg_imgembed.errors import ImageError, ImageTooLarge, InputTooLarge, TextTooLong

    assert issubclass(ImageTooLarge, ImageError) and issubclass(ImageTooLarge, InputTooLarge)
    assert not issubclass(TextTooLong, ImageError)  # on_error => 'null' absorbs unusable images, not texts
    assert ImageTooLarge.sqlstate == TextTooLong.sqlstate == "54000"
