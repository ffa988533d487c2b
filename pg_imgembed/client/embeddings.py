"""Embeddings and similarity search from Python, for code without an ORM (psycopg 3).

Images go to the server as bytes (an application role needs no file access on the server);
vectors come back as float32 numpy arrays, read in pgvector's binary format. The server does all
the work: these functions only build the query.
"""

from __future__ import annotations

import io
import os
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import psycopg
from pgvector import Vector
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.rows import dict_row
from psycopg.types import TypeInfo

from ..errors import InvalidConfig

if TYPE_CHECKING:
    from PIL.Image import Image

Metric = Literal["cosine", "l2", "inner_product"]
DISTANCE_OPERATORS: dict[str, str] = {"cosine": "<=>", "l2": "<->", "inner_product": "<#>"}


# The model that made a column's vectors: its trigger's, else the one lineage records.
COLUMN_MODEL = """SELECT coalesce(
    (SELECT model FROM imgembed.embedding_triggers() WHERE tbl = %(table)s::regclass AND vector_column = %(column)s LIMIT 1),
    (SELECT model FROM imgembed.vector_lineage WHERE tbl = %(table)s::regclass AND vector_column = %(column)s)) AS model"""


# The vector type of each connection, looked up once rather than at every call.
VECTOR_TYPES: weakref.WeakKeyDictionary[psycopg.Connection[Any], TypeInfo] = weakref.WeakKeyDictionary()


class NumpyVectorLoader(Loader):
    format = Format.BINARY

    def load(self, data: Any) -> np.ndarray:
        return Vector.from_binary(bytes(data)).to_numpy()


def image_bytes(image: bytes | bytearray | memoryview | str | os.PathLike[str] | Image) -> bytes:
    """What is sent to the server: the bytes as given, a file's bytes, or a PIL image as PNG (lossless)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as f:
            return f.read()
    if hasattr(image, "save") and hasattr(image, "mode"):
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()
    raise InvalidConfig(f"an image is bytes, a path or a PIL image, not {type(image).__name__}")


def vector_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[dict[str, Any]]:
    """A cursor whose vector (and vector[]) values arrive as numpy arrays; the connection's own
    adapters are left as they are."""
    info = VECTOR_TYPES.get(conn)
    if info is None:
        info = TypeInfo.fetch(conn, "vector")
        if info is None:
            raise InvalidConfig("the vector type is not installed in this database", hint="CREATE EXTENSION pg_imgembed CASCADE")
        VECTOR_TYPES[conn] = info
    cur = conn.cursor(row_factory=dict_row)
    info.register(cur)  # vector[] as lists of its elements
    cur.adapters.register_loader(info.oid, NumpyVectorLoader)
    return cur


def model_call(function: str, image: sql.Composable, model: str | None) -> sql.Composable:
    if model is None:
        return sql.SQL("{}({})").format(sql.Identifier(function), image)
    return sql.SQL("{}({}, {})").format(sql.Identifier(function), image, sql.Literal(model))


def embed(conn: psycopg.Connection[Any], image: bytes | bytearray | memoryview | str | os.PathLike[str] | Image,
          model: str | None = None) -> np.ndarray:
    """The embedding of one image (``img_embedding``), with the default model or a named one."""
    with vector_cursor(conn) as cur:
        cur.execute(sql.SQL("SELECT {} AS v").format(model_call("img_embedding", sql.Placeholder(), model)),
                    (image_bytes(image),), binary=True)
        row = cur.fetchone()
    assert row is not None
    return row["v"]


def embed_batch(conn: psycopg.Connection[Any], images: Sequence[bytes | str | os.PathLike[str] | Image],
                model: str) -> list[np.ndarray | None]:
    """The embeddings of many images in one call (``imgembed.embed_batch``: decoding overlaps inference)."""
    with vector_cursor(conn) as cur:
        cur.execute("SELECT imgembed.embed_batch(%s, %s::bytea[]) AS v", (model, [image_bytes(i) for i in images]), binary=True)
        row = cur.fetchone()
    assert row is not None
    return list(row["v"])


def embed_text(conn: psycopg.Connection[Any], text: str, model: str) -> np.ndarray:
    """The embedding of a text with a model's text tower (``text_embedding``): the space of its images."""
    with vector_cursor(conn) as cur:
        cur.execute("SELECT text_embedding(%s, %s) AS v", (model, text), binary=True)
        row = cur.fetchone()
    assert row is not None
    return row["v"]


def search(conn: psycopg.Connection[Any], table: str, vector_column: str,
           query_image: bytes | bytearray | memoryview | str | os.PathLike[str] | Image, k: int = 10, *,
           model: str | None = None, columns: Sequence[str] | None = None, metric: Metric = "cosine") -> list[dict[str, Any]]:
    """The ``k`` rows nearest to an image, nearest first, each a dict of ``columns`` (default: all
    but the vector column) plus ``distance``. Without ``model``, the query is embedded with the
    model that made the column (its embedding trigger's, else the one lineage records, else the
    default model). The query vector is computed once, and the ``ORDER BY column <=> vector LIMIT k``
    shape lets an HNSW or IVFFlat index on the column answer."""
    return nearest(conn, table, vector_column, "img_embedding", image_bytes(query_image), k, model, columns, metric)


def search_text(conn: psycopg.Connection[Any], table: str, vector_column: str, text: str, k: int = 10, *,
                model: str | None = None, columns: Sequence[str] | None = None, metric: Metric = "cosine") -> list[dict[str, Any]]:
    """As ``search``, with a text (``text_embedding`` of the model that made the column's vectors)."""
    return nearest(conn, table, vector_column, "text_embedding", text, k, model, columns, metric)


def nearest(conn: psycopg.Connection[Any], table: str, vector_column: str, function: str, query: bytes | str, k: int,
            model: str | None, columns: Sequence[str] | None, metric: str) -> list[dict[str, Any]]:
    if metric not in DISTANCE_OPERATORS:
        raise InvalidConfig(f"unknown metric {metric!r}: use {', '.join(DISTANCE_OPERATORS)}")
    with vector_cursor(conn) as cur:
        # validates and quotes a (schema-qualified) name; the column's type, NULL where there is none
        cur.execute("SELECT %s::regclass::text AS t, imgembed.column_type(%s::regclass, %s) AS type, "
                    "(SELECT t.typname::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                    " WHERE a.attrelid = %s::regclass AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped) AS typname",
                    (table, table, vector_column, table, vector_column))
        found = cur.fetchone()
        qualified = found["t"]  # type: ignore[index]
        if found["type"] is None:  # type: ignore[index]
            raise InvalidConfig(f'column "{vector_column}" of table {qualified} does not exist')
        if found["typname"] not in ("vector", "halfvec"):  # type: ignore[index]
            raise InvalidConfig(f'column "{vector_column}" of table {qualified} has type {found["type"]}, '  # type: ignore[index]
                                "not pgvector's vector or halfvec: search compares vectors")
        if model is None:
            cur.execute(COLUMN_MODEL, {"table": table, "column": vector_column})
            model = cur.fetchone()["model"]  # type: ignore[index]
        if model is None and function == "text_embedding":
            raise InvalidConfig(f"no model made column {vector_column} of {qualified}: name the model whose text tower to use")
        if columns is None:
            cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                        "AND NOT attisdropped AND attname <> %s ORDER BY attnum", (table, vector_column))
            columns = [r["attname"] for r in cur.fetchall()]
        call = (model_call(function, sql.Placeholder("query"), model) if function == "img_embedding"
                else sql.SQL("text_embedding({}, {})").format(sql.Literal(model), sql.Placeholder("query")))
        # The CTE is computed once; ORDER BY the distance of the vector column to it is what an index answers.
        statement = sql.SQL("WITH q AS MATERIALIZED (SELECT {call} AS v) "
                            "SELECT {columns}{sep}{vec} {op} (SELECT v FROM q) AS distance FROM {table} "
                            "ORDER BY distance LIMIT {k}").format(
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)), sep=sql.SQL(", " if columns else ""),
            vec=sql.Identifier(vector_column), op=sql.SQL(DISTANCE_OPERATORS[metric]), call=call,
            table=sql.SQL(qualified), k=sql.Literal(int(k)))
        cur.execute(statement, {"query": query}, binary=True)
        return cur.fetchall()
