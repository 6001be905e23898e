"""Wayfarer's single configuration: `wayfarer.yaml` + a profile + environment overrides.

Every entry point calls `load_settings()`, which checks the merged result against
settings.schema (one pydantic model per section, types only: every value lives in the YAML), so
an unknown key, a missing one or a wrong type fails at start-up, named by its dotted key.
`settings.config` holds the typed sections; packages turn the section they own into their config
dataclass (range rules, derived values) with `build_dataclass`.
"""

from settings.loader import (
    ConfigError,
    Settings,
    build_dataclass,
    load_settings,
    resolve_model_ref,
    shipped_defaults,
    validate_config,
)
from settings.schema import WayfarerConfig
from settings.runtime import apply_runtime
from settings.storage import with_writable_home

__all__ = [
    "ConfigError",
    "Settings",
    "WayfarerConfig",
    "apply_runtime",
    "build_dataclass",
    "load_settings",
    "resolve_model_ref",
    "shipped_defaults",
    "validate_config",
    "with_writable_home",
]
