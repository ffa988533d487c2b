"""One path from a model name to vectors, for every caller of a process: the SQL functions,
triggers and backfill in a backend (over plpy), and the worker's threads (over psycopg).

It finds the model (``ModelStore`` over either ``Database``), keeps its ready session
(``SessionCache``, keyed by what determines a session: sha256, config, threads, and where it runs),
loads it through the server's verified file cache where there is one, and embeds. Where it runs is
decided here and nowhere else: onnxruntime in this process, or the inference server that
``imgembed.inference_server`` (the worker: ``--inference-server``) names (inference_server.py).
Each call in a backend is counted once, in ``metered`` (imgembed.model_stats).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

import numpy as np

from ..errors import ImageError, ImgEmbedError
from ..image.model_config import parse_config
from ..image.tower import ImageTower
from ..model_stats import Meter, SharedStats
from ..onnx.file_cache import ModelFileCache, UnsafeDirectory
from ..onnx.optimized_graphs import GraphPlan, OptimizedGraphs
from ..onnx.session import provider_list
from ..settings import Settings
from ..store.model_store import ModelStore, StoredModel, StoredTextModel
from ..text.config import parse_text_config
from ..text.tower import TextModel
from ..vectors import vector_to_text
from .batch import embed_many
from .inference_server import TEXT_SUFFIX, RemoteSession, Transport, V2Client

# Per-process cache of ready models (sessions: image towers, and text towers in a cache of their
# own), least recently used out first. Keyed by model identity: the sha256 of the ONNX bytes plus
# the stored config text, thread count and where it runs. Every call looks the name up in the model
# table first, so a model replaced under the same name misses here and the stale session is
# dropped, in every session, at its next call.
M = TypeVar("M")  # an ImageTower (image towers) or a TextModel


class ModelKey(NamedTuple):
    sha256: str
    config: str
    threads: int
    provider: str  # imgembed.execution_provider as set (or the inference server's URL), so a change takes effect at the next call


class SessionCache(Generic[M]):
    def __init__(self) -> None:
        self._models: OrderedDict[ModelKey, M] = OrderedDict()
        self._by_name: dict[str, ModelKey] = {}

    def get(self, name: str, key: ModelKey, load: Callable[[], M], capacity: int) -> M:
        previous = self._by_name.get(name)
        self._by_name[name] = key
        if previous is not None and previous != key and previous not in self._by_name.values():
            self._models.pop(previous, None)  # replaced under this name: free it now
        model = self._models.get(key)
        if model is None:
            model = load()
            self._models[key] = model
        self._models.move_to_end(key)
        while len(self._models) > capacity:
            self._models.popitem(last=False)
        return model

    def __len__(self) -> int:
        return len(self._models)

    def models(self) -> list[M]:
        return list(self._models.values())


class Serving:
    def __init__(self, data_directory: str | None = None, warn: Callable[[str, str], None] | None = None,
                 connect: Callable[[str, str, int], Transport] = V2Client) -> None:
        """``data_directory``: the server's, where the default model file cache lives (None: no
        file cache, as on a worker's host). ``warn(message, hint)`` reports an unsafe cache.
        ``connect(url, token_file, timeout_ms)``: the client of an inference server (backends: HTTP)."""
        self.data_directory = data_directory
        self.warn = warn
        self.connect = connect
        self.cache: SessionCache[ImageTower] = SessionCache()
        self.text_cache: SessionCache[TextModel] = SessionCache()
        self._lock = threading.Lock()  # the worker's threads share one cache
        self._files: dict[str, ModelFileCache] = {}  # cache directory -> its files (verified hashes)
        self._clients: dict[tuple[str, str, int], Transport] = {}
        self.graphs = OptimizedGraphs()
        self._warned: set[str] = set()
        # The last (model, image or text) -> vector text: `ORDER BY e <=> img_embedding(q)` without
        # an index evaluates the STABLE call once per row, always with the same query.
        self._last: tuple[tuple[ModelKey, Settings], bytes | str, str] | None = None
        self.images_embedded = 0
        self.texts_embedded = 0
        self.stats: SharedStats | None = None  # a backend's, where the statistics are on

    # ------------------------------------------------------------ sessions

    def model(self, store: ModelStore, stored: StoredModel, settings: Settings, *,
              threads: int | None = None, provider: str | None = None) -> ImageTower:
        """The ready session of a stored model (threads and provider default to the settings')."""
        threads = threads or settings.threads
        provider = provider or settings.execution_provider
        key = ModelKey(stored.sha256, stored.config, threads, placement(settings, provider))
        with self._lock:
            return self.cache.get(stored.name, key, lambda: self._load(store, stored, settings, threads, provider),
                                  settings.max_cached_models)

    def _load(self, store: ModelStore, stored: StoredModel, settings: Settings, threads: int, provider: str) -> ImageTower:
        config = parse_config(json.loads(stored.config))
        if settings.inference_server:
            remote = RemoteSession(self.client(settings), stored.name, stored.generation, stored.sha256)
            return ImageTower(None, config, threads=threads, session=remote)
        return self._from_file_cache(stored.sha256, stored.bytes, lambda: store.onnx_bytes(stored.sha256), settings, provider,
                                     lambda source, graph: ImageTower(source, config, threads=threads, provider=provider,
                                                                          graph=graph))

    def text_model(self, store: ModelStore, stored: StoredTextModel, settings: Settings) -> TextModel:
        """The ready text tower of a model family (its own cache: names are shared with image towers)."""
        key = text_key(stored, settings)

        def load() -> TextModel:
            tokenizer = store.text_bytes(stored.sha256, "tokenizer")
            config = parse_text_config(json.loads(stored.config))
            if settings.inference_server:
                remote = RemoteSession(self.client(settings), stored.name + TEXT_SUFFIX, stored.generation, stored.sha256)
                return TextModel(None, tokenizer, config, threads=settings.threads, session=remote)
            return self._from_file_cache(
                stored.sha256, stored.bytes, lambda: store.text_bytes(stored.sha256, "onnx"), settings, settings.execution_provider,
                lambda source, graph: TextModel(source, tokenizer, config, threads=settings.threads,
                                                provider=settings.execution_provider, graph=graph))

        with self._lock:
            return self.text_cache.get(stored.name, key, load, settings.max_cached_models)

    def client(self, settings: Settings) -> Transport:
        """One client (its keep-alive connections) per server, token file and timeout."""
        key = (settings.inference_server, settings.inference_token_file, settings.inference_timeout_ms)
        if key not in self._clients:
            for old in self._clients.values():  # settings changed: the old server's connections go
                old.close()
            self._clients = {key: self.connect(*key)}
        return self._clients[key]

    def _from_file_cache(self, sha256: str, size: int, read: Callable[[], bytes], settings: Settings, provider: str,
                         make: Callable[[bytes | Path | None, GraphPlan | None], M]) -> M:
        """A session from the server's caches: the optimized graph where one was saved (the model
        is not read at all), else the verified file of the ONNX (written from the table the first
        time; the session then saves its optimized graph), else the bytes."""
        fetch = functools.cache(read)  # at most one read of the bytes
        files = self.file_cache(settings)
        if files is not None:
            try:
                with files.directory_fd() as dir_fd, self._graph_plan(dir_fd, sha256, provider, settings) as graph:
                    if graph is not None and not graph.save:
                        try:
                            return make(None, graph)
                        except ImgEmbedError:  # onnxruntime refused the saved graph: build it again
                            self.graphs.discard(dir_fd, sha256, "cpu")
                            graph = None
                    with files.open_verified(sha256, size, fetch) as path:
                        source = path if path is not None else fetch()
                        if graph is not None:
                            try:
                                return make(source, graph)
                            except ImgEmbedError:
                                pass  # not for want of the graph's file: the plain session says why
                        return make(source, None)
            except UnsafeDirectory as exc:
                self._warn_unsafe(files, exc)
            except OSError:
                pass  # no cache directory and none can be made (a read-only disk): from the bytes
        return make(fetch(), None)

    @contextlib.contextmanager
    def _graph_plan(self, dir_fd: int, sha256: str, provider: str, settings: Settings) -> Iterator[GraphPlan | None]:
        if not settings.optimized_graphs:
            yield None
            return
        effective = "cpu" if provider_list(provider) == ["CPUExecutionProvider"] else provider
        with self.graphs.plan(dir_fd, sha256, effective) as graph:
            yield graph

    def file_cache(self, settings: Settings) -> ModelFileCache | None:
        if settings.model_cache == "off" or self.data_directory is None:
            return None
        root = settings.model_cache or os.path.join(self.data_directory, "pg_imgembed_models")
        if not os.path.isabs(root):
            return None
        if root not in self._files:
            self._files[root] = ModelFileCache(Path(root))
        return self._files[root]

    def prune_files(self, settings: Settings, keep: Sequence[str]) -> None:
        """Remove cached files of models no longer in the table."""
        files = self.file_cache(settings)
        if files is not None:
            try:
                files.prune(keep)
                with files.directory_fd() as dir_fd:
                    self.graphs.prune(dir_fd, keep)
            except UnsafeDirectory as exc:
                self._warn_unsafe(files, exc)
            except OSError:
                pass  # no cache directory (never written, or a read-only disk): nothing to prune

    def _warn_unsafe(self, files: ModelFileCache, exc: UnsafeDirectory) -> None:
        if self.warn is not None and str(files.directory) not in self._warned:  # once per process and directory
            self._warned.add(str(files.directory))
            self.warn(str(exc), "Models load from the table instead. Give the directory to the server's user "
                      "with mode 0700, or set imgembed.model_cache to another one.")

    # ------------------------------------------------------------ vectors

    @contextlib.contextmanager
    def metered(self, model: str, tower: str, path: str) -> Iterator[Meter | None]:
        """One call of a path, counted when it ends; an error of pg_imgembed's own on the way (a bad
        image, the model's NaN) is counted as refused with its SQLSTATE. No meter (None) where
        nothing counts, so the steps skip their clocks."""
        if self.stats is None:
            yield None
            return
        meter = Meter()
        try:
            yield meter
        except ImgEmbedError as exc:
            meter.refuse(exc.sqlstate)
            raise
        finally:
            self.stats.record(model, tower, path, meter)

    def embed_text(self, store: ModelStore, image: bytes, name: str | None, settings: Settings, *,
                   writing: bool = False) -> str:
        """One image's vector as pgvector text. ``writing``: it goes into an embedded column (the
        sync trigger), so the model is held until commit (see ModelStore.lookup_for_writing)."""
        stored = store.lookup_for_writing(name) if writing and name is not None else store.lookup(name)
        model = self.model(store, stored, settings)
        memo = (ModelKey(stored.sha256, stored.config, model.threads, placement(settings, settings.execution_provider)), settings)
        with self.metered(stored.name, "image", "trigger" if writing else "function") as meter:
            if self._last is not None and self._last[0] == memo and self._last[1] == image:
                return self._last[2]  # a call, no image embedded
            try:
                vector = model.embed(image, max_pixels=settings.max_image_pixels, exact=settings.force_exact_decode,
                                     meter=meter)
            except ImageError as exc:
                exc.add_detail(f'model "{stored.name}"')
                raise
        text = vector_to_text(vector)
        self._last = (memo, image, text)
        self.images_embedded += 1
        return text

    def embed_query_text(self, store: ModelStore, name: str, text: str, settings: Settings) -> str:
        """A text's vector (the family's text tower) as pgvector text."""
        stored = store.lookup_text(name)
        model = self.text_model(store, stored, settings)
        memo = (text_key(stored, settings), settings)
        with self.metered(stored.name, "text", "function") as meter:
            if self._last is not None and self._last[0] == memo and self._last[1] == text:
                return self._last[2]
            vector = model.embed([text], meter)[0]
        vector_text = vector_to_text(vector)
        self._last = (memo, text, vector_text)
        self.texts_embedded += 1
        return vector_text

    def embed_batch(self, store: ModelStore, name: str | None, images: list[bytes | None], settings: Settings) -> list[str | None]:
        stored = store.lookup(name)
        model = self.model(store, stored, settings)
        try:
            with self.metered(stored.name, "image", "function") as meter:
                vectors = self.embed_images(model, images, settings, meter=meter)
        except ImageError as exc:
            exc.add_detail(f'model "{stored.name}"')
            raise
        return [vector_to_text(v) if v is not None else None for v in vectors]

    def embed_images(self, model: ImageTower, images: Sequence[bytes | None], settings: Settings,
                     on_bad_image: OnBadImage | None = None, decode_threads: int | None = None,
                     meter: Meter | None = None) -> list[np.ndarray | None]:
        """A batch of images (serving.batch.embed_many: None for None), counted in images_embedded
        whichever path asked: function, backfill or worker. A bad image follows ``on_bad_image``."""
        failures: list[tuple[int, ImageError]] = []
        vectors = embed_many(model, images, settings, failures if on_bad_image is not None else None, decode_threads, meter)
        self.images_embedded += sum(v is not None for v in vectors)
        if on_bad_image is not None:
            for position, exc in failures:  # here, not in the decoding threads: recording may query
                on_bad_image.record(position, exc)
        return vectors


@dataclass(frozen=True)
class OnBadImage:
    """A batch's failure policy where a bad image must not end it (backfill under on_error 'null',
    the worker): the image gets None and ``record(position, error)`` is told, once the batch is
    done. Without one, the first bad image ends the batch with its error, naming its position."""

    record: Callable[[int, ImageError], None]


def text_key(stored: StoredTextModel, settings: Settings) -> ModelKey:
    """What determines a text tower's session: its ONNX and its tokenizer, config, threads, provider."""
    return ModelKey(stored.sha256 + stored.tokenizer_sha256, stored.config, settings.threads,
                    placement(settings, settings.execution_provider))


def placement(settings: Settings, provider: str) -> str:
    """Where a session runs: the onnxruntime provider, or the inference server with what its client
    was made with (a new token file or timeout takes effect at the next call)."""
    if not settings.inference_server:
        return provider
    return f"{settings.inference_server} {settings.inference_token_file} {settings.inference_timeout_ms}"
