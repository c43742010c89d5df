"""Reading user-chosen files safely: regular files only, sizes checked before reading.

A named pipe blocks ``open`` forever, ``/dev/zero`` never ends, a symlink loop or a NUL
byte in a path raises deep inside a library: every path a user names goes through
``regular_file`` (or ``read_limited``) first, which turns each of those into one
``ConfigError`` line naming the path.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from edgebuild.errors import ConfigError


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def check_path_text(path: Path | str, where: str) -> None:
    """ConfigError when a path cannot name a file at all (a NUL byte in it)."""
    if "\0" in str(path):
        raise ConfigError(f"{_at(where)}the path {str(path)!r} holds a NUL byte", hint="give a plain file name")


def stat_path(path: Path, where: str) -> os.stat_result | None:
    """``os.stat`` of ``path`` (symlinks followed); None when nothing is there.

    Raises ConfigError for a NUL byte, a symlink loop, a path through a file, or
    any other error reading the file's metadata.
    """
    check_path_text(path, where)
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(f"{_at(where)}{path} is a symlink loop", hint="point the link at a real file") from None
        if e.errno == errno.ENOTDIR:
            raise ConfigError(f"{_at(where)}{path}: a part of the path is a file, not a folder") from None
        if e.errno == errno.ENAMETOOLONG:
            raise ConfigError(f"{_at(where)}{path}: the path is too long") from None
        raise ConfigError(f"{_at(where)}{path}: cannot read ({e.strerror or e})") from None


def regular_file(path: Path, where: str, *, max_bytes: int, what: str = "file") -> int:
    """Check that ``path`` is a readable regular file of at most ``max_bytes``; return its size.

    Raises ConfigError (naming ``where`` and the path) when it is missing, a folder,
    a FIFO, a device or a socket, too large, or cannot be stat'ed.
    """
    info = stat_path(path, where)
    if info is None:
        raise ConfigError(f"{_at(where)}{what} {path} does not exist")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{_at(where)}{path} is {_kind(info.st_mode)}, expected a {what}")
    if info.st_size > max_bytes:
        raise ConfigError(
            f"{_at(where)}{path} is {info.st_size:,} bytes, more than the {max_bytes:,} edgebuild reads as a {what}",
            hint="is this the right file?",
        )
    return info.st_size


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes (hex), read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_limited(path: Path, where: str, *, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; ConfigError (one line) otherwise.

    The file is opened without blocking and checked again after opening, so a path
    swapped for a FIFO between the check and the read cannot hang the build.
    """
    regular_file(path, where, max_bytes=max_bytes, what=what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except PermissionError:
        raise ConfigError(f"{_at(where)}{path}: permission denied", hint="make the file readable") from None
    except OSError as e:
        raise ConfigError(f"{_at(where)}{path}: cannot read ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{_at(where)}{path} is not a regular file, expected a {what}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError(f"{_at(where)}{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ConfigError(f"{_at(where)}{path} grew past {max_bytes:,} bytes while being read")
    return data
