"""`python -m arena export --push-to-hub`: credentials from the environment only, clear refusals,
and exactly the local export pushed. The Hub is never contacted: the refusals are checked in a
subprocess whose sockets are disabled, the push itself with DatasetDict.push_to_hub replaced."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from arena.store import SQLiteVoteStore
from tests.conftest import REPO
from tests.test_leaderboard import fill_store

FAKE_TOKEN = "hf_wayfarerTestTokenNeverSent0123456789"
HUB_VARIABLES = ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")

# Loaded by the subprocess at start-up: any attempt to open a network connection is written to
# a file and fails, so "no network call" is observed rather than assumed.
NO_NETWORK = textwrap.dedent(
    """
    import os, socket

    def _refuse(*args, **kwargs):
        with open(os.environ["WAYFARER_TEST_NETWORK_LOG"], "a") as log:
            log.write(repr(args[1:] or args) + "\\n")
        raise OSError("network disabled by the test")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.getaddrinfo = _refuse
    socket.create_connection = _refuse
    """
)


@pytest.fixture
def home(tmp_path) -> Path:
    fill_store(SQLiteVoteStore(tmp_path / "votes.sqlite3"))
    return tmp_path


def _run_cli(home: Path, *args: str, **environment: str) -> subprocess.CompletedProcess:
    guard = home / "no-network"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    env = {k: v for k, v in os.environ.items() if k not in HUB_VARIABLES and not k.startswith("WAYFARER")}
    env.update(
        WAYFARER_PROFILE="local",
        WAYFARER__PATHS__HOME=str(home),
        PYTHONPATH=os.pathsep.join([str(guard), str(REPO)]),
        WAYFARER_TEST_NETWORK_LOG=str(home / "network.log"),
        **environment,
    )
    return subprocess.run(
        [sys.executable, "-m", "arena", "export", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


def _no_network_attempted(home: Path) -> bool:
    return not (home / "network.log").exists()


def test_without_a_token_the_push_is_refused_before_anything_is_done(home):
    result = _run_cli(home, "--push-to-hub", "someone/votes", WAYFARER__RUNTIME__OFFLINE="false")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: cannot push to the Hub: HF_TOKEN is not set")
    assert "Traceback" not in result.stderr and "switched off" not in result.stderr
    assert _no_network_attempted(home)
    assert not (home / "data" / "datasets").exists()  # refused up front: nothing half done


def test_offline_mode_refuses_the_push_and_says_how_to_go_online(home):
    # The local profile runs offline (runtime.offline: true sets HF_HUB_OFFLINE=1).
    by_profile = _run_cli(home, "--push-to-hub", "someone/votes", HF_TOKEN=FAKE_TOKEN)
    assert by_profile.returncode == 2
    assert "the Hub is switched off: runtime.offline is true in profile 'local'" in by_profile.stderr
    assert "WAYFARER__RUNTIME__OFFLINE=false" in by_profile.stderr and "HF_TOKEN" not in by_profile.stderr
    # HF_HUB_OFFLINE=1 from the shell, with the configuration online.
    by_variable = _run_cli(
        home, "--push-to-hub", "someone/votes", HF_TOKEN=FAKE_TOKEN, HF_HUB_OFFLINE="1", WAYFARER__RUNTIME__OFFLINE="false"
    )
    assert by_variable.returncode == 2 and "HF_HUB_OFFLINE=1 is set; unset it to push" in by_variable.stderr
    for result in (by_profile, by_variable):
        assert FAKE_TOKEN not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert _no_network_attempted(home)


def test_bad_arguments_are_refused_by_the_parser(home):
    private_alone = _run_cli(home, "--private")
    assert private_alone.returncode == 2 and "--private only applies with --push-to-hub" in private_alone.stderr
    bad_id = _run_cli(home, "--push-to-hub", "not a/repo id", HF_TOKEN=FAKE_TOKEN, WAYFARER__RUNTIME__OFFLINE="false")
    assert bad_id.returncode == 2 and "a Hub dataset id like owner/name" in bad_id.stderr
    assert _no_network_attempted(home)


@pytest.fixture
def online(home, monkeypatch):
    """The in-process CLI, online, with a token in the environment."""
    for name in HUB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("WAYFARER_PROFILE", "local")
    monkeypatch.setenv("WAYFARER__PATHS__HOME", str(home))
    monkeypatch.setenv("WAYFARER__RUNTIME__OFFLINE", "false")
    yield home
    for name in HUB_VARIABLES:  # apply_runtime may have set them; leave the session as it was
        monkeypatch.delenv(name, raising=False)


def test_the_pushed_datasets_are_the_local_export(online, monkeypatch, capsys):
    from datasets import DatasetDict, load_from_disk

    from arena.__main__ import main

    pushes = []

    def fake_push(self, repo_id, **kwargs):
        pushes.append((self, repo_id, kwargs))

    monkeypatch.setattr(DatasetDict, "push_to_hub", fake_push)
    assert main(["export", "--push-to-hub", "someone/votes", "--private"]) == 0
    out, err = capsys.readouterr()
    assert "preference pairs: 2" in out
    assert "pushed arena_preference, arena_negative, chat_feedback to https://huggingface.co/datasets/someone/votes (private)" in out
    assert FAKE_TOKEN not in out + err

    assert [(repo, kw["config_name"]) for _, repo, kw in pushes] == [
        ("someone/votes", "arena_preference"), ("someone/votes", "arena_negative"), ("someone/votes", "chat_feedback")
    ]
    for pushed, _, kwargs in pushes:
        assert kwargs["token"] == FAKE_TOKEN and kwargs["private"] is True
        written = load_from_disk(str(online / "data" / "datasets" / kwargs["config_name"]))
        assert set(pushed) == set(written) == {"train", "validation"}
        for split in written:
            assert pushed[split].features == written[split].features
            assert pushed[split].to_list() == written[split].to_list()
    assert sum(len(s) for s in pushes[0][0].values()) == 2 and sum(len(s) for s in pushes[1][0].values()) == 2
    assert pushes[0][2]["set_default"] is True  # load_dataset("someone/votes") gives the preference pairs

    # Without --private the repository's visibility is left to the Hub (new repositories: public).
    pushes.clear()
    assert main(["export", "--push-to-hub", "someone/votes"]) == 0
    assert [kw["private"] for _, _, kw in pushes] == [None, None, None]


def test_a_hub_error_is_one_line_exit_1_and_the_local_export_stays(online, monkeypatch, capsys):
    import httpx
    from datasets import DatasetDict, load_from_disk
    from huggingface_hub.errors import HfHubHTTPError

    from arena.__main__ import main

    def failing_push(self, repo_id, **kwargs):
        url = "https://huggingface.co/api/repos/create"
        response = httpx.Response(401, request=httpx.Request("POST", url))
        raise HfHubHTTPError(
            f"401 Client Error: Unauthorized for url {url}\nInvalid credentials (token {kwargs['token']})", response=response
        )

    monkeypatch.setattr(DatasetDict, "push_to_hub", failing_push)
    assert main(["export", "--push-to-hub", "someone/votes"]) == 1
    out, err = capsys.readouterr()
    assert "preference pairs: 2" in out and "pushed" not in out
    lines = [line for line in err.splitlines() if "error" in line.lower()]  # stderr also has progress bars
    assert len(lines) == 1 and lines[0] == err.strip().splitlines()[-1] and lines[0].startswith("error: pushing arena_preference to https://huggingface.co/datasets/someone/votes failed: HfHubHTTPError: 401")
    assert "the local export in" in lines[0] and "is kept" in lines[0]
    assert FAKE_TOKEN not in out + err and "***" in err
    kept = load_from_disk(str(online / "data" / "datasets" / "arena_preference"))
    assert sum(len(split) for split in kept.values()) == 2
