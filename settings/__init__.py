"""Wayfarer's single configuration: `wayfarer.yaml` + a profile + environment overrides.

Every entry point calls `load_settings()`; packages turn the section they own into their own
config dataclass with `build_dataclass`, so typos in the YAML fail loudly instead of being ignored.
"""

from settings.loader import ConfigError, Settings, build_dataclass, load_settings, resolve_model_ref
from settings.runtime import apply_runtime
from settings.storage import with_writable_home

__all__ = [
    "ConfigError",
    "Settings",
    "apply_runtime",
    "build_dataclass",
    "load_settings",
    "resolve_model_ref",
    "with_writable_home",
]
