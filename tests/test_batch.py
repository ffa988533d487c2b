"""imgembed.embed_batch: many images, one session, same vectors as img_embedding."""

import numpy as np
import pytest

from tests import images
from tests.helpers import embed, load_tiny, sql_error, vector

PHOTOS = [images.jpeg(images.photo_like(60 + i, 40 + i, seed=i)) for i in range(20)]


def batch(conn, model, photos):
    (texts,) = conn.execute("SELECT imgembed.embed_batch(%s, %s::bytea[])::text[]", (model, photos)).fetchone()
    return texts


def test_batch_equals_one_by_one(conn):
    load_tiny(conn)
    got = batch(conn, "tiny", PHOTOS)
    assert len(got) == len(PHOTOS)
    for text, photo in zip(got, PHOTOS):
        np.testing.assert_array_equal(vector(text), embed(conn, photo, "tiny"))


def test_null_elements_and_default_model(conn):
    load_tiny(conn)
    got = batch(conn, None, [PHOTOS[0], None, PHOTOS[1]])
    assert got[1] is None
    np.testing.assert_array_equal(vector(got[2]), embed(conn, PHOTOS[1]))
    assert conn.execute("SELECT imgembed.embed_batch('tiny', NULL)").fetchone()[0] is None
    assert batch(conn, "tiny", []) == []


def test_bad_element_names_its_position(conn):
    load_tiny(conn)
    err = sql_error(conn, "SELECT imgembed.embed_batch('tiny', %s::bytea[])", ([PHOTOS[0], PHOTOS[1], b"junk"],))
    assert err.sqlstate == "22P03"
    assert err.diag.message_detail == 'array element 3; model "tiny"'


@pytest.mark.parametrize("threads", [1, 3])
def test_result_order_does_not_depend_on_thread_count(conn, threads):
    load_tiny(conn)
    conn.execute(f"SET imgembed.intra_op_threads = {threads}")
    got = batch(conn, "tiny", PHOTOS * 2)
    assert got[:20] == got[20:]
    np.testing.assert_array_equal(vector(got[7]), embed(conn, PHOTOS[7], "tiny"))
