"""Client-side code: the Python API below, the ``pg-imgembed`` CLI, the async worker, the
SQLAlchemy integration (``pg_imgembed.client.sqlalchemy``), the throwaway dev cluster and
model-directory import. None of it runs inside the server, so ``make install`` leaves it out of
the server's runtime; it talks to the database with psycopg.

    from pg_imgembed.client import embed, search, load_model
"""

from .embeddings import embed, embed_batch, embed_text, image_bytes, search, search_text
from .models import LoadedModel, export_model, export_text_model, load_model, load_text_model, model_dimensions

__all__ = ["LoadedModel", "embed", "embed_batch", "embed_text", "export_model", "export_text_model", "image_bytes", "load_model",
           "load_text_model", "model_dimensions", "search", "search_text"]
