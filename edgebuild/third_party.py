"""TFLM's C++ sources, pinned: the TFLM commit and the third-party trees its Makefile expects.

No package ships TFLM's sources, so edgebuild pins them (``SOURCES``) and lays them out once per
machine under the firmware cache (``firmware_root()``): the TFLM tree, with each third-party tree
in the folder TFLM's Makefile looks in (``tensorflow/lite/micro/tools/make/downloads/...``), so
that the Makefile downloads nothing. The archives come from ``$EDGEBUILD_THIRD_PARTY`` (a folder
holding them, for offline and air-gapped machines) or else from GitHub's archive URLs
(``$EDGEBUILD_SOURCES_URL`` replaces ``https://github.com``, e.g. for a mirror).

What is verified is each **extracted tree** (``tree_sha256``: the sorted relative paths and the
contents of every file and symlink), against the hashes below, not the archive bytes: GitHub does
not keep an archive's bytes stable, and the folder's archives were made with ``git archive``.
A missing archive is a ConfigError (exit 2), a corrupt one or a tree that does not match a
BuildError (exit 1); each says which archive and what to do in one line.

The layout is made in a temporary folder and renamed into place only when complete (with a
marker file saying what it holds), under an exclusive lock, so a killed setup leaves nothing
half-made that a later build would use.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgebuild import cache
from edgebuild.errors import BuildError, ConfigError
from edgebuild.files import sha256_of

ARCHIVES_ENV = "EDGEBUILD_THIRD_PARTY"
URL_ENV = "EDGEBUILD_SOURCES_URL"
FIRMWARE_DIR_ENV = "EDGEBUILD_FIRMWARE_DIR"
GITHUB = "https://github.com"
DOWNLOAD_TIMEOUT_S = 120
TFLM_COMMIT = "90b983c2b3f1480642e040bbd2ddb37b998f3424"
DOWNLOADS = "tensorflow/lite/micro/tools/make/downloads"
MARKER = "edgebuild-sources.json"


@dataclass(frozen=True)
class Source:
    """One pinned source tree: where it comes from, where TFLM's Makefile expects it, and its hash."""

    repo: str  # owner/name on GitHub
    ref: str  # the commit, or a tag
    folder: str  # relative to the TFLM root ("" = the root itself)
    tree_sha256: str  # tree_sha256() of the extracted archive, before any patch
    patch: str = ""  # a patch in the TFLM tree that TFLM's download scripts apply (patch -p1)

    @property
    def name(self) -> str:
        return self.repo.split("/")[1]

    @property
    def archive(self) -> str:
        """The archive's file name in ``$EDGEBUILD_THIRD_PARTY``: ``<repo>-<ref>.tar.gz``."""
        return f"{self.name}-{self.ref}.tar.gz"

    def url(self, base: str) -> str:
        """GitHub's archive URL for the ref, under ``base`` (``https://github.com`` or a mirror)."""
        return f"{base.rstrip('/')}/{self.repo}/archive/{self.ref}.tar.gz"

    @property
    def label(self) -> str:
        ref = self.ref[:12] if re.fullmatch(r"[0-9a-f]{40}", self.ref) else self.ref
        return f"{self.name} {ref}"


# The refs TFLM 90b983c2 itself pins (third_party_downloads.inc, flatbuffers_download.sh,
# kissfft_download.sh, ext_libs/cmsis_download.sh, ext_libs/cmsis_nn_download.sh), in the order
# they are laid out (Cortex_DFP goes inside CMSIS_6's folder).
SOURCES = (
    Source(
        "tensorflow/tflite-micro",
        TFLM_COMMIT,
        "",
        "c1d0fd809f5d88ca94c37b4f8177c4dbef363d41e4756fc7af4fa412cbc2c558",
    ),
    Source(
        "google/flatbuffers",
        "v25.9.23",
        f"{DOWNLOADS}/flatbuffers",
        "89f6bced0b98430834baa128d825ffd41eae3e226faad01212708294c1c0111f",
        patch="tensorflow/lite/micro/tools/make/flatbuffers.patch",
    ),
    Source(
        "google/gemmlowp",
        "719139ce755a0f31cbf1c37f7f98adcc7fc9f425",
        f"{DOWNLOADS}/gemmlowp",
        "561408088debedc48ddbb4411343ed6df14eefabf6bb27da5c13888a83bd4a0a",
    ),
    Source(
        "google/ruy",
        "d37128311b445e758136b8602d1bbd2a755e115d",
        f"{DOWNLOADS}/ruy",
        "d419725c0a92844990560abac058a8504e48e3aa8c70e153aa4d4afa089e23d3",
    ),
    Source(
        "mborgerding/kissfft",
        "v130",
        f"{DOWNLOADS}/kissfft",
        "56b319974ebbd57ac6a40077b4ef6a22b7e5d002d124c08e33b0d5e04dd61b2d",
        patch="third_party/kissfft/kissfft.patch",
    ),
    Source(
        "ARM-software/CMSIS-NN",
        "4ab83cc3cc98fb85ed6dafb55e8ca02f1628dcae",
        f"{DOWNLOADS}/cmsis_nn",
        "798c108b2e96d6034a75f3ed53c7f082e7708d8e0f09be03b33880d6c2767884",
    ),
    Source(
        "ARM-software/CMSIS_6",
        "5782d6f8057906d360f4b95ec08a2354afe5c9b9",
        f"{DOWNLOADS}/cmsis",
        "814e338b0a86e923d81145691eccc7f1baf00961c9283cf4e28dd19d1f9f5601",
    ),
    Source(
        "ARM-software/Cortex_DFP",
        "c2c70a97a20fb355815e2ead3d4a40e35a4a3cdf",
        f"{DOWNLOADS}/cmsis/Cortex_DFP",
        "c5403638f1c97552efe62f0910fda0c90488de2649d2b187eaeca791a3f0c759",
    ),
)

Progress = Callable[[str], None]


def firmware_root() -> Path:
    """Where firmware sources and libraries are cached: ``$EDGEBUILD_FIRMWARE_DIR``, else
    ``<stage cache>/firmware`` (``$EDGEBUILD_CACHE_DIR``, else ``~/.cache/edgebuild``)."""
    if os.environ.get(FIRMWARE_DIR_ENV):
        return Path(os.environ[FIRMWARE_DIR_ENV])
    return cache.default_root() / "firmware"


def sources_id() -> str:
    """A short name for the pinned set: the TFLM commit and a digest of every tree's hash."""
    digest = hashlib.sha256("".join(s.tree_sha256 for s in SOURCES).encode()).hexdigest()
    return f"tflm-{TFLM_COMMIT[:12]}-{digest[:12]}"


def tree_sha256(root: Path) -> str:
    """The sha256 over every file and symlink under ``root``, in sorted order of their relative paths:
    ``F <path>\\0<sha256 of the contents>`` for a file, ``L <path>\\0<target>\\0`` for a symlink.
    Folders, modes and times do not count (an archive's empty folders and permissions vary)."""
    entries: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if path.is_symlink() or path.is_file():
                entries.append((path.relative_to(root).as_posix(), path))
    digest = hashlib.sha256()
    for rel, path in sorted(entries):
        if path.is_symlink():
            digest.update(b"L " + rel.encode() + b"\0" + os.readlink(path).encode() + b"\0")
        else:
            digest.update(b"F " + rel.encode() + b"\0" + bytes.fromhex(sha256_of(path)) + b"\n")
    return digest.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tflm_tree(progress: Progress | None = None) -> Path:
    """The pinned TFLM tree with its third-party trees laid out, made once under ``firmware_root()``.

    Reads the archives from ``$EDGEBUILD_THIRD_PARTY`` or downloads them (``$EDGEBUILD_SOURCES_URL``
    or GitHub), extracts each into a temporary folder, checks its ``tree_sha256``, applies TFLM's
    patches and adds the empty ``downloads/pigweed`` folder that stops the Makefile cloning pigweed.
    Returns the TFLM root. Raises ConfigError (an archive missing from the folder, a folder that is
    not one) or BuildError (a download failed, an archive is corrupt, a tree is not the pinned one).
    """
    say = progress or (lambda _: None)
    root = firmware_root() / "sources"
    final = root / sources_id()
    if (final / MARKER).is_file():
        return final
    with locked(root / ".lock"):
        if (final / MARKER).is_file():  # another build made it while this one waited
            return final
        for stale in root.glob(f".{sources_id()}.part-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # no marker: a layout that was never completed
            shutil.rmtree(final)
        part = Path(tempfile.mkdtemp(prefix=f".{sources_id()}.part-", dir=root))
        try:
            start = time.perf_counter()
            tree = part / "tflm"
            for source in SOURCES:
                say(f"TFLM sources: {source.label}")
                with _archive(source, part) as archive:
                    extracted = part / f"x-{source.name}"
                    extract(archive, extracted, source.archive)
                check_tree(extracted, source)
                target = tree / source.folder if source.folder else tree
                target.parent.mkdir(parents=True, exist_ok=True)
                extracted.rename(target)
                if source.patch:
                    apply_patch(target, (tree / source.patch).read_text(), source.patch)
            (tree / DOWNLOADS / "pigweed").mkdir(parents=True, exist_ok=True)
            record = {
                "tflm_commit": TFLM_COMMIT,
                "sources": {s.repo: {"ref": s.ref, "tree_sha256": s.tree_sha256} for s in SOURCES},
                "seconds": round(time.perf_counter() - start, 1),
            }
            (tree / MARKER).write_text(json.dumps(record, indent=1))
            tree.rename(final)
        finally:
            shutil.rmtree(part, ignore_errors=True)
    return final


def copy_archives(into: Path, progress: Progress | None = None) -> list[str]:
    """Each pinned archive (from ``$EDGEBUILD_THIRD_PARTY`` or downloaded), checked by its extracted
    tree, copied into the folder ``into`` (made if missing): for a container image or an offline mirror.

    Returns the names copied. Writes nothing but the pinned archives' names, each through a temporary
    file renamed into place; an archive already there is kept when its tree is the pinned one.
    Raises ConfigError when ``into`` is not a folder or holds a file of an archive's name that is
    not that archive (it is never overwritten), and what ``tflm_tree`` raises for the sources.
    """
    say = progress or (lambda _: None)
    if into.exists() and (into.is_symlink() or not into.is_dir()):
        raise ConfigError(f"--into {into} is not a folder", hint="name a new or existing folder for the archives")
    into.mkdir(parents=True, exist_ok=True)
    copied = []
    with tempfile.TemporaryDirectory(prefix="edgebuild-sources-") as tmp:
        scratch = Path(tmp)
        for source in SOURCES:
            present = into / source.archive
            if present.exists() or present.is_symlink():
                try:
                    _check_archive(present, scratch / f"have-{source.name}", source)
                except BuildError:
                    raise ConfigError(
                        f"{present} is not the pinned {source.label} archive, and edgebuild does not overwrite it",
                        hint="move it away, or copy into another folder",
                    ) from None
                continue
            say(f"TFLM sources: {source.label}")
            with _archive(source, scratch) as archive:
                _check_archive(archive, scratch / f"x-{source.name}", source)
                part = into / f".{source.archive}.part-{os.getpid()}"
                try:
                    shutil.copyfile(archive, part)
                    part.rename(present)
                finally:
                    part.unlink(missing_ok=True)
            copied.append(source.archive)
    return copied


def _check_archive(archive: Path, scratch: Path, source: Source) -> None:
    """BuildError unless ``archive`` is a regular file whose extracted tree is ``source``'s."""
    if archive.is_symlink() or not archive.is_file():
        raise BuildError(f"{archive} is not a regular file")
    extract(archive, scratch, source.archive)
    try:
        check_tree(scratch, source)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _archive(source: Source, scratch: Path) -> Iterator[Path]:
    """The archive of ``source``: in ``$EDGEBUILD_THIRD_PARTY``, or downloaded into ``scratch`` (removed after)."""
    folder = os.environ.get(ARCHIVES_ENV, "")
    if folder:
        where = Path(folder)
        if not where.is_dir():
            raise ConfigError(
                f"${ARCHIVES_ENV} is {folder!r}, which is not a folder",
                hint="point it at the folder holding TFLM's source archives, or unset it to download them",
            )
        path = where / source.archive
        if not path.is_file():
            raise ConfigError(
                f"${ARCHIVES_ENV} ({folder}) has no {source.archive} ({source.label})",
                hint=f"put GitHub's archive {source.url(GITHUB)} there under that name, "
                f"or unset {ARCHIVES_ENV} to download it",
            )
        yield path
        return
    base = os.environ.get(URL_ENV) or GITHUB
    url = source.url(base)
    path = scratch / source.archive
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, path.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise BuildError(
            f"downloading {source.label} from {url} failed: {reason}",
            hint=f"check the network, or set {ARCHIVES_ENV}=DIR to a folder holding {source.archive} "
            "and the other pinned archives (offline builds)",
        ) from None
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def extract(archive: Path, into: Path, name: str) -> None:
    """Extract a .tar.gz's single top folder as ``into`` (``tar --strip-components=1``), safely:
    nothing may land outside ``into`` (tarfile's ``data`` filter). BuildError when it is corrupt."""
    into.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for member in tar.getmembers():
                parts = member.name.split("/", 1)
                if len(parts) < 2 or not parts[1]:
                    continue  # the top folder itself
                member.name = parts[1]
                if member.islnk():
                    member.linkname = member.linkname.split("/", 1)[-1]
                members.append(member)
            if not members:
                raise tarfile.ReadError("it holds no files")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, members=members, filter="data")
            else:  # Python before 3.11.4 (Debian bookworm's 3.11.2) has no extraction filters
                for member in members:
                    _check_member(member)
                tar.extractall(into, members=members)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise BuildError(
            f"the archive {archive} is corrupt or truncated ({name}: {e})",
            hint="replace it with a fresh copy of the pinned archive"
            + (f", or unset {ARCHIVES_ENV} to download it" if os.environ.get(ARCHIVES_ENV) else ""),
        ) from None


def _check_member(member: tarfile.TarInfo) -> None:
    """What tarfile's ``data`` filter refuses, for Pythons without it: a path, or a link's target,
    outside the archive's folder, and anything but files, folders and links (devices, FIFOs)."""
    paths = [member.name]
    if member.issym():
        paths.append(os.path.join(os.path.dirname(member.name), member.linkname))
    elif member.islnk():
        paths.append(member.linkname)
    for path in paths:
        normal = os.path.normpath(path)
        if os.path.isabs(path) or normal == ".." or normal.startswith("../"):
            raise tarfile.ReadError(f"{member.name} points outside the archive's folder")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise tarfile.ReadError(f"{member.name} is not a file, folder or link")


def check_tree(tree: Path, source: Source) -> None:
    """BuildError unless the extracted ``tree`` is exactly the pinned ``source``."""
    found = tree_sha256(tree)
    if found != source.tree_sha256:
        raise BuildError(
            f"the sources in {source.archive} are not the pinned {source.label}: their tree hash is "
            f"{found[:16]}…, edgebuild expects {source.tree_sha256[:16]}…",
            hint=f"replace the archive with GitHub's {source.url(GITHUB)}",
        )


def apply_patch(root: Path, diff: str, name: str) -> None:
    """Apply a ``git diff``-style unified diff to the files under ``root`` (``patch -p1``), exactly:
    every hunk's old lines must be where the hunk says. No ``patch`` program is needed.
    Raises BuildError when a hunk does not apply (the tree is not the one the patch was made for)."""
    lines = diff.split("\n")
    i = 0
    path: Path | None = None
    text: list[str] = []
    offset = 0

    def save() -> None:
        if path is not None:
            path.write_text("\n".join(text))

    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("+++ "):
            save()
            path = root / line[4:].strip().removeprefix("b/")
            text, offset = path.read_text().split("\n"), 0
            continue
        hunk = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", line)
        if hunk is None or path is None:
            continue
        old_left, new_left = int(hunk.group(2) or 1), int(hunk.group(4) or 1)
        old: list[str] = []
        new: list[str] = []
        while (old_left or new_left) and i < len(lines):
            body = lines[i]
            i += 1
            if body.startswith("\\"):
                continue
            kind, content = body[:1] or " ", body[1:]
            if kind in " -":
                old.append(content)
                old_left -= 1
            if kind in " +":
                new.append(content)
                new_left -= 1
        start = int(hunk.group(1)) - (1 if old else 0) + offset
        if text[start : start + len(old)] != old:
            raise BuildError(f"{name} does not apply to {path.relative_to(root)} (the hunk at line {start + 1})")
        text[start : start + len(old)] = new
        offset += len(new) - len(old)
    save()
