"""The Python API from application code: psycopg functions and the SQLAlchemy 2 integration,
against the real server (as a role that is not a superuser where it matters)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import psycopg
import pytest
from PIL import Image
from sqlalchemy import URL, LargeBinary, MetaData, String, create_engine, func, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pg_imgembed.client import embed, embed_batch, export_model, load_model, model_dimensions, search
from pg_imgembed.client import sqlalchemy as imgsa
from pg_imgembed.errors import InvalidConfig, UnknownModel
from tests import images, onnx_models
from tests.helpers import TINY_CONFIG, load_tiny
from tests.helpers import embed as embed_text_vector
from tests.test_cli import HF_CONFIG

PHOTOS = {f"p{i}": images.jpeg(images.photo_like(64, 48, seed=i)) for i in range(6)}


def sa_url(dsn: str, driver: str = "postgresql+psycopg", **override: str) -> URL:
    """The test database's libpq DSN as an SQLAlchemy URL (a socket directory goes in the query)."""
    params = {**psycopg.conninfo.conninfo_to_dict(dsn), **override}
    return URL.create(driver, username=params.pop("user", None), password=params.pop("password", None),
                      port=int(params.pop("port")) if "port" in params else None, database=params.pop("dbname", None),
                      query={k: str(v) for k, v in params.items()})


def engine_for(dsn: str, **override: str):
    return create_engine(sa_url(dsn, **override))


# ------------------------------------------------------------------ psycopg


def test_embed_takes_bytes_a_path_or_a_pil_image_and_returns_numpy(conn, tmp_path):
    load_tiny(conn)
    photo = PHOTOS["p1"]
    (tmp_path / "p.jpg").write_bytes(photo)
    expected = embed_text_vector(conn, photo)
    for given in (photo, tmp_path / "p.jpg", str(tmp_path / "p.jpg")):
        got = embed(conn, given)
        assert got.dtype == np.float32 and got.shape == (4,)
        np.testing.assert_array_equal(got, expected)
    png_vector = embed(conn, Image.open(tmp_path / "p.jpg"))  # sent as PNG: the same pixels
    np.testing.assert_allclose(png_vector, expected, atol=1e-6)
    np.testing.assert_array_equal(embed(conn, photo, "tiny"), expected)
    with pytest.raises(InvalidConfig, match="an image is bytes, a path or a PIL image, not int"):
        embed(conn, 42)  # type: ignore[arg-type]


def test_embed_batch_keeps_positions_and_nulls(conn):
    load_tiny(conn)
    vectors = embed_batch(conn, [PHOTOS["p1"], PHOTOS["p2"]], "tiny")
    assert len(vectors) == 2
    np.testing.assert_array_equal(vectors[1], embed_text_vector(conn, PHOTOS["p2"], "tiny"))


def test_search_returns_the_nearest_rows_with_distances(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding')")
    for i, (name, photo) in enumerate(PHOTOS.items()):
        conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (i, name, photo))
    rows = search(conn, "items", "embedding", PHOTOS["p3"], k=3, columns=["id", "name"])
    assert [r["name"] for r in rows][0] == "p3" and len(rows) == 3
    assert rows[0]["distance"] == pytest.approx(0, abs=1e-6)
    assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)
    everything = search(conn, "public.items", "embedding", PHOTOS["p3"], k=1, metric="l2")
    assert set(everything[0]) == {"id", "name", "photo", "distance"}  # all but the vector column
    with pytest.raises(psycopg.errors.UndefinedTable):
        search(conn, "nosuch", "embedding", PHOTOS["p3"])


def test_search_uses_an_hnsw_index_and_embeds_the_query_once(conn):
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("INSERT INTO items SELECT g, NULL, ARRAY[random(), random(), random(), random()]::vector "
                 "FROM generate_series(1, 2000) g")
    conn.execute("CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops)")
    conn.execute("ANALYZE items")
    conn.execute("SET enable_seqscan = off")
    captured: list[str] = []
    import pg_imgembed.client.embeddings as api

    real = api.psycopg.Cursor.execute

    def explain(self, query, params=None, **kw):
        if isinstance(query, psycopg.sql.Composable) and "WITH q" in query.as_string(conn):
            plan = real(self, psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + query, params, **kw).fetchone()
            captured.append(json.dumps(plan))
        return real(self, query, params, **kw)

    api.psycopg.Cursor.execute = explain
    try:
        rows = search(conn, "items", "embedding", PHOTOS["p1"], k=5, columns=["id"])
    finally:
        api.psycopg.Cursor.execute = real
    assert len(rows) == 5
    plan = captured[0]
    assert '"Index Name": "items_embedding_idx"' in plan
    assert '"CTE Name": "q"' in plan and plan.count('"Function Name"') <= 1


def test_load_export_dimensions_from_python(conn, tmp_path):
    model_dir = tmp_path / "hf"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(onnx_models.conv_net())
    (model_dir / "preprocessor_config.json").write_text(json.dumps(HF_CONFIG))
    seen: list[tuple[int, int]] = []
    loaded = load_model(conn, "fromdir", model_dir, default=True, progress=lambda done, total: seen.append((done, total)))
    assert (loaded.name, loaded.dimensions, loaded.input) == ("fromdir", 4, "NCHW 3x16x16")
    assert seen and seen[-1][0] == seen[-1][1]
    assert model_dimensions(conn) == 4 == model_dimensions(conn, "fromdir")
    again = load_model(conn, "fromfile", tmp_path / "hf" / "model.onnx", config=TINY_CONFIG)  # same session: reused upload table
    assert again.sha256 != loaded.sha256
    size, sha = export_model(conn, "fromdir", tmp_path / "out.onnx")
    assert sha == loaded.sha256 and (tmp_path / "out.onnx").stat().st_size == size
    with pytest.raises(UnknownModel, match='model "nosuch" does not exist') as missing:
        export_model(conn, "nosuch", tmp_path / "x.onnx")
    assert missing.value.hint == "Loaded models: fromdir, fromfile."
    with pytest.raises(UnknownModel):
        model_dimensions(conn, "nosuch")
    with pytest.raises(InvalidConfig, match="does not exist"):
        load_model(conn, "x", tmp_path / "missing.onnx")
    with pytest.raises(psycopg.errors.DuplicateObject):
        load_model(conn, "fromdir", model_dir)
    # the failed load left no upload table behind: the transaction rolled back
    assert conn.execute("SELECT to_regclass('pg_temp.pg_imgembed_upload')").fetchone()[0] is None


# ------------------------------------------------------------------ SQLAlchemy


class Base(DeclarativeBase):
    pass


def photo_class(dims: int, **trigger):
    """A fresh mapped class per test (its metadata holds the trigger's DDL)."""
    from pgvector.sqlalchemy import Vector

    class Local(DeclarativeBase):
        metadata = MetaData()

    class Photo(Local):
        __tablename__ = "photos"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String)
        photo: Mapped[bytes | None] = mapped_column(LargeBinary)
        embedding = mapped_column(Vector(dims))

    imgsa.embedding_trigger(Photo.__table__, "photo", "embedding", **trigger)
    return Local, Photo


@pytest.fixture
def app_role(conn):
    """A plain login role that may create tables in public: what an application connects as."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {name}")
    yield name
    conn.execute(f"DROP OWNED BY {name}")
    conn.execute(f"DROP ROLE {name}")


def test_sqlalchemy_orm_flow(conn, dsn, app_role):
    load_tiny(conn)
    engine = engine_for(dsn, user=app_role)
    dims = imgsa.model_dimensions(engine)
    assert dims == 4
    Local, Photo = photo_class(dims)
    Local.metadata.create_all(engine)
    (trigger_model,) = conn.execute("SELECT model FROM imgembed.embedding_triggers() WHERE tbl = 'photos'::regclass").fetchone()
    assert trigger_model == "tiny"

    with Session(engine) as session:
        objects = [Photo(name=name, photo=photo) for name, photo in PHOTOS.items()]
        session.add_all(objects)
        session.flush()  # the trigger's vectors come back with RETURNING
        first = objects[0]
        assert first.embedding is not None
        np.testing.assert_allclose(np.asarray(first.embedding), embed_text_vector(conn, PHOTOS["p0"]), atol=1e-6)
        session.commit()

        first.photo = PHOTOS["p5"]  # an UPDATE of the image: the trigger re-embeds, the ORM reloads
        session.commit()
        np.testing.assert_allclose(np.asarray(first.embedding), embed_text_vector(conn, PHOTOS["p5"]), atol=1e-6)

        nearest = session.scalars(select(Photo).order_by(Photo.embedding.cosine_distance(imgsa.img_embedding(PHOTOS["p3"])))
                                  .limit(2)).all()
        assert nearest[0].name == "p3"
        vector = session.scalar(select(imgsa.vector_embedding("tiny", PHOTOS["p2"])))
        np.testing.assert_allclose(np.asarray(vector), embed_text_vector(conn, PHOTOS["p2"]), atol=1e-6)
        batch = session.scalar(select(imgsa.embed_batch("tiny", [PHOTOS["p1"], PHOTOS["p2"]])))
        assert len(batch) == 2 and len(batch[0]) == 4
        np.testing.assert_allclose(np.asarray(batch[1]), np.asarray(vector), atol=1e-6)
        aggregated = session.scalar(select(imgsa.embed_batch("tiny", func.array_agg(Photo.photo))))
        assert len(aggregated) == len(PHOTOS)

        session.execute(insert(Photo).values(id=100, name="core", photo=PHOTOS["p4"]))
        direct = session.scalar(select(Photo.embedding).where(Photo.id == 100))
        np.testing.assert_allclose(np.asarray(direct), embed_text_vector(conn, PHOTOS["p4"]), atol=1e-6)
        session.rollback()

    Local.metadata.drop_all(engine)
    assert conn.execute("SELECT to_regclass('photos')").fetchone()[0] is None
    engine.dispose()


def test_sqlalchemy_async_trigger_and_drop_all_removes_its_jobs(conn, dsn):
    load_tiny(conn)
    engine = engine_for(dsn)
    Local, Photo = photo_class(4, mode="async")
    Local.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Photo(name="queued", photo=PHOTOS["p1"]))
        session.commit()
    assert conn.execute("SELECT count(*) FROM imgembed.queue").fetchone()[0] == 1
    Local.metadata.drop_all(engine)  # drop_embedding_trigger first: no orphaned jobs
    assert conn.execute("SELECT count(*) FROM imgembed.queue").fetchone()[0] == 0
    engine.dispose()


def test_sqlalchemy_embedding_trigger_names_a_missing_column():
    from sqlalchemy import Column, Integer, Table

    table = Table("t", MetaData(), Column("id", Integer, primary_key=True))
    with pytest.raises(InvalidConfig, match='table "t" has no column "photo"'):
        imgsa.embedding_trigger(table, "photo", "embedding")


def test_sqlalchemy_load_model_and_async_engine(conn, dsn, tmp_path):
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    engine = engine_for(dsn)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(onnx_models.conv_net())
    loaded = imgsa.load_model(engine, "viasa", onnx, config=TINY_CONFIG, default=True)
    assert loaded.dimensions == 4 == imgsa.model_dimensions(engine, "viasa")
    engine.dispose()

    async def query() -> list[float]:
        aengine = create_async_engine(sa_url(dsn))
        async with aengine.connect() as aconn:
            value = await aconn.scalar(select(imgsa.img_embedding(PHOTOS["p1"])))
        await aengine.dispose()
        return value

    np.testing.assert_allclose(np.asarray(asyncio.run(query())), embed_text_vector(conn, PHOTOS["p1"]), atol=1e-6)


def test_search_embeds_the_query_with_the_model_that_made_the_column(conn):
    load_tiny(conn)  # the default model
    other = {"preprocess": {"resample": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}}
    conn.execute("SELECT imgembed.load_model('other', %s, %s::jsonb)", (onnx_models.conv_net(), json.dumps(other)))
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', 'other')")
    conn.execute("INSERT INTO items VALUES (1, %s)", (PHOTOS["p1"],))
    assert search(conn, "items", "embedding", PHOTOS["p1"], k=1)[0]["distance"] == pytest.approx(0, abs=1e-6)
    assert search(conn, "items", "embedding", PHOTOS["p1"], k=1, model="tiny")[0]["distance"] > 1e-4
    conn.execute("SELECT imgembed.drop_embedding_trigger('items', 'embedding')")  # lineage still names it
    assert search(conn, "items", "embedding", PHOTOS["p1"], k=1)[0]["distance"] == pytest.approx(0, abs=1e-6)
