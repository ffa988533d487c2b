"""The boundary between PL/Python and the package: one object per backend, kept in ``GD``.

Every SQL function body calls one method here. Each method refuses to run in parallel mode
before touching SPI, and turns ``ImgEmbedError``s into ERRORs with SQLSTATE, detail and hint.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import __version__, lineage, runtime_env, triggers
from .backend_state import BackendState
from .backfill import backfill
from .batch import embed_many
from .decode import keep_buffers
from .embedding_model import EmbeddingModel
from .errors import BoundModelMismatch, ImageError, ImgEmbedError, ParallelModeError, RuntimeMismatch, RuntimeShadowed
from .model_config import parse_config
from .model_file_cache import ModelFileCache, UnsafeDirectory
from .model_store import ModelStore, StoredModel, bound_trigger
from .plpy_api import PLPy
from .session_cache import ModelKey, SessionCache
from .settings import Settings, read_settings
from .triggers import RowHandler
from .vector_text import vector_to_text

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
            if self.hooks.in_parallel_mode():
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


def model_key(stored: StoredModel, settings: Settings) -> ModelKey:
    return ModelKey(stored.sha256, stored.config, settings.threads, settings.execution_provider)


class Server:
    def __init__(self, plpy: PLPy, runtime_dir: str) -> None:
        self.plpy = plpy
        self.runtime_dir = runtime_dir
        self.hooks = BackendState()
        self.cache = SessionCache()
        self._store: ModelStore | None = None
        # The last (model, image) -> vector text: `ORDER BY e <=> img_embedding(q)` without an
        # index evaluates the STABLE call once per row, always with the same query image.
        self._last: tuple[tuple[ModelKey, Settings], bytes, str] | None = None
        self.images_embedded = 0
        self._files: dict[str, ModelFileCache] = {}  # cache directory -> its files (verified hashes)
        self._unsafe_warned: set[str] = set()
        self.rows = RowHandler(plpy, lambda image, model: self._embed_text(image, model, writing=True))
        self.sql_error = sql_error_factory(plpy)

    @property
    def store(self) -> ModelStore:
        if self._store is None:  # preparing plans is SPI: only after the parallel-mode check
            self._store = ModelStore(self.plpy)
        return self._store

    def settings(self) -> Settings:
        settings = read_settings(self.hooks.setting)
        keep_buffers(settings.decode_buffer_mb)
        return settings

    # ------------------------------------------------------------ embedding

    @sql_function
    def img_embedding(self, image: bytes, model: str | None) -> str:
        return self._embed_text(image, model)

    def _embed_text(self, image: bytes, model: str | None, writing: bool = False) -> str:
        """``writing``: the vector goes into an embedded column (the sync trigger), so the model is
        held until commit (see ModelStore.lookup_for_writing)."""
        settings = self.settings()
        stored = self.store.lookup_for_writing(model) if writing and model is not None else self.store.lookup(model)
        key = model_key(stored, settings)
        if self._last is not None and self._last[0] == (key, settings) and self._last[1] == image:
            return self._last[2]
        embedder = self._session(stored, settings)
        try:
            vector = embedder.embed(image, max_pixels=settings.max_image_pixels, exact=settings.force_exact_decode)
        except ImageError as exc:
            exc.add_detail(f'model "{stored.name}"')
            raise
        text = vector_to_text(vector)
        self._last = ((key, settings), image, text)
        self.images_embedded += 1
        return text

    @sql_function
    def embed_batch(self, model: str | None, images: list[bytes | None]) -> list[str | None]:
        settings = self.settings()
        stored = self.store.lookup(model)
        embedder = self._session(stored, settings)
        try:
            vectors = embed_many(embedder, images, settings)
        except ImageError as exc:
            exc.add_detail(f'model "{stored.name}"')
            raise
        self.images_embedded += sum(v is not None for v in vectors)
        return [vector_to_text(v) if v is not None else None for v in vectors]

    def _session(self, stored: StoredModel, settings: Settings) -> EmbeddingModel:
        def load() -> EmbeddingModel:
            config = parse_config(json.loads(stored.config))
            fetch = functools.cache(lambda: self.store.onnx_bytes(stored.sha256))  # at most one SPI read
            files = self.model_files(settings)
            if files is not None:
                try:
                    with files.open_verified(stored.sha256, stored.bytes, fetch) as path:
                        if path is not None:
                            return EmbeddingModel(path, config, threads=settings.threads,
                                                  provider=settings.execution_provider)
                except UnsafeDirectory as exc:
                    self._warn_unsafe(files, exc)
            return EmbeddingModel(fetch(), config, threads=settings.threads, provider=settings.execution_provider)

        return self.cache.get(stored.name, model_key(stored, settings), load, settings.max_cached_models)

    def model_files(self, settings: Settings) -> ModelFileCache | None:
        if settings.model_cache == "off":
            return None
        root = settings.model_cache or os.path.join(self.hooks.setting("data_directory") or "", "pg_imgembed_models")
        if not os.path.isabs(root):
            return None
        if root not in self._files:
            self._files[root] = ModelFileCache(Path(root))
        return self._files[root]

    def _warn_unsafe(self, files: ModelFileCache, exc: UnsafeDirectory) -> None:
        if str(files.directory) not in self._unsafe_warned:  # once per backend and directory
            self._unsafe_warned.add(str(files.directory))
            self.plpy.warning(str(exc), hint="Models load from the table instead. Give the directory to the "
                              "server's user with mode 0700, or set imgembed.model_cache to another one.")

    def _prune_model_files(self) -> None:
        files = self.model_files(self.settings())
        if files is not None:
            try:
                files.prune(r["sha256"] for r in self.plpy.execute("SELECT sha256 FROM imgembed.model_store"))
            except UnsafeDirectory as exc:
                self._warn_unsafe(files, exc)
            except OSError:
                pass  # no cache directory (never written, or a read-only disk): nothing to prune

    @sql_function
    def backfill(self, table: str, image_column: str, vector_column: str, model: str | None,
                 batch_size: int | None, on_error: str | None, switch_model: bool | None) -> None:
        """Model and on_error default to those of the column's trigger (model: else lineage's)."""
        trigger = bound_trigger(self.plpy, table, vector_column)
        bound = lineage.bound_model(self.plpy, table, vector_column)
        if model is not None and bound is not None and model != bound:
            if not switch_model:
                raise BoundModelMismatch(
                    f'column {vector_column} of {table} is bound to model "{bound}", not "{model}"',
                    hint=f'Leave model out to backfill with "{bound}", or pass switch_model => true to bind the '
                    f'column\'s trigger to "{model}" and re-embed every row with it.')
            if trigger is not None:
                self._bind(table, image_column, vector_column, model, trigger["on_error"], trigger["mode"])
        if on_error is None:
            on_error = trigger["on_error"] if trigger is not None else "error"
        settings = self.settings()
        backfill(self.plpy, self.store, settings, lambda stored: self._session(stored, settings),
                 table, image_column, vector_column, model if model is not None else bound, batch_size, on_error)

    # ------------------------------------------------------------ models

    @sql_function
    def load_model(self, name: str | None, onnx: bytes | None, config: str | None, replace: bool | None,
                   grant_public: bool | None) -> list:
        row = self.store.load(name, onnx, config, replace, self.settings(), grant_public is not False)
        self._prune_model_files()  # a replaced model's file
        return row

    @sql_function
    def set_default_model(self, name: str) -> None:
        self.store.set_default(name)

    @sql_function
    def drop_model(self, name: str) -> None:
        self.store.drop(name)
        self._prune_model_files()

    # ------------------------------------------------------------ triggers

    @sql_function
    def create_embedding_trigger(self, table: str | None, image_column: str | None, vector_column: str | None,
                                 model: str | None, on_error: str | None, mode: str | None) -> None:
        self._bind(table, image_column, vector_column, model, on_error, mode)

    def _bind(self, table: str | None, image_column: str | None, vector_column: str | None,
              model: str | None, on_error: str | None, mode: str | None) -> None:
        bound = triggers.create(self.plpy, self.store, table, image_column, vector_column, model, on_error, mode)
        lineage.record(self.plpy, table, vector_column, self.store.lookup(bound), done=False)  # type: ignore[arg-type]
        self.plpy.notice(f'embedding trigger on {table}: {vector_column} = embedding of {image_column} with model "{bound}"'
                         + (" (async: run pg-imgembed worker)" if mode == "async" else ""))

    @sql_function
    def drop_embedding_trigger(self, table: str, vector_column: str) -> None:
        triggers.drop(self.plpy, table, vector_column)

    @sql_function
    def on_row(self, td: dict[str, Any]) -> str:
        return self.rows.on_row(td)

    # ------------------------------------------------------------ introspection

    @sql_function
    def runtime(self) -> str:
        import numpy
        import onnxruntime
        import PIL.Image

        settings = self.settings()
        return json.dumps({
            "pg_imgembed": __version__,
            "runtime_dir": self.runtime_dir,
            "python": sys.version.split()[0],
            "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__,
            "pillow": PIL.__version__,
            "packages": runtime_env.packages(),
            "providers": onnxruntime.get_available_providers(),
            "settings": {**settings.__dict__, "threads": settings.threads},
            "cached_sessions": len(self.cache),
            "sessions_run_on": sorted({model.provider for model in self.cache.models()}),
            "decode_buffer_blocks": PIL.Image.core.get_blocks_max(),
            "images_embedded": self.images_embedded,
        })
