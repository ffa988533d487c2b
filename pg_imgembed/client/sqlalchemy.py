"""SQLAlchemy 2 integration: typed SQL functions, an embedding trigger declared with the table, and
the model helpers of ``pg_imgembed.client`` on an engine, connection or session.

    class Photo(Base):
        __tablename__ = "photos"
        id: Mapped[int] = mapped_column(primary_key=True)
        photo: Mapped[bytes]
        embedding = mapped_column(Vector(dims))

    embedding_trigger(Photo.__table__, "photo", "embedding")   # created by create_all, fetched after flush
    session.scalars(select(Photo).order_by(Photo.embedding.cosine_distance(img_embedding(query))).limit(5))

It lives in ``pg_imgembed.client`` (not beside the server modules, which ``make install`` copies
into the server's runtime) and needs the psycopg 3 driver (``postgresql+psycopg://``) only for
``load_model`` and ``model_dimensions``; the SQL constructs work with any PostgreSQL driver,
async ones included.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from pgvector.sqlalchemy import Vector
from sqlalchemy import Column, Connection, Engine, FetchedValue, LargeBinary, Table, bindparam, event, func, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import Function
from sqlalchemy.types import UserDefinedType

from ..errors import InvalidConfig
from . import models
from .embeddings import image_bytes
from .models import ConfigArgument, LoadedModel, ProgressCallback

__all__ = ["VectorArray", "embed_batch", "embedding_trigger", "img_embedding", "load_model", "model_dimensions",
           "text_embedding", "vector_embedding"]


class VectorArray(UserDefinedType[list[Any]]):
    """``vector[]``: a list of vectors (each as pgvector's ``Vector`` type gives it), NULL elements as None.
    Drivers that know the type hand over a list; others the array's text, parsed here."""

    cache_ok = True
    _element = Vector()
    _item = re.compile(r'"(\[[^\]]*\])"|NULL')

    def get_col_spec(self, **kw: Any) -> str:
        return "VECTOR[]"

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        element = self._element.result_processor(dialect, coltype)

        def process(value: Any) -> list[Any] | None:
            if value is None:
                return None
            items = [m.group(1) for m in self._item.finditer(value)] if isinstance(value, str) else value
            return [None if item is None else element(item) for item in items]
        return process


def image_argument(image: Any) -> ColumnElement[Any]:
    """A SQL expression as is; bytes, a path or a PIL image as a bytea parameter."""
    if isinstance(image, ColumnElement):
        return image
    return bindparam(None, image_bytes(image), type_=LargeBinary)


def img_embedding(image: Any, model: str | None = None) -> Function[Any]:
    """``img_embedding(image[, model])``: the default model's vector, or a named model's."""
    args = (image_argument(image),) if model is None else (image_argument(image), model)
    return func.img_embedding(*args, type_=Vector())


def vector_embedding(model: str, image: Any) -> Function[Any]:
    """``vector_embedding(model, image)``: Oracle's argument order."""
    return func.vector_embedding(model, image_argument(image), type_=Vector())


def text_embedding(model: str, text: Any) -> Function[Any]:
    """``text_embedding(model, text)``: a text in the space of the model's image vectors (its text tower)."""
    return func.text_embedding(model, text, type_=Vector())


def embed_batch(model: str, images: Any) -> Function[Any]:
    """``imgembed.embed_batch(model, images)``: many images in one call; ``images`` is a SQL array
    expression (``func.array_agg(Photo.photo)``) or a list of bytes, paths or PIL images."""
    if not isinstance(images, ColumnElement):
        images = bindparam(None, [image_bytes(i) for i in images], type_=ARRAY(LargeBinary))
    return func.imgembed.embed_batch(model, images, type_=VectorArray())


def table_column(table: Table, column: str | Column[Any]) -> Column[Any]:
    name = column if isinstance(column, str) else column.name
    if name not in table.c:
        raise InvalidConfig(f'table "{table.name}" has no column "{name}"')
    return table.c[name]


def embedding_trigger(table: Table, image_column: str | Column[Any], vector_column: str | Column[Any], *,
                      model: str | None = None, on_error: str = "error", mode: str = "sync") -> None:
    """Declare an embedding trigger with the table: ``metadata.create_all`` creates it
    (``imgembed.create_embedding_trigger``) right after the table, ``drop_all`` drops it (and the
    column's queued jobs and lineage) before the table. The vector column is marked as set by the
    server, so the ORM reads it back after INSERT (RETURNING) and reloads it after an UPDATE.
    Call it where the table is defined, before the first flush."""
    image, vector = table_column(table, image_column), table_column(table, vector_column)
    arguments = {"image": image.name, "vector": vector.name, "model": model, "on_error": on_error, "mode": mode}

    def create(target: Table, connection: Connection, **kw: Any) -> None:
        connection.execute(text("SELECT imgembed.create_embedding_trigger(CAST(:table AS regclass), :image, :vector, "
                                ":model, :on_error, :mode)"),
                           {"table": connection.dialect.identifier_preparer.format_table(target), **arguments})

    def drop(target: Table, connection: Connection, **kw: Any) -> None:
        connection.execute(text("SELECT imgembed.drop_embedding_trigger(CAST(:table AS regclass), :vector)"),
                           {"table": connection.dialect.identifier_preparer.format_table(target), "vector": vector.name})

    event.listen(table, "after_create", create)
    event.listen(table, "before_drop", drop)
    vector.server_default = FetchedValue()
    vector.server_onupdate = FetchedValue(for_update=True)


@contextmanager
def psycopg_connection(bind: Engine | Connection | Session) -> Iterator[psycopg.Connection[Any]]:
    """The psycopg connection under an engine (a pooled one, for the call), a connection or a session."""
    if isinstance(bind, Engine):
        with bind.begin() as connection, psycopg_connection(connection) as conn:
            yield conn
        return
    connection = bind.connection() if isinstance(bind, Session) else bind
    driver = connection.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise InvalidConfig(f"this needs the psycopg driver (postgresql+psycopg://), not {type(driver).__module__}")
    yield driver


def model_dimensions(bind: Engine | Connection | Session, model: str | None = None) -> int:
    """The dimensions of a model's vectors (the default model's without a name): ``Vector(dims)``."""
    with psycopg_connection(bind) as conn:
        return models.model_dimensions(conn, model)


def load_model(bind: Engine | Connection | Session, name: str, source: str | os.PathLike[str] | bytes, *,
               config: ConfigArgument = None, template: str | None = None, replace: bool = False,
               default: bool = False, progress: ProgressCallback | None = None) -> LoadedModel:
    """Load a model from an ONNX file, a model directory or bytes (``pg_imgembed.client.load_model``)."""
    with psycopg_connection(bind) as conn:
        return models.load_model(conn, name, source, config=config, template=template, replace=replace,
                                 default=default, progress=progress)
