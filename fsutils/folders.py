"""Atomic replacement of folders and files (see the package docstring for why it is hand-written)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def move_into_place(source: Path, target: Path) -> None:
    """Put `source` (a file or folder next to `target`, same file system) at `target` by rename.
    A folder already at `target` is first moved into a hidden `.<name>.old-*` folder and deleted
    once the new one is in: a crash in between leaves the old one there, never a half-written one."""
    source, target = Path(source), Path(target)
    old = None
    if target.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def replacing_folder(target: Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty scratch folder beside `target`; when the block completes, it becomes
    `target` (move_into_place). When the block raises, the scratch folder is deleted and `target`
    is as it was. With `keep_existing`, a folder that another process put at `target` meanwhile
    (the same content, e.g. a converted checkpoint) is kept and the scratch one dropped."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        scratch.chmod(0o755)  # mkdtemp makes it owner-only; the result is an ordinary folder
        yield scratch
        if keep_existing:
            try:
                os.rename(scratch, target)  # fails when a non-empty folder is already there
            except OSError:
                if not target.exists():
                    raise
        else:
            move_into_place(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a file beside it and one rename: readers see the old
    content or the new, never part of it (two writers at once: the last rename wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        scratch.write_text(text)
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)
    return path


def files_digest(folder: Path, pattern: str = "*") -> str | None:
    """A hash of the names and bytes of the files under `folder` matching `pattern`, in name
    order (None when there are none): equal digests mean equal files."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob(pattern) if p.is_file()) if folder.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(folder)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
