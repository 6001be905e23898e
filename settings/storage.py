"""paths.home must be a folder the app can write; when it is not, fall back and say so.

On a Hugging Face Space, `/data` exists only when persistent storage is attached. Without it the
`gpu` profile's home (/data/wayfarer) cannot be used, and the app would die at start-up on the
first write. Instead it serves from `paths.home_fallback` (a folder next to the code) and shows
why, since everything written there (votes, the index, adapters) is lost when the Space restarts.

The home's parent must already exist: the home itself is created, but a missing mount point such
as /data is never made, or a process running as root would create it on the container's own
disk and keep "persistent" data where a restart wipes it, without a word.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from settings.loader import ConfigError, Settings


def home_problem(home: Path) -> str | None:
    """Why `home` cannot hold the app's data (None when it can). Creates `home` when its parent exists."""
    if not home.parent.is_dir():
        return f"cannot be created: {home.parent} is not an existing folder (no storage is mounted there)"
    try:
        home.mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=home):  # the only sure test: root ignores permission bits
            pass
    except OSError as err:
        return f"is not writable ({err.strerror or err})"
    return None


def with_writable_home(settings: Settings) -> tuple[Settings, str | None]:
    """`settings` and None when paths.home is writable; else settings whose home is
    paths.home_fallback and a warning to show the user. Raises ConfigError when neither works."""
    home = settings.path("home")
    problem = home_problem(home)
    if problem is None:
        return settings, None
    fallback = settings.path("home_fallback")
    fallback_problem = home_problem(fallback) if fallback != home else problem
    if fallback_problem is not None:
        raise ConfigError(
            f"paths.home {home} {problem}, and paths.home_fallback {fallback} {fallback_problem}: "
            "set WAYFARER__PATHS__HOME to a writable folder"
        )
    warning = (
        f"persistent storage is not available (`{home}` {problem}), so this app keeps its data in "
        f"`{fallback}`: votes, and anything else saved here, will not survive a restart."
    )
    return settings.with_overrides({"paths": {"home": str(fallback)}}), warning
