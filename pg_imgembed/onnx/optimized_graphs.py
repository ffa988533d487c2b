"""onnxruntime's optimized graphs, cached beside the model file cache: the next session loads the
graph as optimized, with its weights memory-mapped, instead of optimizing the model again.

onnxruntime's highest optimization level (``ORT_ENABLE_ALL``, what every session runs) rewrites
the graph for this CPU: NCHWc layouts sized for AVX2 or AVX-512 and weights prepacked for its
kernels. Its docs say such a saved graph may only be used on compatible hardware with the same
options. So an entry is keyed by everything the graph depends on (the model's sha256, the
onnxruntime version, the execution provider, the level, the machine and the CPU features those
layouts use, and this format) and is never found where it does not apply.

An entry is a directory ``<model sha256, first 16 hex>.<key>.graph`` (short enough that, with the
cache in the data directory, pg_basebackup's tar format takes every path) holding ``graph.onnx``, ``graph.data``
(weights, original and prepacked, as external data) and ``manifest.json``. It is built in a fresh
directory made with ``mkdir`` (0700, exclusive: nothing can be planted in it), where onnxruntime
writes the graph; the manifest records each file's identity (inode, size, mtime, ctime) and the
directory is renamed into place. Before use, every file is opened with ``O_NOFOLLOW`` inside the
entry, must be a regular 0600 file of the server's user, and must have the identity the manifest
recorded: any write to it changes its mtime and ctime, so a changed file is never loaded; the entry
is removed and built again. onnxruntime is handed ``/proc/self/fd/N/graph.onnx`` of the entry
directory that was checked. Only the CPU provider uses the cache (other providers' graphs are not
portable across devices); ``imgembed.optimized_graphs = off`` turns it off.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .file_cache import file_identity, is_private_file

# 2: graphs are only made from models checked to be self-contained (0.4.0); older ones are made again.
FORMAT = 2
LEVEL = "ORT_ENABLE_ALL"
FILES = ("graph.onnx", "graph.data")  # graph.data: absent when every weight is tiny
SHA = 16  # hex digits of the model's sha256 in a name: the key holds the whole of it
ENTRY = re.compile(r"^(?P<sha>[0-9a-f]{16})\.(?P<key>[0-9a-f]{24})\.graph$")
BUILD = re.compile(r"^\.build\.[0-9a-f]{16}\.\d+\.[0-9a-f]{8}$")
# Before 0.5.0 names held the whole sha256: paths over the 99 characters tar allows, so
# pg_basebackup failed. Such entries are removed (a build only once its backend is gone).
OLD_ENTRY = re.compile(r"^[0-9a-f]{64}\.[0-9a-f]{24}\.graph$")
OLD_BUILD = re.compile(r"^\.build\.[0-9a-f]{64}\.\d+\.[0-9a-f]{8}$")
# The instruction sets onnxruntime's CPU kernels and layout transformations choose between.
CPU_FEATURES = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
                "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
                "asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")


@dataclass(frozen=True)
class GraphPlan:
    """What a session does with the cache: load the graph at ``path`` as it is (``save`` False), or
    optimize the model and write its graph to ``path`` (``save`` True)."""

    path: Path
    save: bool


@cache
def cpu_features() -> tuple[str, ...]:
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith(("flags", "Features"))), [])
    except OSError:
        flags = []
    return tuple(sorted(set(flags) & set(CPU_FEATURES)))


def graph_key(sha256: str, provider: str) -> str:
    import onnxruntime

    parts = {"format": FORMAT, "model": sha256, "onnxruntime": onnxruntime.__version__, "provider": provider,
             "level": LEVEL, "machine": platform.machine(), "cpu": cpu_features()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def entry_name(sha256: str, provider: str) -> str:
    return f"{sha256[:SHA]}.{graph_key(sha256, provider)}.graph"


class OptimizedGraphs:
    """The entries in one cache directory (the model file cache's, already checked as safe)."""

    def __init__(self) -> None:
        self.loaded = 0  # sessions of this process made from a cached graph
        self.saved = 0  # graphs this process wrote

    @contextmanager
    def plan(self, dir_fd: int, sha256: str, provider: str) -> Iterator[GraphPlan | None]:
        """A graph to load, or a place to save one (valid inside the ``with``); None where the
        cache cannot serve (another provider, a read-only directory)."""
        if provider != "cpu":
            yield None
            return
        entry = entry_name(sha256, provider)
        entry_fd = self._checked_entry(dir_fd, entry)
        if entry_fd is not None:
            try:
                yield GraphPlan(Path(f"/proc/self/fd/{entry_fd}/graph.onnx"), save=False)
                self.loaded += 1
            finally:
                os.close(entry_fd)
            return
        build = f".build.{sha256[:SHA]}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            os.mkdir(build, 0o700, dir_fd=dir_fd)  # exclusive: fails if anything has that name
            build_fd = os.open(build, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except OSError:
            yield None  # a read-only directory or disk: sessions optimize as without the cache
            return
        published = False
        try:
            yield GraphPlan(Path(f"/proc/self/fd/{build_fd}/graph.onnx"), save=True)
            try:
                published = self._publish(dir_fd, build_fd, build, entry)
            except OSError:
                pass  # the session is fine; the next one tries again
        finally:
            os.close(build_fd)
            if not published:
                _remove_tree(dir_fd, build)
        if published:
            self.saved += 1
            for name in os.listdir(dir_fd):  # graphs of this model for another onnxruntime or CPU
                found = ENTRY.match(name)
                if (found and found["sha"] == sha256[:SHA] and name != entry) or (OLD_ENTRY.match(name) and name.startswith(sha256)):
                    _remove_tree(dir_fd, name)

    def _checked_entry(self, dir_fd: int, entry: str) -> int | None:
        """An fd of the entry directory if every file is the one its manifest recorded; an entry
        that fails a check is removed (and built again by the caller)."""
        try:
            entry_fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError:  # a symlink or a file where the directory should be: not ours
            _remove_tree(dir_fd, entry)
            return None
        try:
            info = os.fstat(entry_fd)
            manifest = json.loads(_read_own_file(entry_fd, "manifest.json"))
            good = (info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o700
                    and manifest.get("format") == FORMAT
                    and "graph.onnx" in manifest["files"] and set(manifest["files"]) <= set(FILES)
                    and all(recorded == file_identity(_own_file_stat(entry_fd, name)) for name, recorded in manifest["files"].items()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            good = False
        if not good:
            os.close(entry_fd)
            _remove_tree(dir_fd, entry)
            return None
        return entry_fd

    @staticmethod
    def _publish(dir_fd: int, build_fd: int, build: str, entry: str) -> bool:
        """Record the files onnxruntime wrote and rename the build directory into place; False if
        it wrote nothing usable or another backend published the same entry first."""
        files = {}
        for name in FILES:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=build_fd)
            except FileNotFoundError:
                if name == "graph.onnx":
                    return False
                continue
            try:
                os.fchmod(fd, 0o600)
                os.fsync(fd)
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
                    return False
                files[name] = file_identity(info)
            finally:
                os.close(fd)
        manifest = json.dumps({"format": FORMAT, "level": LEVEL, "cpu": cpu_features(), "files": files}).encode()
        fd = os.open("manifest.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=build_fd)
        with os.fdopen(fd, "wb") as out:
            out.write(manifest)
            out.flush()
            os.fsync(out.fileno())
        os.fsync(build_fd)
        try:
            os.rename(build, entry, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False  # another backend's entry is in place: ours goes
            raise
        return True

    @staticmethod
    def discard(dir_fd: int, sha256: str, provider: str) -> None:
        _remove_tree(dir_fd, entry_name(sha256, provider))

    @staticmethod
    def prune(dir_fd: int, keep: Iterable[str]) -> None:
        """Remove the graphs of models no longer in the tables, and builds left by dead backends."""
        wanted = {sha256[:SHA] for sha256 in keep}
        for name in os.listdir(dir_fd):
            found = ENTRY.match(name)
            if ((found and found["sha"] not in wanted) or OLD_ENTRY.match(name)
                    or ((BUILD.match(name) or OLD_BUILD.match(name)) and not _alive(int(name.split(".")[3])))):
                _remove_tree(dir_fd, name)


def _open_own_file(dir_fd: int, name: str) -> tuple[int, os.stat_result]:
    """An fd and stat of a private regular file of the server's user, opened without following links."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    info = os.fstat(fd)
    if not is_private_file(info):
        os.close(fd)
        raise ValueError(f"{name} is not a private regular file")
    return fd, info


def _own_file_stat(dir_fd: int, name: str) -> os.stat_result:
    fd, info = _open_own_file(dir_fd, name)
    os.close(fd)
    return info


def _read_own_file(dir_fd: int, name: str) -> bytes:
    fd, _ = _open_own_file(dir_fd, name)
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 20)


def _remove_tree(dir_fd: int, name: str) -> None:
    """Remove an entry or build directory (one level of plain files), never following links."""
    try:
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError:
        try:
            os.unlink(name, dir_fd=dir_fd)  # a file or symlink in its place
        except OSError:
            pass
        return
    try:
        for child in os.listdir(sub):
            try:
                os.unlink(child, dir_fd=sub)
            except OSError:
                pass
    finally:
        os.close(sub)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
