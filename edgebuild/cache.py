"""A content-addressed cache of stage results, bounded in size, least recently used out first.

An entry lives in ``<root>/<key[:2]>/<key>/``: ``arrays.npz`` (weights, model bytes)
and ``meta.json``, which records the sha256 of ``arrays.npz``. A key is the sha256 of
everything the stage's result depends on (see ``cache_key``), so an entry never goes
stale: a changed input is a different key. An entry whose hash does not match is
deleted and rebuilt, never used. Reading an entry touches it; storing one evicts the
least recently used entries until the cache fits its size bound.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgebuild.errors import ConfigError
from edgebuild.files import check_path_text, sha256_of, stat_path

DEFAULT_MAX_BYTES = 2 * 1024**3
CACHE_FORMAT = 4  # what an entry's meta.json holds; part of every key, so older entries are never read
_KEY = re.compile(r"[0-9a-f]{64}")


def default_root() -> Path:
    """``$EDGEBUILD_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgebuild``, else ``~/.cache/edgebuild``."""
    if os.environ.get("EDGEBUILD_CACHE_DIR"):
        return Path(os.environ["EDGEBUILD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgebuild"


def default_max_bytes() -> int:
    """``$EDGEBUILD_CACHE_MAX_BYTES``, else 2 GiB. Raises ConfigError for a value that is not a positive integer."""
    value = os.environ.get("EDGEBUILD_CACHE_MAX_BYTES", "").strip()
    if not value:
        return DEFAULT_MAX_BYTES
    if not value.isdigit() or int(value) == 0:
        raise ConfigError(
            f"$EDGEBUILD_CACHE_MAX_BYTES is {value!r}, not a positive number of bytes",
            hint="set it to e.g. 2147483648, or unset it",
        )
    return int(value)


def check_cache_root(root: Path) -> None:
    """Make sure the stage cache can live in ``root``: create it, and write and remove a probe file there.

    Raises ConfigError naming the folder when it is a file, lies under a file, or cannot be written.
    """
    where = f"stage cache folder {root}"
    check_path_text(root, "--cache-dir")
    info = stat_path(root, where)
    if info is not None and not root.is_dir():
        raise ConfigError(f"{where} is a file, not a folder", hint="give --cache-dir a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(
            f"{where}: cannot write there ({e.strerror or e})",
            hint="choose another folder with --cache-dir or $EDGEBUILD_CACHE_DIR, or pass --no-cache",
        ) from None


def cache_key(*parts: Any) -> str:
    """The sha256 of a canonical JSON form of ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """A stage result read back from the cache."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


class StageCache:
    """Stage results by key under ``root``; ``enabled=False`` makes every lookup a miss and stores nothing."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES, enabled: bool = True):
        self.root = root
        self.max_bytes = max_bytes
        self.enabled = enabled
        self.corrupt: list[str] = []  # keys of entries found corrupt and removed

    def _folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def load(self, key: str) -> Entry | None:
        """The entry for ``key``, or None when absent, disabled or corrupt (a corrupt entry is removed)."""
        folder = self._folder(key)
        if not self.enabled or not (folder / "meta.json").is_file():
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("key") != key or sha256_of(folder / "arrays.npz") != meta.get("arrays_sha256"):
                raise ValueError("hash mismatch")
            with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            self.corrupt.append(key)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        now = time.time()
        os.utime(folder / "meta.json", (now, now))  # least recently used is judged by this
        return Entry(arrays, meta["meta"])

    def store(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Write an entry atomically (a temporary folder renamed into place), then evict to the size bound.

        Another process may store the same key at the same time (a search's trials share stages): an
        entry already in place is kept, since a key names what its content is computed from."""
        if not self.enabled:
            return
        folder = self._folder(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=folder.parent))
        try:
            np.savez(tmp / "arrays.npz", **arrays)  # type: ignore[arg-type]
            record = {"key": key, "arrays_sha256": sha256_of(tmp / "arrays.npz"), "meta": meta}
            (tmp / "meta.json").write_text(json.dumps(record, default=str))
            if folder.exists() and not (folder / "meta.json").is_file():
                shutil.rmtree(folder, ignore_errors=True)  # what is left of an entry that was never complete
            try:
                tmp.rename(folder)
            except OSError:
                if not (folder / "meta.json").is_file():  # not a concurrent store of the same entry
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.evict()

    def entries(self) -> list[tuple[float, int, Path]]:
        """Every entry as (last used, bytes, folder); only folders named by a key are entries."""
        found = []
        for meta in self.root.glob("??/*/meta.json"):
            folder = meta.parent
            if not (_KEY.fullmatch(folder.name) and folder.name[:2] == folder.parent.name) or folder.is_symlink():
                continue
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            found.append((meta.stat().st_mtime, size, folder))
        return found

    def evict(self) -> list[Path]:
        """Remove least recently used entries until the cache is within ``max_bytes``; return them."""
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, folder in entries:
            if total <= self.max_bytes:
                break
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed.append(folder)
        return removed

    def clear(self) -> int:
        """Delete every entry (and nothing else: the folder may hold other files); return the bytes freed."""
        entries = self.entries()
        for _, _, folder in entries:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.parent.rmdir()  # only when empty
        return sum(size for _, size, _ in entries)
