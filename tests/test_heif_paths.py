"""HEIC and AVIF on every path into the database: the functions, embed_batch, a sync trigger,
backfill and the worker give the vector of the same pixels as PNG, and refuse hostile files with
the same SQLSTATE and message."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from pg_imgembed.client.worker import Options, Worker
from tests import heif_images as hi
from tests.helpers import embed, load_tiny, sql_error, vector
from tests.images import photo_like, png


def phone_like_heic() -> tuple[bytes, bytes]:
    """A lossless HEIC in 64-pixel tiles, turned by irot + EXIF 6, with a thumbnail and a second
    image; and the PNG of the same upright pixels."""
    stored = photo_like(160, 120, seed=21)
    data = hi.heic(stored, lossless=True, tile_size=64, orientation=6, thumbnails=(48,), extra=(photo_like(32, 24),))
    return data, png(stored.transpose(Image.Transpose.ROTATE_270))


def web_avif() -> tuple[bytes, bytes]:
    """A lossy AVIF turned by irot, and the PNG of libavif's own (turned) pixels."""
    data = hi.avif(photo_like(160, 120, seed=22), orientation=6)
    return data, png(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


FILES = {"heic": phone_like_heic, "avif": web_avif}


def paths(conn, dsn, data: bytes) -> dict[str, np.ndarray]:
    """The vector each path writes for ``data`` (tables made here; the worker runs once)."""
    out = {"img_embedding": embed(conn, data),
           "vector_embedding": vector(conn.execute("SELECT vector_embedding('tiny', %s)::text", (data,)).fetchone()[0])}
    (texts,) = conn.execute("SELECT imgembed.embed_batch('tiny', %s::bytea[])::text[]", ([data, data],)).fetchone()
    out["embed_batch"] = vector(texts[1])
    for table, mode in (("sync_t", "sync"), ("async_t", "async"), ("backfill_t", None)):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, photo bytea, embedding vector(4))")
        if mode:
            conn.execute("SELECT imgembed.create_embedding_trigger(%s, 'photo', 'embedding', mode => %s)", (table, mode))
        conn.execute(f"INSERT INTO {table} (id, photo) VALUES (1, %s)", (data,))
    conn.execute("CALL imgembed.backfill('backfill_t', 'photo', 'embedding', 'tiny')")
    Worker(dsn, Options(once=True)).run()
    for table, key in (("sync_t", "trigger"), ("backfill_t", "backfill"), ("async_t", "worker")):
        out[key] = vector(conn.execute(f"SELECT embedding::text FROM {table}").fetchone()[0])
    return out


@pytest.mark.parametrize("kind", FILES)
def test_every_path_gives_the_vector_of_the_same_pixels_as_png(conn, dsn, kind):
    load_tiny(conn)
    data, reference = FILES[kind]()
    want = embed(conn, reference)
    for path, got in paths(conn, dsn, data).items():
        np.testing.assert_array_equal(got, want, err_msg=path)


def test_runtime_lists_the_formats_and_their_libraries(conn):
    (runtime,) = conn.execute("SELECT imgembed.runtime()").fetchone()
    assert sorted(runtime["formats"]) == ["AVIF", "BMP", "GIF", "HEIC/HEIF", "JPEG", "PNG", "TIFF", "WebP"]  # jsonb sorts keys
    assert runtime["formats"]["AVIF"].startswith("libavif ")
    assert runtime["formats"]["HEIC/HEIF"].startswith("libheif ")
    assert runtime["pi_heif"] == runtime["packages"]["pi_heif"]["version"]


@pytest.fixture(scope="module")
def hostile() -> dict[str, tuple[bytes, str, str]]:
    grid = hi.heic(photo_like(512, 384, seed=9), quality=50, tile_size=128, thumbnails=(96,))
    cases = hi.hostile_cases(grid, hi.avif(photo_like(256, 192, seed=9)))
    cases["heic with 1025 items"] = (hi.thousand_tiles(), "54000", "HEIF image exceeds a libheif security limit: ")
    return cases


def test_hostile_files_get_the_same_error_on_every_path(conn, dsn, hostile):
    load_tiny(conn)
    conn.execute("CREATE TABLE sync_t (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('sync_t', 'photo', 'embedding')")
    conn.execute("CREATE TABLE async_t (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('async_t', 'photo', 'embedding', mode => 'async')")
    conn.execute("CREATE TABLE backfill_t (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    names = sorted(hostile)
    for i, name in enumerate(names):
        data, sqlstate, message = hostile[name]
        errors = {"img_embedding": sql_error(conn, "SELECT img_embedding(%s)", (data,)),
                  "embed_batch": sql_error(conn, "SELECT imgembed.embed_batch('tiny', %s::bytea[])", ([data],)),
                  "trigger": sql_error(conn, "INSERT INTO sync_t VALUES (%s, %s)", (i, data))}
        conn.execute("INSERT INTO backfill_t (id, photo) VALUES (%s, %s)", (i, data))
        errors["backfill"] = sql_error(conn, "CALL imgembed.backfill('backfill_t', 'photo', 'embedding', 'tiny')")
        conn.execute("DELETE FROM backfill_t")
        primary = {path: err.diag.message_primary for path, err in errors.items()}
        # CALL keeps PL/Python's form, "pg_imgembed: <message>" (README, Errors): it commits, so no wrapper
        primary["backfill"] = primary["backfill"].removeprefix("pg_imgembed: ")
        for path, err in errors.items():
            assert (err.sqlstate, primary[path][:len(message)]) == (sqlstate, message), (name, path)
            assert primary[path] == primary["img_embedding"], (name, path)
        conn.execute("INSERT INTO async_t (id, photo) VALUES (%s, %s)", (i, data))
    worker = Worker(dsn, Options(once=True))
    worker.run()
    assert (worker.done, worker.failed) == (0, len(names))
    recorded = dict(conn.execute("SELECT (row_key->>'id')::int, message FROM imgembed.errors").fetchall())
    for i, name in enumerate(names):
        _, _, message = hostile[name]
        assert recorded[i].startswith("worker: " + message), name
    # the backend survived all of it
    assert embed(conn, png(photo_like(40, 30))).shape == (4,)
