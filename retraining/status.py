"""The loop's status file (what the app shows) and the one-loop-per-home lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from fsutils import write_text_atomic
from retraining.config import LOCK_FILE, LOG_LINES, STATUS_FILE
from settings import Settings


class LoopBusy(RuntimeError):
    """Another loop holds paths.home/retrain.lock."""


def status_path(settings: Settings) -> Path:
    return settings.path("home") / STATUS_FILE


def read_status(settings: Settings) -> dict:
    """The loop's status file ({} before the first run)."""
    try:
        data = json.loads(status_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class StatusFile:
    """Read-modify-write of the status file by the one loop holding the lock."""

    def __init__(self, settings: Settings, echo: Callable[[str], None] = print):
        self.settings = settings
        self.data = read_status(settings)
        self.echo = echo

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.data["updated_at"] = time.time()
        write_text_atomic(status_path(self.settings), json.dumps(self.data, indent=2, sort_keys=True) + "\n")

    def log(self, step: str, message: str, **fields) -> None:
        self.echo(f"loop [{step}] {message}")
        entries = list(self.data.get("log") or [])[-(LOG_LINES - 1):]
        entries.append({"at": time.time(), "step": step, "message": message})
        self.update(log=entries, step=step, message=message, **fields)


@contextlib.contextmanager
def loop_lock(settings: Settings):
    """Hold paths.home/retrain.lock (LoopBusy when another process holds it). flock: released by
    the kernel when the holder dies, so a killed loop never leaves it stale."""
    path = settings.path("home") / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LoopBusy(f"another retraining loop holds {path}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
