"""Output folders edgebuild owns, and publishing a finished build into one atomically.

An output folder may be one that does not exist yet, an empty folder, or a folder
holding a previous edgebuild build (its ``manifest.json`` lists every file in it).
Anything else — a folder with other files, a file, a symlink, ``/``, the home folder,
the project, recipe or target folder or any parent of them — is refused before any
work, and nothing in it is touched. Publishing never deletes a file edgebuild did not
write: the previous build's files are removed by the list in its manifest, and a
folder that gained other files during the build is not replaced.

Stages write into a private work folder beside the output folder (marked as
edgebuild's by a file inside it); it replaces the output folder in one atomic
exchange (Linux ``renameat2``) when the whole build succeeded.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edgebuild.errors import BuildError, ConfigError
from edgebuild.files import check_path_text, stat_path
from edgebuild.manifest import MANIFEST, WORK_MARKER  # only folders holding the marker are ever cleared

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_RENAME_EXCHANGE = 2


def _listed_outputs(folder: Path) -> set[str] | None:
    """The relative paths the folder's manifest lists as outputs, or None when it has no readable manifest."""
    manifest = folder / MANIFEST
    try:
        info = manifest.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES:
            return None
        record = json.loads(manifest.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    outputs = record.get("outputs") if isinstance(record, dict) else None
    if not isinstance(outputs, dict) or not all(isinstance(k, str) for k in outputs):
        return None
    return set(outputs)


def foreign_files(folder: Path) -> list[str]:
    """Entries under ``folder`` that edgebuild did not write (relative paths, sorted).

    A file is edgebuild's when the folder's manifest lists it (or it is the manifest);
    a subfolder is when everything in it is. Symlinks and special files never are.
    An empty folder has none; a non-empty one without a manifest has all of them.
    """
    listed = _listed_outputs(folder) or set()
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
            relative = str((base / name).relative_to(folder))
            path = base / name
            is_ours = relative == MANIFEST or relative in listed
            if not is_ours or path.is_symlink() or not path.is_file():
                found.append(relative)
    return sorted(found)


def protected_folders(recipe: str | Path, target: str | Path, cache: Path | None = None) -> list[tuple[str, Path]]:
    """Folders an output folder must never be or contain, each with what it is: the root and home
    folders, the current folder, the recipe's and the target's folders, and the stage cache."""
    named = [("the root folder", Path("/")), ("your home folder", Path.home()), ("the current folder", Path.cwd())]
    named += [("the recipe's folder", Path(recipe).parent), ("the target profile's folder", Path(target).parent)]
    named += [("the stage cache", cache)] if cache is not None else []
    resolved = []
    for what, folder in named:
        with contextlib.suppress(OSError, RuntimeError):
            resolved.append((what, folder.resolve()))
    return resolved


def check_out_folder(out: Path, protected: Iterable[tuple[str, Path]]) -> None:
    """Refuse an output folder edgebuild may not replace; touches nothing.

    Reads ``out`` (metadata, and its manifest when it has one). Raises ConfigError
    (exit 2) when ``out`` is a symlink, a file or anything but a folder, is or contains
    one of the ``protected`` (what, folder) pairs, or holds files its manifest does not list.
    """
    where = f"output folder {out}"
    check_path_text(out, "--out")
    hint = "give --out a new or empty folder, or one holding a previous edgebuild build"
    try:
        info = out.lstat()
    except FileNotFoundError:
        info = None
    except OSError:
        info = None
        stat_path(out, "--out")  # raises the one-line reason (a loop, a file in the path, ...)
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{where} is a symlink; edgebuild does not replace links", hint="give the real folder")
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{where} is a file, not a folder; edgebuild will not replace it", hint=hint)
    stat_path(out.parent, "--out")
    try:
        resolved = out.resolve()
    except (OSError, RuntimeError) as e:
        raise ConfigError(f"{where}: cannot resolve the path ({e})") from None
    clashes = [(what, f) for what, f in protected if f == resolved]
    clashes += [(what, f) for what, f in protected if f.is_relative_to(resolved) and f != resolved]
    if clashes:
        what, folder = clashes[0]
        relation = "is" if folder == resolved else "contains"
        raise ConfigError(
            f"{where} {relation} {what} ({folder}), which holds files edgebuild did not write; "
            "a build replaces its whole output folder",
            hint=hint,
        )
    if info is None:
        return
    foreign = foreign_files(out)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ConfigError(
            f"{where} holds {foreign[0]!r}{more}, which edgebuild did not write; a build replaces its whole "
            "output folder, so it refuses folders with other files",
            hint=hint,
        )


def make_work_folder(out: Path) -> Path:
    """A private, marked work folder beside ``out``; clears the marked ones killed builds left behind.

    Creates ``out``'s parent folders. Raises ConfigError when they cannot be written.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{out.name}.tmp-"
        for stale in out.parent.glob(f"{prefix}*"):
            if _running(stale):
                continue
            if (stale / WORK_MARKER).is_file() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            elif stale.is_dir() and not stale.is_symlink():
                with contextlib.suppress(OSError):
                    stale.rmdir()  # killed before it was marked: empty
        work = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out.parent))
        (work / WORK_MARKER).write_text("a build's private work folder; edgebuild removes it\n")
        return work
    except OSError as e:
        raise ConfigError(
            f"output folder {out}: cannot write there ({e.strerror or e})",
            hint="choose another folder with --out, or fix its permissions",
        ) from None


def remove_build(folder: Path) -> list[str]:
    """Delete a build folder's files by its manifest, then its empty subfolders and itself.

    Reads ``folder/manifest.json``; deletes only the files it lists, the manifest and
    the work marker. Returns what was left because edgebuild did not write it.
    """
    listed = _listed_outputs(folder) or set()
    real_folder = os.path.realpath(folder)
    for relative in [*sorted(listed), MANIFEST, WORK_MARKER]:
        path = folder / relative
        inside = os.path.realpath(path).startswith(real_folder + os.sep)  # no .., no links out
        if inside and not path.is_symlink() and path.is_file():
            path.unlink()
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            Path(dirpath).rmdir()  # only empty folders go
    return foreign_files(folder) if folder.exists() else []


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two folders (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def publish(work: Path, out: Path) -> list[str]:
    """Replace ``out`` with the finished ``work`` folder atomically; remove the previous build by its manifest.

    Checks ``out`` once more first (it must still hold only edgebuild's files). Returns
    files that could not be removed because edgebuild did not write them (left in a
    hidden folder beside ``out``, named in the list). Raises ConfigError when ``out``
    gained other files during the build, BuildError when it cannot be replaced; the
    previous artifacts stay as they were then.
    """
    (work / WORK_MARKER).unlink(missing_ok=True)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"output folder {out} was replaced by a file or link during the build; not published")
    if out.exists():
        foreign = foreign_files(out)
        if foreign:
            raise ConfigError(
                f"output folder {out} gained {foreign[0]!r} during the build, which edgebuild did not write; "
                "the build was not published",
                hint="move that file away and build again",
            )
    try:
        if not out.exists():
            work.rename(out)
            return []
        if not _exchange(work, out):
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            try:
                work.rename(out)
            except OSError:
                old.rename(out)
                raise
            work = old
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BuildError(f"publish: no space left on the device ({out.parent})") from None
        raise BuildError(
            f"publish: cannot replace {out} ({e.strerror or e}); the previous artifacts were left as they were",
            hint="check the folder's permissions",
        ) from None
    left = remove_build(work)  # ``work`` now holds the previous build
    return [str(work / name) for name in left]


def clean_builds(build: Path) -> tuple[int, list[str]]:
    """Remove every edgebuild build under ``build`` (folders with a manifest, and marked work folders
    of finished builds), then the folders left empty. Returns the number of builds removed and the
    files kept because edgebuild did not write them (relative to ``build``)."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(build):
        folder = Path(dirpath)
        if WORK_MARKER in filenames and not _running(folder):
            shutil.rmtree(folder, ignore_errors=True)
            dirnames.clear()
        elif MANIFEST in filenames and _listed_outputs(folder) is not None:
            remove_build(folder)
            removed += 1
            dirnames.clear()
    for dirpath, _, _ in sorted(os.walk(build), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            Path(dirpath).rmdir()  # only empty folders go
    kept = [str(Path(d, f).relative_to(build)) for d, _, files in os.walk(build) for f in files]
    return removed, sorted(kept)


def _running(work: Path) -> bool:
    """Whether the build that made this work folder (``.<name>.tmp-<pid>-...``) is still running."""
    pid = work.name.rpartition(".tmp-")[2].split("-")[0]
    return pid.isdigit() and Path(f"/proc/{pid}").exists()
