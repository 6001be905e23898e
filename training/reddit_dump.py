"""Stream Reddit dump files (Pushshift / Arctic Shift): one JSON object per line.

Plain `.jsonl`/`.ndjson` files and zstandard-compressed `.zst` files are read line by line,
never whole: the monthly dumps are tens of GB. Compression is detected from the file's magic
bytes, so a compressed file without the `.zst` suffix still works. Lines that are not a JSON
object (bad JSON, a bare value, a blank line) are counted per file and skipped; they never stop
a run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import zstandard

log = logging.getLogger(__name__)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Pushshift/Arctic Shift dumps are made with `zstd --long=31`: reading them needs a 2 GiB window.
ZSTD_MAX_WINDOW = 2**31
DUMP_SUFFIXES = (".jsonl", ".ndjson", ".zst")
DUMP_PREFIXES = ("RS_", "RC_")


class DumpInputError(FileNotFoundError):
    """An input path does not exist or holds no dump file."""


@dataclasses.dataclass
class DumpStats:
    """What reading saw, per file (keys are the file paths as given)."""

    lines: dict[str, int] = dataclasses.field(default_factory=dict)
    broken_lines: dict[str, int] = dataclasses.field(default_factory=dict)
    # Files that ended early (a truncated .zst): what was read before the break is kept.
    truncated_files: list[str] = dataclasses.field(default_factory=list)

    @property
    def total_lines(self) -> int:
        return sum(self.lines.values())

    @property
    def total_broken(self) -> int:
        return sum(self.broken_lines.values())


def _dump_files_in(folder: Path) -> list[Path]:
    """A folder's RS_*/RC_* files; only when it has none, its *.jsonl/*.ndjson/*.zst files.

    Preferring RS_/RC_ lets other JSONL files (the demo corpus's evaluation probes) live next
    to the dumps without being read as Reddit records.
    """
    files = sorted(child for child in folder.iterdir() if child.is_file() and not child.name.startswith("."))
    named = [child for child in files if child.name.startswith(DUMP_PREFIXES)]
    return named or [child for child in files if child.name.endswith(DUMP_SUFFIXES)]


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files to read, in a stable order; a folder expands to its dump files (not recursively)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = _dump_files_in(path)
            if not found:
                raise DumpInputError(f"{path} holds no dump files (RS_*/RC_*, *.jsonl, *.ndjson, *.zst)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DumpInputError(f"input {path} does not exist")
    # The same file named twice (a directory and one of its files) is read once.
    unique: dict[Path, None] = {}
    for file in files:
        unique.setdefault(file.resolve(), None)
    return list(unique)


def kind_from_filename(path: Path) -> str | None:
    """'submission' for RS_* files, 'comment' for RC_* files, else None (a hint only)."""
    if path.name.startswith("RS_"):
        return "submission"
    if path.name.startswith("RC_"):
        return "comment"
    return None


def _open_text(path: Path, raw: io.BufferedReader) -> io.TextIOBase:
    if raw.peek(4)[:4] == ZSTD_MAGIC:
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        stream = decompressor.stream_reader(raw, read_across_frames=True)
        # errors="replace": one bad byte in a 30 GB dump should cost a character, not the file.
        return io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def read_dump_file(path: str | Path, stats: DumpStats | None = None) -> Iterator[dict]:
    """Yield each JSON object of one dump file; broken lines are counted in `stats` and skipped."""
    path = Path(path)
    stats = stats if stats is not None else DumpStats()
    key = str(path)
    stats.lines.setdefault(key, 0)
    stats.broken_lines.setdefault(key, 0)
    with open(path, "rb") as raw_file:
        text = _open_text(path, io.BufferedReader(raw_file))
        try:
            for line in _lines(text, path, stats):
                stats.lines[key] += 1
                record = _parse_line(line)
                if record is None:
                    stats.broken_lines[key] += 1
                    continue
                yield record
        finally:
            text.close()


def _lines(text: io.TextIOBase, path: Path, stats: DumpStats) -> Iterator[str]:
    """Lines of the file; a corrupt or truncated compressed stream ends the file with a warning."""
    while True:
        try:
            line = text.readline()
        except zstandard.ZstdError as err:
            log.warning("%s: compressed stream is damaged (%s); keeping the lines read before it", path, err)
            stats.truncated_files.append(str(path))
            return
        if not line:
            return
        yield line


def _parse_line(line: str) -> dict | None:
    stripped = line.strip()
    if not stripped:
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
