"""Search by text: CLIP text towers beside image towers, text_embedding() and vector_embedding(model, text).

Fidelity is measured against code we did not write, on the same files: transformers' CLIP
tokenizer (the ids) and fastembed's TextEmbedding / ImageEmbedding for its CLIP layouts (the
vectors, and the image-text similarities). The towers are random-weight stand-ins with the real
inputs, outputs and CLIP's real tokenizer (tests/clip_models.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import numpy as np
import onnxruntime as ort
import psycopg
import pytest
import skimage.data
from PIL import Image
from psycopg import sql
from transformers import CLIPTokenizer

from pg_imgembed.text.config import parse_text_config
from pg_imgembed.text.tower import MAX_TEXT_BYTES, TextModel, pool_tokens
from tests import clip_models, images
from tests.devcluster import pg_bindir
from tests.helpers import embed, sql_error, vector

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DIMS = 512
TEXT_CONFIG = {"tokenizer": {"max_length": 77}}
PHOTOS = {name: images.jpeg(Image.fromarray(getattr(skimage.data, name)())) for name in ("astronaut", "chelsea", "coffee", "rocket")}


def corpus() -> list[str]:
    """1,200 texts: plain captions, accents, scripts, CJK, emoji, punctuation, odd spacing, HTML
    entities, combining characters, empty and whitespace-only texts, and texts far beyond 77 tokens."""
    rng = np.random.default_rng(1)
    words = ("a photo of a dog on the beach at sunset red bicycle receipt from the grocery store cat sleeping "
             "on a sofa two people hiking mountain lake city street at night").split()
    pieces = ["café crème brûlée", "naïve façade", "Ελληνικά γράμματα", "русский текст", "עברית", "العربية",
              "हिन्दी", "東京の夜景", "北京烤鸭", "한국어 문장", "🐶🏖️", "👩🏽‍💻", "🇫🇷🇯🇵", "e\u0301te\u0301", "ﬁne ﬂower",
              "don't", "it's", "WE'LL", "I'm", "HeLLo WoRLD", "!!!", "...", "--", "«quoted»", "“smart quotes”", "&amp;",
              "<b>bold</b>", "a\tb\nc", "   ", "1234567890", "3.14", "#hashtag", "@user", "e-mail@example.com",
              "https://example.com/a?b=c", "x" * 40, "ﾊﾝｶｸ", "Ａｂｃ", "\u00a0nbsp\u2003em", "zero\u200bwidth", "tab\t\ttab"]
    texts = ["", " ", "\n", "a", "A photo of a cat.", "a photo of a cat", "a  photo   of\ta\ncat"]
    texts += ["one two three " * n for n in (10, 30, 100)]  # beyond the context: truncated
    texts += ["🐶" * 200, "東京" * 300, "x" * 5000]
    while len(texts) < 1200:
        n = int(rng.integers(1, 12))
        parts = [str(rng.choice(words)) if rng.random() < 0.6 else str(rng.choice(pieces)) for _ in range(n)]
        glue = str(rng.choice([" ", "  ", ", ", "\t", " - ", ""]))
        texts.append(glue.join(parts))
    return texts


CORPUS = corpus()


@pytest.fixture(scope="module")
def towers():
    tokenizer = (clip_models.tokenizer_dir() / "tokenizer.json").read_bytes()
    return {"text": clip_models.text_tower(DIMS), "image": clip_models.image_tower(DIMS), "tokenizer": tokenizer}


@pytest.fixture
def family(conn, towers):
    conn.execute("SELECT * FROM imgembed.load_model('clip', %s, %s::jsonb)", (towers["image"], json.dumps(clip_models.CLIP_PREPROCESSOR)))
    conn.execute("SELECT * FROM imgembed.load_text_model('clip', %s, %s, %s::jsonb)",
                 (towers["text"], towers["tokenizer"], json.dumps(TEXT_CONFIG)))
    return towers


@pytest.fixture(scope="module")
def reference_tokenizer():
    return CLIPTokenizer.from_pretrained(str(clip_models.tokenizer_dir()))


def reference_vectors(onnx_bytes: bytes, tokenizer, texts: list[str]) -> np.ndarray:
    """transformers' ids -> onnxruntime -> text_embeds -> L2: the text tower run by hand."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=77)["input_ids"]
        (v,) = session.run(["text_embeds"], {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)})
        out.append(v[0] / np.linalg.norm(v[0]))
    return np.array(out)


def sql_text_vectors(conn, texts: list[str]) -> np.ndarray:
    rows = conn.execute("SELECT text_embedding('clip', t)::text FROM unnest(%s::text[]) WITH ORDINALITY u(t, n) ORDER BY n",
                        (texts,)).fetchall()
    return np.array([vector(r[0]) for r in rows])


# ------------------------------------------------------------------ loading and querying


def test_both_towers_load_under_one_name_and_text_queries_embed(conn, family, reference_tokenizer):
    rows = conn.execute("SELECT name, modality, dimensions, input, sha256 FROM imgembed.models ORDER BY modality").fetchall()
    assert [r[:3] for r in rows] == [("clip", "image", DIMS), ("clip", "text", DIMS)]
    assert rows[1][3] == "text, up to 77 tokens"
    stored = conn.execute("SELECT sha256 = encode(sha256(onnx), 'hex'), tokenizer_sha256 = encode(sha256(tokenizer), 'hex'), "
                          "max_length, config FROM imgembed.text_model_store").fetchone()
    assert stored[:3] == (True, True, 77)
    assert stored[3] == {"tokenizer": {"max_length": 77, "pad_id": 49407},
                         "output": {"name": None, "pooling": "auto", "normalize": True}}
    (text_vector,) = conn.execute("SELECT text_embedding('clip', 'a dog on a beach')::text").fetchone()
    got = vector(text_vector)
    assert got.shape == (DIMS,) and abs(np.linalg.norm(got) - 1) < 1e-5
    np.testing.assert_allclose(got, reference_vectors(family["text"], reference_tokenizer, ["a dog on a beach"])[0], atol=1e-6)
    (oracle,) = conn.execute("SELECT vector_embedding('clip', 'a dog on a beach'::text)::text").fetchone()
    assert oracle == text_vector
    assert conn.execute("SELECT vector_embedding('clip', 'a dog on a beach')::text").fetchone() == (text_vector,)  # unknown literal: text
    assert conn.execute("SELECT text_embedding('clip', NULL)").fetchone() == (None,)


def test_tokenizer_ids_equal_the_reference_on_1200_texts(towers, reference_tokenizer):
    assert len(CORPUS) >= 1000
    model = TextModel(towers["text"], towers["tokenizer"], parse_text_config(TEXT_CONFIG))
    ours = model.ids(CORPUS)
    lengths = ours["attention_mask"].sum(axis=1)
    reference = reference_tokenizer(CORPUS, truncation=True, max_length=77)["input_ids"]
    mismatched = [text for text, ids, n, ref in zip(CORPUS, ours["input_ids"], lengths, reference) if list(ids[:n]) != ref]
    assert mismatched == []
    assert (lengths == 77).sum() >= 5 and (lengths == 2).sum() >= 3  # truncated ones, and empty/whitespace-only ones
    assert (ours["input_ids"][lengths < 77, -1] == 49407).all()  # padded with <|endoftext|>, as HF's CLIP pads


def test_server_vectors_equal_the_reference_and_fastembed_on_the_corpus(conn, family, reference_tokenizer, tmp_path):
    from fastembed import TextEmbedding

    ours = sql_text_vectors(conn, CORPUS)
    reference = reference_vectors(family["text"], reference_tokenizer, CORPUS)
    assert np.abs(ours - reference).max() <= 1e-6
    fastembed = TextEmbedding("Qdrant/clip-ViT-B-32-text", specific_model_path=str(clip_models.text_dir(tmp_path / "t", family["text"])),
                              local_files_only=True)
    theirs = np.array(list(fastembed.embed(CORPUS, batch_size=64)))
    cosine = (ours * theirs).sum(axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.99999, CORPUS[int(cosine.argmin())]


def test_image_text_similarities_equal_fastembeds(conn, family, tmp_path):
    from fastembed import ImageEmbedding, TextEmbedding

    texts = CORPUS[:40]
    files = []
    for name, data in PHOTOS.items():
        files.append(tmp_path / f"{name}.jpg")
        files[-1].write_bytes(data)
    image_model = ImageEmbedding("Qdrant/clip-ViT-B-32-vision", local_files_only=True,
                                 specific_model_path=str(clip_models.image_dir(tmp_path / "v", family["image"])))
    text_model = TextEmbedding("Qdrant/clip-ViT-B-32-text", local_files_only=True,
                               specific_model_path=str(clip_models.text_dir(tmp_path / "t", family["text"])))
    their_images = np.array(list(image_model.embed([str(f) for f in files])))
    their_texts = np.array(list(text_model.embed(texts)))
    their_texts /= np.linalg.norm(their_texts, axis=1, keepdims=True)
    ours_images = np.array([embed(conn, data, "clip") for data in PHOTOS.values()])
    ours = ours_images @ sql_text_vectors(conn, texts).T
    theirs = their_images @ their_texts.T
    assert np.abs(ours - theirs).max() <= 1e-5


def test_a_tower_of_fixed_length_is_padded_and_gives_the_same_vectors(conn, family):
    conn.execute("SELECT * FROM imgembed.load_text_model('clip', %s, %s, NULL, replace => true)",
                 (clip_models.text_tower(DIMS, sequence=77), family["tokenizer"]))  # max_length: the model's 77
    fixed = sql_text_vectors(conn, CORPUS[:50])
    conn.execute("SELECT * FROM imgembed.load_text_model('clip', %s, %s, %s::jsonb, replace => true)",
                 (family["text"], family["tokenizer"], json.dumps(TEXT_CONFIG)))
    np.testing.assert_allclose(fixed, sql_text_vectors(conn, CORPUS[:50]), atol=1e-6)


def test_token_outputs_pool_at_the_end_of_text_token(conn, towers):
    conn.execute("SELECT * FROM imgembed.load_model('small', %s, %s::jsonb)",
                 (clip_models.image_tower(clip_models.HIDDEN), json.dumps(clip_models.CLIP_PREPROCESSOR)))
    tokens = clip_models.text_tower(DIMS, outputs_first="last_hidden_state")
    err = sql_error(conn, "SELECT * FROM imgembed.load_text_model('small', %s, %s, %s::jsonb)",
                    (tokens, towers["tokenizer"], json.dumps(TEXT_CONFIG)))
    assert err.sqlstate == "22023" and "cannot turn into one vector per text" in err.diag.message_primary
    assert '"eos" (CLIP)' in err.diag.message_hint
    config = {**TEXT_CONFIG, "output": {"pooling": "eos"}}
    conn.execute("SELECT * FROM imgembed.load_text_model('small', %s, %s, %s::jsonb)", (tokens, towers["tokenizer"], json.dumps(config)))
    got = vector(conn.execute("SELECT text_embedding('small', 'a red bicycle')::text").fetchone()[0])
    model = TextModel(tokens, towers["tokenizer"], parse_text_config(config))
    feeds = model.ids(["a red bicycle"])
    (hidden,) = model.session.run(["last_hidden_state"], feeds)
    eos = int(np.flatnonzero(feeds["input_ids"][0] == 49407)[0])
    np.testing.assert_allclose(got, hidden[0, eos] / np.linalg.norm(hidden[0, eos]), atol=1e-6)
    assert np.allclose(pool_tokens(hidden, "mean", feeds), hidden[0].mean(axis=0))


# ------------------------------------------------------------------ bad input, privileges, lineage


def test_bad_towers_and_inputs_are_refused_with_clear_errors(conn, family):
    config = json.dumps(TEXT_CONFIG)
    cases = [
        ("SELECT * FROM imgembed.load_text_model('clip', %s, %s, %s::jsonb, true)", (clip_models.text_tower(256), family["tokenizer"], config),
         "42804", 'the text tower gives 256 dimensions, the image tower of model "clip" 512'),
        ("SELECT * FROM imgembed.load_text_model('clip', %s, %s, %s::jsonb, true)", (family["image"], family["tokenizer"], config),
         "22023", "a text tower takes input_ids; this model's inputs are pixel_values"),
        ("SELECT * FROM imgembed.load_model('x', %s)", (family["text"],),
         "22023", "model has 2 inputs (input_ids, attention_mask); an image embedding model takes exactly one image tensor"),
        ("SELECT * FROM imgembed.load_text_model('clip', %s, %s, %s::jsonb, true)", (family["text"], b"{not json", config),
         "22023", "the tokenizer is not a readable tokenizer.json (9 bytes): key must be a string at line 1 column 2"),
        ("SELECT * FROM imgembed.load_text_model('clip', %s, %s, %s::jsonb, true)", (family["text"], b"\xff\xfe\x00", config),
         "22023", "the tokenizer is not a readable tokenizer.json (3 bytes): "
         "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
        ("SELECT * FROM imgembed.load_text_model('clip', %s, NULL)", (family["text"],),
         "22004", 'the tokenizer bytes of text tower "clip" are NULL'),
        ("SELECT * FROM imgembed.load_text_model('clip', %s, %s, '{\"tokenizer\": {\"max_len\": 77}}', true)",
         (family["text"], family["tokenizer"]), "22023", "unknown tokenizer key 'max_len'"),
        ("SELECT * FROM imgembed.load_text_model('nosuch', %s, %s)", (family["text"], family["tokenizer"]),
         "42704", 'model "nosuch" has no image tower: a text tower is loaded beside the image tower of its model'),
        ("SELECT * FROM imgembed.load_text_model('clip', %s, %s, %s::jsonb)", (family["text"], family["tokenizer"], json.dumps(TEXT_CONFIG)),
         "42710", 'model "clip" already has a text tower'),
        ("SELECT text_embedding('clip', %s)", ("x" * (MAX_TEXT_BYTES + 1),),
         "54000", f"text of {MAX_TEXT_BYTES + 1} bytes is longer than the {MAX_TEXT_BYTES} bytes a text query may have"),
    ]
    for query, params, state, message in cases:
        err = sql_error(conn, query, params)
        assert (err.sqlstate, err.diag.message_primary) == (state, message), query
    hint = sql_error(conn, "SELECT * FROM imgembed.load_model('x', %s)", (family["text"],)).diag.message_hint
    assert "load_text_model" in hint
    long_text = "a photo of a dog " * 600  # 10 kB: truncated to the context, like the reference
    np.testing.assert_allclose(sql_text_vectors(conn, [long_text])[0], sql_text_vectors(conn, [" ".join(long_text.split()[:80])])[0],
                               atol=1e-6)
    # Nothing half-written: the tower in place is the one loaded first.
    assert conn.execute("SELECT dimensions, max_length FROM imgembed.text_model_store").fetchall() == [(DIMS, 77)]


def test_no_text_tower_and_a_replaced_image_tower(conn, family):
    conn.execute("SELECT * FROM imgembed.load_model('plain', %s, %s::jsonb)", (family["image"], json.dumps(clip_models.CLIP_PREPROCESSOR)))
    err = sql_error(conn, "SELECT text_embedding('plain', 'x')")
    assert (err.sqlstate, err.diag.message_primary) == ("42704", 'model "plain" has no text tower')
    assert "imgembed.load_text_model('plain'" in err.diag.message_hint
    assert sql_error(conn, "SELECT text_embedding('nosuch', 'x')").sqlstate == "42704"

    conn.execute("SELECT * FROM imgembed.load_model('clip', %s, %s::jsonb, replace => true)",
                 (clip_models.image_tower(DIMS, seed=5), json.dumps(clip_models.CLIP_PREPROCESSOR)))
    err = sql_error(conn, "SELECT text_embedding('clip', 'x')")
    assert err.sqlstate == "55000" and err.diag.message_primary.startswith('the image tower of model "clip" was replaced')
    conn.execute("SELECT * FROM imgembed.load_text_model('clip', %s, %s, %s::jsonb, replace => true)",
                 (family["text"], family["tokenizer"], json.dumps(TEXT_CONFIG)))
    assert len(vector(conn.execute("SELECT text_embedding('clip', 'x')::text").fetchone()[0])) == DIMS
    conn.execute("SELECT imgembed.drop_model('clip')")  # the family: both towers
    assert conn.execute("SELECT count(*) FROM imgembed.text_model_store").fetchone() == (0,)


def test_model_privileges_cover_the_text_tower(conn, dsn, family):
    role = f"reader_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        conn.execute("SELECT imgembed.revoke_model_usage('clip', 'PUBLIC')")
        with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, user=role), autocommit=True) as other:
            err = sql_error(other, "SELECT text_embedding('clip', 'x')")
            assert (err.sqlstate, err.diag.message_primary) == ("42501", 'permission denied for model "clip"')
            assert other.execute("SELECT count(*) FROM imgembed.text_model_store").fetchone() == (0,)
            err = sql_error(other, "SELECT * FROM imgembed.load_text_model('clip', %s, %s)", (family["text"], family["tokenizer"]))
            assert err.sqlstate == "42501"
            conn.execute(f"SELECT imgembed.grant_model_usage('clip', '{role}')")
            assert len(vector(other.execute("SELECT text_embedding('clip', 'x')::text").fetchone()[0])) == DIMS
    finally:
        conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


# ------------------------------------------------------------------ the index, dump, export, import


@pytest.mark.parametrize("query", ["text_embedding('clip', %s)", "img_embedding(%s, 'clip')"])
def test_queries_use_the_hnsw_index_and_embed_the_query_once(conn, family, query):
    conn.execute("CREATE TABLE photos (id int PRIMARY KEY, embedding vector(512))")
    conn.execute("INSERT INTO photos SELECT g, (SELECT array_agg(random())::vector(512) FROM generate_series(1, 512) WHERE g > 0) "
                 "FROM generate_series(1, 1000) g")
    conn.execute("CREATE INDEX ON photos USING hnsw (embedding vector_cosine_ops)")
    conn.execute("ANALYZE photos")
    conn.execute("SET track_functions = 'all'")
    params = ["a dog on a beach", "a cat"] if query.startswith("text") else [PHOTOS["chelsea"], PHOTOS["coffee"]]
    function, counter = ("text_embedding", "texts_embedded") if query.startswith("text") else ("img_embedding", "images_embedded")
    for shape, param in zip((f"{query}", f"(SELECT {query})"), params):
        statement = f"SELECT id FROM photos ORDER BY embedding <=> {shape} LIMIT 5"
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {statement}", (param,)))
        assert "Index Scan using photos_embedding_idx" in plan, plan
        before = int(conn.execute("SELECT imgembed.runtime()->>%s", (counter,)).fetchone()[0])
        count = "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE funcname = %s"
        with conn.transaction():  # counts not yet reported to the statistics system: this backend's own
            (first,) = conn.execute(count, (function,)).fetchone()
            assert len(conn.execute(statement, (param,)).fetchall()) == 5
            (calls,) = conn.execute(count, (function,)).fetchone()
            calls -= first
        # The model runs once either way; a bare call is also evaluated for each row returned (the
        # index does not hand back distances), and answers those from the backend's last query.
        assert int(conn.execute("SELECT imgembed.runtime()->>%s", (counter,)).fetchone()[0]) - before == 1
        assert calls == (1 if shape.startswith("(SELECT") else 6)


def test_dump_and_restore_carry_the_text_tower(local_server, conn, dsn, family, tmp_path):
    name = f"imgembed_restore_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dump = tmp_path / "db.dump"
        subprocess.run([pg_bindir() / "pg_dump", "-Fc", "-f", dump, "-d", dsn], check=True)
        restored_dsn = psycopg.conninfo.make_conninfo(dsn, dbname=name)
        subprocess.run([pg_bindir() / "pg_restore", "--exit-on-error", "-d", restored_dsn, dump], check=True)
        with psycopg.connect(restored_dsn, autocommit=True) as restored:
            query = "SELECT text_embedding('clip', 'a red bicycle')::text"
            assert restored.execute(query).fetchone() == conn.execute(query).fetchone()
            assert restored.execute("SELECT name, modality, sha256 FROM imgembed.models ORDER BY 2").fetchall() == \
                conn.execute("SELECT name, modality, sha256 FROM imgembed.models ORDER BY 2").fetchall()
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def cli(dsn, *args):
    done = subprocess.run([sys.executable, "-m", "pg_imgembed.client.cli", "--dsn", dsn, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_export_reproduces_the_vectors_in_fastembed_and_reloads(conn, dsn, family, tmp_path):
    from fastembed import TextEmbedding

    out = cli(dsn, "models", "export", "clip", tmp_path / "exported", "--text")
    assert out.startswith(f"{tmp_path / 'exported'}: model.onnx, tokenizer.json")
    assert json.loads((tmp_path / "exported" / "tokenizer_config.json").read_text()) == {"model_max_length": 77, "pad_token": "<|endoftext|>"}
    model = TextEmbedding("Qdrant/clip-ViT-B-32-text", specific_model_path=str(tmp_path / "exported"), local_files_only=True)
    theirs = np.array(list(model.embed(CORPUS[:100])))
    ours = sql_text_vectors(conn, CORPUS[:100])
    assert ((ours * theirs).sum(axis=1) / np.linalg.norm(theirs, axis=1)).min() >= 0.99999
    conn.execute("SELECT * FROM imgembed.load_model('again', %s, %s::jsonb)", (family["image"], json.dumps(clip_models.CLIP_PREPROCESSOR)))
    assert "loaded again (text tower): 512 dimensions, input text, up to 77 tokens" in \
        cli(dsn, "models", "load", "again", "--from-dir", tmp_path / "exported")
    assert conn.execute("SELECT a.sha256 = b.sha256 FROM imgembed.text_model_store a, imgembed.text_model_store b "
                        "WHERE a.name = 'clip' AND b.name = 'again'").fetchone() == (True,)


def test_a_whole_clip_directory_loads_both_towers(conn, dsn, towers, tmp_path):
    directory = tmp_path / "clip"
    clip_models.text_dir(directory, towers["text"])
    (directory / "model.onnx").rename(directory / "text_model.onnx")
    (directory / "vision_model.onnx").write_bytes(towers["image"])
    (directory / "preprocessor_config.json").write_text(json.dumps(clip_models.CLIP_PREPROCESSOR))
    out = cli(dsn, "models", "load", "clip", "--from-dir", directory).splitlines()
    assert out[0].startswith("loaded clip: 512 dimensions, input NCHW 3x224x224")
    assert out[1].startswith("loaded clip (text tower): 512 dimensions, input text, up to 77 tokens")
    listed = cli(dsn, "models", "list").splitlines()
    assert [line.split()[:3] for line in listed[1:]] == [["clip", "image", "512"], ["clip", "text", "512"]]
    catalog = cli(dsn, "models", "catalog")
    assert "Qdrant/clip-ViT-B-32-text" in catalog
    assert conn.execute("SELECT modality, dimensions FROM imgembed.catalog WHERE model_id = 'Qdrant/clip-ViT-B-32-text'").fetchone() == \
        ("text", 512)
