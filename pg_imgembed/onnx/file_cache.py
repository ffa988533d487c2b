"""A per-server file cache of model bytes, keyed by sha256.

The first backend that needs a model writes it once to the cache directory (by default
``<data_directory>/pg_imgembed_models``); every later backend lets onnxruntime load the file
directly. That skips reading the bytea through SPI into Python (a second and third copy of the
model in the backend), which is most of the cold-start time and memory.

What the cache trusts, and why a hostile role or local account cannot feed it a model:
- the directory is the server's choice: ``imgembed.model_cache`` is a superuser-only setting;
- it is used only if it is a real directory (no symlink) owned by the server's OS user and not
  writable by group or others; anything else turns the cache off for the backend (with a WARNING);
- every operation is relative to the opened directory (``dir_fd``) with ``O_NOFOLLOW``; new files
  are created with ``O_EXCL`` under a temporary name, mode 0600, and renamed into place;
- before onnxruntime reads a file, it must be a regular file owned by the server's user, mode
  0600, with the size and sha256 the model table records. The hash is computed once per backend
  and file, and again whenever the file's identity (device, inode, size, mtime, ctime) changes;
  onnxruntime is handed ``/proc/self/fd/N`` of the very file that was checked, so nothing can be
  swapped in between. A file that fails a check is removed and written again from the table.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

SUFFIX = ".onnx"
NAME = re.compile(r"^[0-9a-f]{64}\.onnx$")
CHUNK = 1 << 20


class UnsafeDirectory(Exception):
    """The cache directory is not one only the server's user controls."""


def is_private_file(info: os.stat_result) -> bool:
    """A regular file of the server's user that only it may read (what both caches write)."""
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o600


def file_identity(info: os.stat_result) -> list[int]:
    """What changes when a file is replaced or rewritten: both caches re-verify a file whose
    identity is not the one they recorded (optimized graphs keep it in their manifests)."""
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


class ModelFileCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._verified: dict[str, list[int]] = {}  # sha256 -> identity of the file checked

    def open_directory(self) -> int:
        """An fd of the cache directory, created if missing; UnsafeDirectory if others control it."""
        try:
            os.mkdir(self.directory, 0o700)
        except FileExistsError:
            pass
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeDirectory(f"model cache directory {self.directory} is a symbolic link or not a "
                                      "directory: not used") from None
            raise
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            os.close(fd)
            raise UnsafeDirectory(
                f"model cache directory {self.directory} is not owned by the server's user, or is "
                "writable by group or others: not used")
        return fd

    @contextmanager
    def directory_fd(self) -> Iterator[int]:
        fd = self.open_directory()
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def open_verified(self, sha256: str, size: int, fetch: Callable[[], bytes]) -> Iterator[Path | None]:
        """A path onnxruntime can load that holds exactly the model with this sha256 and size,
        valid inside the ``with``; None when the cache cannot serve it (load from the bytes)."""
        try:
            dir_fd = self.open_directory()
        except OSError:
            yield None  # no directory and none can be made (read-only disk): load from the bytes
            return
        try:
            fd = self._checked_file(dir_fd, sha256, size)
            if fd is None:
                self._write(dir_fd, sha256, fetch)
                fd = self._checked_file(dir_fd, sha256, size)
        except OSError:
            fd = None
        finally:
            os.close(dir_fd)
        if fd is None:
            yield None
            return
        try:
            yield Path(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def _checked_file(self, dir_fd: int, sha256: str, size: int) -> int | None:
        """An open fd of the cached file if it passes every check; a file that fails is removed."""
        name = f"{sha256}{SUFFIX}"
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError:  # a symlink (ELOOP) or anything else odd: not ours
            self._remove(dir_fd, name)
            return None
        info = os.fstat(fd)
        good = is_private_file(info) and info.st_size == size
        if good and self._verified.get(sha256) != file_identity(info):
            good = _sha256_of(fd) == sha256
            if good:
                self._verified[sha256] = file_identity(info)
        if not good:
            os.close(fd)
            self._verified.pop(sha256, None)
            self._remove(dir_fd, name)
            return None
        return fd

    def _write(self, dir_fd: int, sha256: str, fetch: Callable[[], bytes]) -> None:
        data = fetch()
        if hashlib.sha256(data).hexdigest() != sha256:
            return  # never cache bytes that are not what the table says
        temporary = f".{sha256}.{os.getpid()}.tmp"
        self._remove(dir_fd, temporary)  # left by a crashed backend with this pid
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, f"{sha256}{SUFFIX}", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            self._remove(dir_fd, temporary)
            raise

    @staticmethod
    def _remove(dir_fd: int, name: str) -> None:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass

    def discard(self, sha256: str) -> None:
        with self.directory_fd() as dir_fd:
            self._remove(dir_fd, f"{sha256}{SUFFIX}")
        self._verified.pop(sha256, None)

    def prune(self, keep: Iterable[str]) -> None:
        """Remove cached models no longer in the table (only names this cache writes)."""
        wanted = {f"{sha}{SUFFIX}" for sha in keep}
        with self.directory_fd() as dir_fd:
            for name in os.listdir(dir_fd):
                if NAME.match(name) and name not in wanted:
                    self._remove(dir_fd, name)


def _sha256_of(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
