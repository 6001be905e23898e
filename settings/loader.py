"""Load, merge and resolve the YAML configuration."""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
import yaml

from settings.schema import WayfarerConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = REPO_ROOT / "wayfarer.yaml"
ENV_PREFIX = "WAYFARER__"
PACKAGE_REF_PREFIX = "package:"


class ConfigError(ValueError):
    """The configuration cannot be used as written."""


def validate_config(data: Mapping[str, Any], source: str) -> WayfarerConfig:
    """The merged configuration checked against settings.schema; every problem named by its
    dotted key (`training.qlora.batch_size: Input should be a valid integer`)."""
    try:
        return WayfarerConfig.model_validate(data)
    except pydantic.ValidationError as err:
        problems: dict[str, list[str]] = {}
        for error in err.errors():
            key = _dotted_key(data, error["loc"], missing=error["type"] == "missing")
            shown = "" if error["type"] in ("missing", "extra_forbidden") else f" (got {error['input']!r})"
            problems.setdefault(key, []).append(error["msg"] + shown)
        lines = [f"  {key}: {' or '.join(messages)}" for key, messages in problems.items()]
        unknown = [_dotted_key(data, e["loc"], missing=False) for e in err.errors() if e["type"] == "extra_forbidden"]
        if unknown:
            lines.append(f"unknown configuration keys {unknown}: every key is in wayfarer.yaml's `defaults`, spelt as there")
        raise ConfigError(f"{source} is not valid:\n" + "\n".join(lines)) from None


def _dotted_key(data: Any, loc: tuple, *, missing: bool) -> str:
    """pydantic's error location as the YAML key: the parts that are keys (or list indexes) of
    `data`, without the type names pydantic adds for each member of a union (`str`, `list[str]`)."""
    parts, node = [], data
    for position, part in enumerate(loc):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif not (missing and position == len(loc) - 1):
            break
        parts.append(str(part))
    return ".".join(parts) or "(top level)"


def _deep_merge(base: dict, override: Mapping) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _set_dotted(tree: dict, keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot override {'.'.join(keys)}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict:
    """WAYFARER__RUNTIME__OFFLINE=false -> {"runtime": {"offline": False}}."""
    overrides: dict = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX):].split("__") if part]
        if not keys:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw  # not YAML: take the text as it is
        _set_dotted(overrides, keys, value)
    return overrides


def resolve_model_ref(ref: str) -> str:
    """Turn a model reference into what `from_pretrained` takes: a local path or a hub id.

    `package:<pkg>/<inner path>` points inside an installed package (the embedded models ship
    that way). The package is located without being imported, because importing a model
    package may pull dependencies we deliberately do not install.
    """
    if not ref.startswith(PACKAGE_REF_PREFIX):
        return ref
    package, _, inner = ref[len(PACKAGE_REF_PREFIX):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model reference {ref!r} needs the Python package {package!r}, which is not installed; "
            "run the README's set-up command (it installs the embedded models with --no-deps)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.exists():
        raise ConfigError(f"model reference {ref!r}: {path} does not exist in the installed package")
    return str(path)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The merged configuration of one profile. Read-only: entry points never mutate it.

    `config` is `data` validated (settings.schema): typed sections, e.g. `settings.config.ui.server_port`.
    It is checked whenever a Settings is made, so a wrong key or type fails at start-up."""

    profile: str
    data: Mapping[str, Any]
    root: Path
    config: WayfarerConfig = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", validate_config(self.data, f"profile {self.profile!r} (configuration in {self.root})"))

    def section(self, name: str) -> dict:
        """A copy of one top-level section (empty when absent)."""
        value = self.data.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"configuration section {name!r} is not a mapping")
        return copy.deepcopy(dict(value))

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for key in dotted.split("."):
            if not isinstance(node, Mapping) or key not in node:
                return default
            node = node[key]
        return copy.deepcopy(node)

    def path(self, name: str) -> Path:
        """An entry of `paths`, with {other_key} references expanded, absolute."""
        paths = self.data.get("paths", {})
        if name not in paths:
            raise ConfigError(f"paths.{name} is not configured")
        return self._expand_path(name, paths, seen=())

    def _expand_path(self, name: str, paths: Mapping[str, Any], seen: tuple[str, ...]) -> Path:
        if name in seen:
            raise ConfigError(f"paths.{name} refers to itself through {' -> '.join(seen)}")
        raw = str(paths[name])
        refs = {
            key: str(self._expand_path(key, paths, seen + (name,)))
            for key in paths
            if "{" + key + "}" in raw
        }
        expanded = Path(os.path.expanduser(raw.format(**refs)))
        return expanded if expanded.is_absolute() else (self.root / expanded).resolve()

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Settings":
        """A new Settings with a nested mapping merged on top (used by tests and CLIs)."""
        return Settings(self.profile, _deep_merge(dict(self.data), overrides), self.root)


def load_settings(
    profile: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the YAML, pick the profile, apply environment then explicit overrides."""
    environ = os.environ if environ is None else environ
    path = Path(config_file or environ.get("WAYFARER_CONFIG") or DEFAULT_CONFIG_FILE)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"configuration file {path} not found") from err
    profiles = document.get("profiles", {})
    chosen = profile or environ.get("WAYFARER_PROFILE") or document.get("default_profile", "local")
    if chosen not in profiles:
        raise ConfigError(f"profile {chosen!r} is not in {path} (have: {', '.join(sorted(profiles))})")
    merged = _deep_merge(document.get("defaults", {}), profiles[chosen] or {})
    merged = _deep_merge(merged, _env_overrides(environ))
    if overrides:
        merged = _deep_merge(merged, overrides)
    return Settings(profile=chosen, data=merged, root=path.resolve().parent)


@functools.cache
def shipped_defaults() -> WayfarerConfig:
    """The shipped wayfarer.yaml's `defaults:` section, validated (every profile starts from it).

    For the keyword defaults of library functions that take settings one by one (for example
    arena.leaderboard.compute_leaderboard), so that those values too are written only in the YAML.
    """
    document = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text()) or {}
    return validate_config(document.get("defaults", {}), f"the `defaults` of {DEFAULT_CONFIG_FILE}")


def build_dataclass(cls: type, mapping: Mapping[str, Any]):
    """Instantiate a config dataclass from a section, refusing keys it does not know."""
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown configuration keys {unknown} (known: {sorted(names)})")
    return cls(**mapping)
