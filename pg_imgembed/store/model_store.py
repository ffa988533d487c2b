"""The model table (``imgembed.model_store``): lookups on the embedding path, and model admin.

Over a ``Database``: the backend reads it through plpy, the worker through psycopg, with the same
queries and the same errors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..errors import (
    DimensionMismatch,
    DuplicateModel,
    ModelInUse,
    ModelPermissionDenied,
    NoDefaultModel,
    NullArgument,
    TowerMismatch,
    UnknownModel,
)
from ..image.model_config import ModelConfig, parse_config
from ..image.pipeline_spec import read_derived_from
from ..image.templates import expand_template
from ..settings import Settings
from ..text.config import parse_text_config
from .database import Database
from .embedded_tables import tables_using

# A rebuilt pipeline's vectors count as the same when no component differs by more than this
# fraction of the vector's length: float32 rounding of the preprocessing, carried through the model,
# measured at 3e-8 to 8e-7 on real-size models (bench/small_models.py); a real change is orders above.
SAME_VECTORS_TOLERANCE = 1e-5
_COLUMNS = "name, sha256, bytes, dimensions, config::text AS config, generation"


@dataclass(frozen=True)
class StoredModel:
    name: str
    sha256: str
    bytes: int
    dimensions: int
    config: str  # jsonb text, as stored
    generation: int  # new at every load or replacement (see imgembed.lineage)


_BY_NAME = f"SELECT {_COLUMNS} FROM imgembed.model_store WHERE name = $1::text"


@dataclass(frozen=True)
class StoredTextModel:
    name: str
    sha256: str
    tokenizer_sha256: str
    bytes: int
    dimensions: int
    config: str  # jsonb text of the resolved TextConfig
    generation: int
    image_sha256: str  # the image tower it was loaded against
    image_now: str | None  # the image tower's sha256 now (None: hidden by its policy, or gone)


_TEXT_BY_NAME = """SELECT t.name, t.sha256, t.tokenizer_sha256, t.bytes, t.dimensions, t.config::text AS config, t.generation,
                          t.image_sha256, m.sha256 AS image_now
                     FROM imgembed.text_model_store t LEFT JOIN imgembed.model_store m ON m.name = t.name
                    WHERE t.name = $1::text"""


class ModelStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------ embedding path

    def lookup(self, name: str | None) -> StoredModel:
        rows = (self.db.rows(f"SELECT {_COLUMNS} FROM imgembed.model_store WHERE is_default") if name is None
                else self.db.rows(_BY_NAME, ["text"], [name]))
        if not rows:
            raise self._missing(name)
        return StoredModel(**{k: rows[0][k] for k in StoredModel.__dataclass_fields__})

    def lookup_for_writing(self, name: str) -> StoredModel:
        """The model, held FOR SHARE until the transaction ends: what writers of embedded columns
        use, so a replacement waits for the vectors they write (see imgembed.lineage). The lookup
        runs after the lock, so under READ COMMITTED it sees the version locked; under REPEATABLE
        READ a newer version makes the lock fail to serialize."""
        self.db.rows("SELECT imgembed.lock_model($1::text) AS generation", ["text"], [name])
        return self.lookup(name)

    def onnx_bytes(self, sha256: str) -> bytes:
        rows = self.db.rows("SELECT onnx FROM imgembed.model_store WHERE sha256 = $1::text LIMIT 1", ["text"], [sha256])
        if not rows:  # dropped between lookup and fetch
            raise UnknownModel(f"model with sha256 {sha256} is no longer in imgembed.model_store")
        return bytes(rows[0]["onnx"])

    def lookup_text(self, name: str) -> StoredTextModel:
        """The text tower of a model family, refused if the image tower changed since it was paired."""
        rows = self.db.rows(_TEXT_BY_NAME, ["text"], [name])
        if not rows:
            image = self.lookup(name)  # not there, or not usable: its error says which
            raise UnknownModel(f'model "{image.name}" has no text tower',
                               hint=f"Load one beside its image tower: imgembed.load_text_model('{image.name}', onnx, tokenizer_json).")
        stored = StoredTextModel(**rows[0])
        if stored.image_now != stored.image_sha256:
            raise TowerMismatch(
                f'the image tower of model "{name}" was replaced after its text tower was loaded: '
                "their vectors may no longer share one space",
                hint="Load the text tower that matches the new image tower: imgembed.load_text_model(..., replace => true).")
        return stored

    def text_bytes(self, sha256: str, column: str) -> bytes:
        """A text tower's ``onnx`` or ``tokenizer`` (tokenizer.json) bytes."""
        rows = self.db.rows(f"SELECT {column} AS b FROM imgembed.text_model_store WHERE sha256 = $1::text LIMIT 1", ["text"], [sha256])
        if not rows:
            raise UnknownModel(f"text tower with sha256 {sha256} is no longer in imgembed.text_model_store")
        return bytes(rows[0]["b"])

    def names(self) -> list[str]:
        """The image models this role may use."""
        return [r["name"] for r in self.db.rows("SELECT name FROM imgembed.model_store ORDER BY name")]

    def _missing(self, name: str | None) -> Exception:
        """Why the model table showed no row: the model is not there, or (its policy hides the
        rows of models the role may not use) the role may not use it."""
        hidden = self.db.rows("SELECT name, current_user::text AS me FROM imgembed.models "
                              "WHERE CASE WHEN $1::text IS NULL THEN is_default ELSE name = $1::text END", ["text"], [name])
        if hidden:
            return model_permission_denied(hidden[0]["name"], hidden[0]["me"])
        names = self.names()
        loaded = "Loaded models: " + (", ".join(names) if names else "none") + "."
        if name is None:
            return NoDefaultModel(
                "no default model is set",
                hint=f"Call imgembed.set_default_model('name'), or name the model: img_embedding(image, 'name'). {loaded}",
            )
        return UnknownModel(
            f'model "{name}" does not exist',
            hint=f"{loaded} Load one with imgembed.load_model(name, onnx_bytes, config).",
        )

    # ------------------------------------------------------------ administration

    def load(self, name: str | None, onnx: bytes | None, config_json: str | None, replace: bool | None,
             settings: Settings, grant_public: bool = True) -> list[dict[str, Any]]:
        if not name:
            raise NullArgument("model name must not be NULL or empty")
        if onnx is None:
            raise NullArgument(f'ONNX bytes for model "{name}" are NULL')
        config = read_config(config_json)
        source_sha256 = hashlib.sha256(onnx).hexdigest()  # what sha256sum prints for the file loaded
        from ..image.pipeline import prepare_pipeline  # builds with the onnx package: off the embedding path

        onnx, model, dimensions = prepare_pipeline(onnx, config, settings.threads)
        # Queue behind the writers holding the model (and ahead of new ones): see imgembed._lock_model.
        self.db.rows("SELECT imgembed._lock_model($1, true) AS locked", ["text"], [name])
        existing = self.db.rows(_BY_NAME, ["text"], [name])
        if existing and not replace:
            raise DuplicateModel(
                f'model "{name}" already exists',
                hint="Pass replace => true to replace it; sessions pick up the new model at their next call.",
            )
        if existing and existing[0]["dimensions"] != dimensions:
            users = tables_using(self.db, name)
            if users:
                raise DimensionMismatch(
                    f'replacing model "{name}" would change its output from {existing[0]["dimensions"]} to '
                    f"{dimensions} dimensions, but embedding triggers on {', '.join(users)} use it",
                    hint="Drop those triggers (imgembed.drop_embedding_trigger) or load the model under a new name.",
                )
        shown = model.full_config
        height, width = model.geometry.height, model.geometry.width
        self.db.rows(
            """INSERT INTO imgembed.model_store AS m
                   (name, onnx, sha256, bytes, dimensions, input_name, input_layout, input_height, input_width, config,
                    source_sha256, derived_from)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12::jsonb)
               ON CONFLICT (name) DO UPDATE SET
                   onnx = EXCLUDED.onnx, sha256 = EXCLUDED.sha256, bytes = EXCLUDED.bytes,
                   dimensions = EXCLUDED.dimensions, input_name = EXCLUDED.input_name,
                   input_layout = EXCLUDED.input_layout, input_height = EXCLUDED.input_height,
                   input_width = EXCLUDED.input_width, config = EXCLUDED.config,
                   source_sha256 = EXCLUDED.source_sha256, derived_from = EXCLUDED.derived_from,
                   generation = pg_catalog.nextval('imgembed.model_generation'),
                   loaded_at = now(), loaded_by = current_user""",
            ["text", "bytea", "text", "bigint", "int4", "text", "text", "int4", "int4", "text", "text", "text"], [
            name, onnx, hashlib.sha256(onnx).hexdigest(), len(onnx), dimensions, model.geometry.name,
            shown.preprocess.layout, height, width, json.dumps(shown.to_dict()), source_sha256,
            json.dumps(derived) if (derived := read_derived_from(model.session)) is not None else None,
        ])
        if grant_public and not existing:  # a replacement keeps the model's grants
            self.db.rows("INSERT INTO imgembed.model_usage (model, grantee) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                         ["text"], [name])
        return self.db.rows("SELECT * FROM imgembed.models WHERE name = $1 AND modality = 'image'", ["text"], [name])

    def rebuild(self, name: str) -> list[dict[str, Any]]:
        """Re-emit a stored pipeline with this version's preprocessing prefix. Its vectors keep their
        generation (columns stay current) only if the server measured them equal to the old ones
        at float32 rounding level; otherwise it is a new generation, and the columns show stale."""
        from ..image.pipeline import compare_pipelines, rebuild_prefix  # the onnx package: off the embedding path

        self.db.rows("SELECT imgembed._lock_model($1, true) AS locked", ["text"], [name])
        stored = self.lookup(name)
        old = self.onnx_bytes(stored.sha256)
        new = rebuild_prefix(old)
        if new is None:
            return [{"model": name, "rebuilt": False, "old_sha256": stored.sha256, "sha256": stored.sha256,
                     "generation": stored.generation, "same_vectors": True, "max_difference": 0.0, "min_cosine": 1.0}]
        difference, cosine = compare_pipelines(old, new)
        same = difference <= SAME_VECTORS_TOLERANCE
        sha256 = hashlib.sha256(new).hexdigest()
        (row,) = self.db.rows(
            """UPDATE imgembed.model_store SET onnx = $2, sha256 = $3, bytes = $4, loaded_at = now(), loaded_by = current_user,
                      generation = CASE WHEN $5 THEN generation ELSE pg_catalog.nextval('imgembed.model_generation') END
                WHERE name = $1 RETURNING generation""",
            ["text", "bytea", "text", "bigint", "bool"], [name, new, sha256, len(new), same])
        if same:  # the text tower still embeds into the image tower's space
            self.db.rows("UPDATE imgembed.text_model_store SET image_sha256 = $2 WHERE name = $1 AND image_sha256 = $3",
                         ["text", "text", "text"], [name, sha256, stored.sha256])
        return [{"model": name, "rebuilt": True, "old_sha256": stored.sha256, "sha256": sha256,
                 "generation": row["generation"], "same_vectors": same, "max_difference": difference, "min_cosine": cosine}]

    def load_text(self, name: str | None, onnx: bytes | None, tokenizer: bytes | None, config_json: str | None,
                  replace: bool | None, settings: Settings) -> list[dict[str, Any]]:
        from ..text.tower import TextModel  # tokenizers: off the image path

        if not name:
            raise NullArgument("model name must not be NULL or empty")
        if onnx is None or tokenizer is None:
            raise NullArgument(f'the {"ONNX" if onnx is None else "tokenizer"} bytes of text tower "{name}" are NULL')
        config = parse_text_config(json.loads(config_json) if config_json is not None else None)
        try:
            image = self.lookup(name)  # the family's image tower: loaded first, and usable by this role
        except UnknownModel:
            raise UnknownModel(f'model "{name}" has no image tower: a text tower is loaded beside the image tower of its model',
                               hint="Load the image tower first with imgembed.load_model(name, onnx, config).") from None
        model = TextModel(onnx, tokenizer, config, threads=settings.threads)
        dimensions = model.probe().size
        if dimensions != image.dimensions:
            raise DimensionMismatch(
                f'the text tower gives {dimensions} dimensions, the image tower of model "{name}" {image.dimensions}',
                hint="Both towers of a model must embed into one space: load the text tower of the same model.")
        existing = self.db.rows("SELECT 1 FROM imgembed.text_model_store WHERE name = $1", ["text"], [name])
        if existing and not replace:
            raise DuplicateModel(f'model "{name}" already has a text tower',
                                 hint="Pass replace => true to replace it; sessions pick up the new one at their next call.")
        self.db.rows(
            """INSERT INTO imgembed.text_model_store AS t
                   (name, onnx, sha256, bytes, tokenizer, tokenizer_sha256, dimensions, max_length, config, image_sha256)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)
               ON CONFLICT (name) DO UPDATE SET
                   onnx = EXCLUDED.onnx, sha256 = EXCLUDED.sha256, bytes = EXCLUDED.bytes, tokenizer = EXCLUDED.tokenizer,
                   tokenizer_sha256 = EXCLUDED.tokenizer_sha256, dimensions = EXCLUDED.dimensions,
                   max_length = EXCLUDED.max_length, config = EXCLUDED.config, image_sha256 = EXCLUDED.image_sha256,
                   generation = pg_catalog.nextval('imgembed.model_generation'), loaded_at = now(), loaded_by = current_user""",
            ["text", "bytea", "text", "bigint", "bytea", "text", "int4", "int4", "text", "text"],
            [name, onnx, hashlib.sha256(onnx).hexdigest(), len(onnx), tokenizer, hashlib.sha256(tokenizer).hexdigest(),
             dimensions, model.max_length, model.config.to_json(), image.sha256])
        return self.db.rows("SELECT * FROM imgembed.models WHERE name = $1 AND modality = 'text'", ["text"], [name])

    def set_default(self, name: str) -> None:
        self.lookup(name)
        # Two statements: the single-default unique index is checked row by row.
        self.db.rows("UPDATE imgembed.model_store SET is_default = false WHERE is_default AND name <> $1", ["text"], [name])
        self.db.rows("UPDATE imgembed.model_store SET is_default = true WHERE name = $1", ["text"], [name])

    def drop(self, name: str) -> None:
        self.lookup(name)
        users = tables_using(self.db, name)
        if users:
            raise ModelInUse(
                f'model "{name}" is used by embedding triggers on {", ".join(users)}',
                hint="Drop them first with imgembed.drop_embedding_trigger(table, vector_column).",
            )
        self.db.rows("DELETE FROM imgembed.model_store WHERE name = $1", ["text"], [name])


def model_permission_denied(name: str, role: str) -> ModelPermissionDenied:
    return ModelPermissionDenied(
        f'permission denied for model "{name}"',
        hint=f"A model administrator can allow it: SELECT imgembed.grant_model_usage('{name}', '{role}');")


def read_config(config_json: str | None) -> ModelConfig | None:
    """A config as given to load_model: our spelling, a Hugging Face processor config, or a template."""
    return None if config_json is None else parse_config(expand_template(json.loads(config_json)))
