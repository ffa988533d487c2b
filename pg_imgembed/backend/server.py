"""The boundary between PL/Python and the package: one object per backend, kept in ``GD``.

Every SQL function body calls one method here. Each method refuses to run in parallel mode
before touching SPI, and turns ``ImgEmbedError``s into ERRORs with SQLSTATE, detail and hint.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from .. import __version__
from ..errors import BoundModelMismatch, ImgEmbedError, ParallelModeError, PermissionDenied, RuntimeMismatch, RuntimeShadowed
from ..image.decode import decoders, heif_decoder, keep_buffers
from ..model_stats import SharedStats
from ..serving.serving import Serving
from ..settings import Settings, read_settings
from ..store import lineage
from ..store.embedded_tables import bound_trigger
from ..store.model_store import ModelStore
from . import runtime_env, triggers
from .backfill import backfill
from .postgres import BackendState, PLPy, PlpyDatabase

F = TypeVar("F", bound=Callable[..., Any])


def start(plpy: PLPy, sql_version: str, runtime_dir: str) -> Server:
    """Called by each function's bootstrap once per backend; the result lives in ``GD``."""
    if sql_version != __version__:
        plpy.error(
            f"pg_imgembed SQL version {sql_version} does not match its Python package version {__version__}",
            hint=f"The runtime in {runtime_dir} is from another release: run `make install`, "
            "then ALTER EXTENSION pg_imgembed UPDATE.",
            sqlstate=RuntimeMismatch.sqlstate,
        )
    try:
        runtime_env.check_isolated()
    except RuntimeShadowed as exc:
        raise sql_error_factory(plpy)(exc) from None
    return Server(plpy, runtime_dir)


def sql_function(method: F) -> F:
    """Run in serial mode only, and report our errors as SQL errors a user can act on."""

    @functools.wraps(method)
    def wrapper(self: Server, *args: Any) -> Any:
        try:
            if self.backend.in_parallel_mode():
                raise ParallelModeError(
                    f"pg_imgembed's {method.__name__}() cannot run inside a parallel query",
                    hint="It is declared PARALLEL UNSAFE; a wrapper function declared PARALLEL SAFE "
                    "around it must be PARALLEL UNSAFE too.",
                )
            return method(self, *args)
        except ImgEmbedError as exc:
            raise self.sql_error(exc) from None

    return wrapper  # type: ignore[return-value]


def sql_error_factory(plpy: PLPy) -> Callable[[ImgEmbedError], Exception]:
    """Exceptions PL/Python reports as ``pg_imgembed: <message>`` with our SQLSTATE/detail/hint.

    PL/Python prefixes a message with the exception's ``module.Class`` (``plpy.Error: ...``),
    except for builtins; it takes sqlstate/detail/hint from any ``plpy.Error`` subclass.
    """
    error_class = type("pg_imgembed", (plpy.Error,), {"__module__": "builtins"})

    def make(exc: ImgEmbedError) -> Exception:
        error = error_class(exc.message)
        error.sqlstate, error.detail, error.hint = exc.sqlstate, exc.detail, exc.hint
        return error

    return make


class Server:
    def __init__(self, plpy: PLPy, runtime_dir: str) -> None:
        self.plpy = plpy
        self.runtime_dir = runtime_dir
        self.backend = BackendState()
        self.serving = Serving(self.backend.setting("data_directory"),
                               warn=lambda message, hint: plpy.warning(message, hint=hint))
        self.serving.stats = SharedStats.attached()  # the bootstrap's load_settings() attached them
        self._db: PlpyDatabase | None = None
        self.sql_error = sql_error_factory(plpy)

    @property
    def db(self) -> PlpyDatabase:
        if self._db is None:  # preparing plans is SPI: only after the parallel-mode check
            self._db = PlpyDatabase(self.plpy)
        return self._db

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.db)

    def settings(self) -> Settings:
        return read_settings(self.backend.setting)

    def decoding_settings(self) -> Settings:
        """The settings of a call that may decode images: Pillow's decode buffers follow
        imgembed.decode_buffer_mb first."""
        settings = self.settings()
        keep_buffers(settings.decode_buffer_mb)
        return settings

    # ------------------------------------------------------------ embedding

    @sql_function
    def img_embedding(self, image: bytes, model: str | None) -> str:
        return self.serving.embed_text(self.store, image, model, self.decoding_settings())

    @sql_function
    def embed_for_writing(self, image: bytes, model: str) -> str:
        """For the sync trigger: the model is held until commit (see ModelStore.lookup_for_writing)."""
        return self.serving.embed_text(self.store, image, model, self.decoding_settings(), writing=True)

    @sql_function
    def embed_batch(self, model: str | None, images: list[bytes | None]) -> list[str | None]:
        return self.serving.embed_batch(self.store, model, images, self.decoding_settings())

    @sql_function
    def text_embedding(self, model: str, query: str) -> str:
        return self.serving.embed_query_text(self.store, model, query, self.settings())

    @sql_function
    def backfill(self, table: str, image_column: str, vector_column: str, model: str | None,
                 batch_size: int | None, on_error: str | None, switch_model: bool | None) -> None:
        """Model and on_error default to those of the column's trigger (model: else lineage's, if
        that model still exists; else the default model)."""
        trigger = bound_trigger(self.db, table, vector_column)
        recorded = None if trigger is not None else lineage.recorded_model(self.db, table, vector_column)
        if recorded is not None and not self.db.rows("SELECT 1 AS found FROM imgembed.models WHERE name = $1", ["text"], [recorded]):
            recorded = None  # dropped since: nothing binds the column any more
        bound = trigger.model if trigger is not None else recorded
        if model is not None and bound is not None and model != bound:
            if not switch_model:
                binding = "the column's trigger" if trigger is not None else "the column's lineage"
                raise BoundModelMismatch(
                    f'column {vector_column} of {table} is bound to model "{bound}", not "{model}"',
                    hint=f'Leave model out to backfill with "{bound}", or pass switch_model => true to re-embed every row '
                    f'with "{model}" (and bind {binding} to it).')
            if trigger is not None:
                self._bind(table, image_column, vector_column, model, trigger.on_error, trigger.mode)
        if on_error is None:
            on_error = trigger.on_error if trigger is not None else "error"
        why = ("named" if model is not None else "the column's trigger" if trigger is not None
               else "recorded in the column's lineage" if recorded is not None
               else "the default model: the column has no embedding trigger")
        backfill(self.db, self.serving, self.decoding_settings(), table, image_column, vector_column,
                 model if model is not None else bound, batch_size, on_error, why)

    # ------------------------------------------------------------ models

    def _require_execute(self, function: str) -> None:
        """The PL/Python bodies of the admin functions are callable directly: they refuse a role
        that may not execute the wrapper ``imgembed.<function>`` (one signature each), whose
        privilege is the one granted and revoked."""
        rows = self.db.rows("SELECT pg_catalog.has_function_privilege(oid, 'EXECUTE') AS ok FROM pg_catalog.pg_proc "
                            "WHERE pronamespace OPERATOR(pg_catalog.=) 'imgembed'::pg_catalog.regnamespace "
                            "AND proname OPERATOR(pg_catalog.=) $1", ["name"], [function])
        if len(rows) != 1 or not rows[0]["ok"]:
            raise PermissionDenied(f"permission denied for function imgembed.{function}")

    @sql_function
    def load_model(self, name: str | None, onnx: bytes | None, config: str | None, replace: bool | None,
                   grant_public: bool | None) -> list:
        self._require_execute("load_model")
        settings = self.decoding_settings()
        row = self.store.load(name, onnx, config, replace, settings, grant_public is not False)
        self._prune_model_files(settings)  # a replaced model's file
        return row

    @sql_function
    def rebuild_model(self, name: str) -> list:
        self._require_execute("rebuild_model")
        rows = self.store.rebuild(name)
        self._prune_model_files(self.settings())  # the old bytes' file
        return rows

    @sql_function
    def load_text_model(self, name: str | None, onnx: bytes | None, tokenizer: bytes | None, config: str | None,
                        replace: bool | None) -> list:
        self._require_execute("load_text_model")
        settings = self.settings()
        row = self.store.load_text(name, onnx, tokenizer, config, replace, settings)
        self._prune_model_files(settings)  # a replaced tower's file
        return row

    @sql_function
    def set_default_model(self, name: str) -> None:
        self._require_execute("set_default_model")
        self.store.set_default(name)

    @sql_function
    def drop_model(self, name: str) -> None:
        self._require_execute("drop_model")
        self.store.drop(name)
        self._prune_model_files(self.settings())

    def _prune_model_files(self, settings: Settings) -> None:
        kept = self.db.rows("SELECT sha256 FROM imgembed.model_store UNION ALL SELECT sha256 FROM imgembed.text_model_store")
        self.serving.prune_files(settings, [r["sha256"] for r in kept])

    # ------------------------------------------------------------ triggers

    @sql_function
    def create_embedding_trigger(self, table: str | None, image_column: str | None, vector_column: str | None,
                                 model: str | None, on_error: str | None, mode: str | None) -> None:
        self._bind(table, image_column, vector_column, model, on_error, mode)

    def _bind(self, table: str | None, image_column: str | None, vector_column: str | None,
              model: str | None, on_error: str | None, mode: str | None) -> None:
        bound = triggers.create(self.db, self.store, table, image_column, vector_column, model, on_error, mode)
        lineage.record(self.db, table, vector_column, self.store.lookup(bound), done=False)  # type: ignore[arg-type]
        self.plpy.notice(f'embedding trigger on {table}: {vector_column} = embedding of {image_column} with model "{bound}"'
                         + (" (async: run pg-imgembed worker)" if mode == "async" else ""))

    @sql_function
    def drop_embedding_trigger(self, table: str, vector_column: str) -> None:
        triggers.drop(self.db, table, vector_column)

    # ------------------------------------------------------------ introspection

    @sql_function
    def runtime(self) -> str:
        import numpy
        import onnxruntime
        import PIL.Image

        settings = self.decoding_settings()
        return json.dumps({
            "pg_imgembed": __version__,
            "runtime_dir": self.runtime_dir,
            "python": sys.version.split()[0],
            "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__,
            "pillow": PIL.__version__,
            "pi_heif": heif_decoder().__version__,
            "formats": decoders(),
            "packages": runtime_env.packages(),
            "providers": onnxruntime.get_available_providers(),
            "settings": {**settings.__dict__, "threads": settings.threads},
            "cached_sessions": len(self.serving.cache),
            "sessions_run_on": sorted({model.provider for model in self.serving.cache.models()}),
            "decode_buffer_blocks": PIL.Image.core.get_blocks_max(),
            "images_embedded": self.serving.images_embedded,
            "texts_embedded": self.serving.texts_embedded,
            "optimized_graphs": {"loaded": self.serving.graphs.loaded, "saved": self.serving.graphs.saved},
        })
