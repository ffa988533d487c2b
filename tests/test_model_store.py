"""The model table: what it records, defaults, replacement seen by every session, permissions."""

import hashlib
import json

import numpy as np
import psycopg

from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, embed, load_model, load_tiny, sql_error

PHOTO = images.png(images.photo_like(40, 30, seed=1))


def test_models_view_describes_the_model(conn):
    onnx = onnx_models.conv_net()
    load_model(conn, "tiny", onnx, TINY_CONFIG)
    conn.execute("SELECT imgembed.set_default_model('tiny')")
    row = conn.execute(
        "SELECT name, dimensions, input, preprocess, output, bytes, sha256, loaded_at <= now(), is_default FROM imgembed.models"
    ).fetchone()
    name, dims, geometry, preprocess, output, size, sha, loaded, default = row
    (stored,) = conn.execute("SELECT onnx FROM imgembed.model_store").fetchone()
    # The table holds the pipeline model built around the plain one.
    assert (name, dims, geometry, size, sha, loaded, default) == (
        "tiny", 4, "NCHW 3x16x16", len(stored), hashlib.sha256(stored).hexdigest(), True, True)
    assert len(stored) > len(onnx)
    # The stored config is the resolved one: what runs is what is shown.
    assert preprocess["resize"] == {"height": 16, "width": 16}
    assert preprocess["mean"] == TINY_CONFIG["preprocess"]["mean"]
    assert preprocess["layout"] == "NCHW"
    assert output == {"name": None, "pooling": "auto", "normalize": True}


def test_load_model_returns_the_row(conn):
    row = load_model(conn, "tiny", onnx_models.conv_net(), TINY_CONFIG)
    assert row["name"] == "tiny" and row["dimensions"] == 4 and row["is_default"] is False


def test_dimensions_come_from_running_the_model(conn):
    row = load_model(conn, "wide", onnx_models.conv_net(extra_dims=300), TINY_CONFIG)
    assert row["dimensions"] == 300


def test_only_one_default(conn):
    load_tiny(conn, "a")
    load_tiny(conn, "b")
    assert conn.execute("SELECT array_agg(name) FROM imgembed.models WHERE is_default").fetchone()[0] == ["b"]
    conn.execute("SELECT imgembed.set_default_model('a')")
    assert conn.execute("SELECT array_agg(name) FROM imgembed.models WHERE is_default").fetchone()[0] == ["a"]


def test_replacing_a_model_takes_effect_in_other_sessions(conn, dsn):
    load_tiny(conn)
    with psycopg.connect(dsn, autocommit=True) as other:
        before = embed(other, PHOTO)  # other session caches a session for "tiny"
        # Same architecture, different preprocessing -> a different vector.
        config = {"preprocess": {"resample": "nearest", "mean": [0.5] * 3, "std": [0.5] * 3}}
        load_model(conn, "tiny", onnx_models.conv_net(), config, replace=True)
        after = embed(other, PHOTO)
        assert not np.allclose(before, after)
        np.testing.assert_array_equal(after, embed(conn, PHOTO))
        (cached,) = other.execute("SELECT (imgembed.runtime()->>'cached_sessions')::int").fetchone()
        assert cached == 1  # the stale session was dropped, not kept beside the new one


def test_replacing_with_new_weights_changes_sha_and_vectors(conn):
    load_tiny(conn)
    before = embed(conn, PHOTO)
    load_model(conn, "tiny", onnx_models.conv_net(output="tokens"), TINY_CONFIG, replace=True)
    assert not np.allclose(before, embed(conn, PHOTO))


def test_replacing_a_model_used_by_a_trigger_with_other_dimensions_is_refused(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (photo bytea, e vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'e')")
    err = sql_error(conn, "SELECT imgembed.load_model('tiny', %s, %s::jsonb, replace => true)",
                    (onnx_models.conv_net(extra_dims=8), json.dumps(TINY_CONFIG)))
    assert err.sqlstate == "42804"
    assert err.diag.message_primary == (
        'replacing model "tiny" would change its output from 4 to 8 dimensions, '
        "but embedding triggers on public.items use it"
    )


def test_session_is_loaded_once_per_connection(conn):
    load_tiny(conn)
    for _ in range(3):
        embed(conn, PHOTO)
    assert conn.execute("SELECT (imgembed.runtime()->>'cached_sessions')::int").fetchone()[0] == 1


def test_identical_models_share_one_session(conn):
    for name in "ab":
        load_tiny(conn, name, default=False)
        embed(conn, PHOTO, name)
    assert conn.execute("SELECT (imgembed.runtime()->>'cached_sessions')::int").fetchone()[0] == 1


def test_session_cache_is_bounded(conn):
    for name, resample in zip("abc", ["nearest", "bilinear", "bicubic"]):
        load_model(conn, name, onnx_models.conv_net(), {"preprocess": {"resample": resample}})
    conn.execute("SET imgembed.max_cached_models = 2")
    for name in "abc":
        embed(conn, PHOTO, name)
    assert conn.execute("SELECT (imgembed.runtime()->>'cached_sessions')::int").fetchone()[0] == 2


def test_intra_op_threads_setting(conn):
    load_tiny(conn)
    conn.execute("SET imgembed.intra_op_threads = 3")
    runtime = conn.execute("SELECT imgembed.runtime()").fetchone()[0]
    assert runtime["settings"]["threads"] == 3
    embed(conn, PHOTO)
    conn.execute("SET imgembed.intra_op_threads = 0")  # 0: half the cores, 1 to 4
    assert 1 <= conn.execute("SELECT imgembed.runtime()").fetchone()[0]["settings"]["threads"] <= 4


def test_execution_provider_setting_on_a_cpu_runtime(conn):
    """The CPU build of onnxruntime (what CI installs): auto and cpu run on the CPU, cuda is an
    error that says what to install, and a typo names the choices. Nothing is left half-loaded."""
    load_tiny(conn)
    runtime = lambda: conn.execute("SELECT imgembed.runtime()").fetchone()[0]
    assert runtime()["settings"]["execution_provider"] == "auto"
    expected = embed(conn, PHOTO)
    assert runtime()["sessions_run_on"] == ["cpu"]
    assert "CUDAExecutionProvider" not in runtime()["providers"]

    conn.execute("SET imgembed.execution_provider = 'CUDA'")  # any case
    err = sql_error(conn, "SELECT img_embedding(%s)", (PHOTO,))
    assert err.sqlstate == "55000"
    assert err.diag.message_primary.startswith(
        "execution provider cuda was asked for, but this onnxruntime 1.")
    assert "has none (it has " in err.diag.message_primary
    assert err.diag.message_hint.startswith('Install onnxruntime-gpu (for the server: make install ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]")')
    err = sql_error(conn, "SELECT imgembed.embed_batch('tiny', ARRAY[%s::bytea])", (PHOTO,))
    assert err.sqlstate == "55000"

    err = sql_error(conn, "SET imgembed.execution_provider = 'gpu'")
    assert (err.sqlstate, err.diag.message_primary, err.diag.message_hint) == (
        "22023", 'invalid value for parameter "imgembed.execution_provider": "gpu"', 'Available values: auto, cpu, cuda.')

    conn.execute("SET imgembed.execution_provider = cpu")  # a new session for the new setting
    np.testing.assert_array_equal(embed(conn, PHOTO), expected)
    assert runtime()["cached_sessions"] == 1 and runtime()["sessions_run_on"] == ["cpu"]


def test_decode_buffer_setting_bounds_the_memory_kept_between_images(conn):
    load_tiny(conn)
    embed(conn, PHOTO)
    blocks = lambda: conn.execute("SELECT (imgembed.runtime()->>'decode_buffer_blocks')::int").fetchone()[0]
    assert blocks() == 4  # 64 MB in Pillow's 16 MB blocks
    conn.execute("SET imgembed.decode_buffer_mb = 0")
    embed(conn, PHOTO)
    assert blocks() == 0
    err = sql_error(conn, "SET imgembed.decode_buffer_mb = 5000")
    assert (err.sqlstate, err.diag.message_primary) == (
        "22023", '5000 is outside the valid range for parameter "imgembed.decode_buffer_mb" (0 .. 4096)')


def test_drop_model(conn):
    load_tiny(conn)
    conn.execute("SELECT imgembed.drop_model('tiny')")
    assert conn.execute("SELECT count(*) FROM imgembed.models").fetchone()[0] == 0
    assert sql_error(conn, "SELECT img_embedding(%s)", (PHOTO,)).sqlstate == "55000"


def test_model_bytes_are_stored_uncompressed_out_of_line(conn):
    (storage,) = conn.execute(
        "SELECT attstorage FROM pg_attribute WHERE attrelid = 'imgembed.model_store'::regclass AND attname = 'onnx'"
    ).fetchone()
    assert storage == "e"


def test_model_table_is_dumped_with_the_database(conn):
    (config,) = conn.execute(
        "SELECT array_agg(c::regclass::text ORDER BY c::regclass::text) FROM pg_extension, unnest(extconfig) c "
        "WHERE extname = 'pg_imgembed'"
    ).fetchone()
    assert config == ["imgembed.bindings", "imgembed.errors", "imgembed.errors_id_seq", "imgembed.lineage", "imgembed.model_generation",
                      "imgembed.model_store", "imgembed.model_usage", "imgembed.text_model_store"]


def test_ordinary_users_embed_but_cannot_manage_models(conn, dsn):
    load_tiny(conn)
    conn.execute("CREATE ROLE app LOGIN")
    try:
        with psycopg.connect(dsn, user="app", autocommit=True) as app:
            assert embed(app, PHOTO).shape == (4,)
            err = sql_error(app, "SELECT imgembed.load_model('x', %s)", (onnx_models.conv_net(),))
            assert err.sqlstate == "42501"
            assert sql_error(app, "SELECT imgembed.set_default_model('tiny')").sqlstate == "42501"
    finally:
        conn.execute("DROP OWNED BY app; DROP ROLE app")
