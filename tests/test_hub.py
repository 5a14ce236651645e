"""push_to_hub: the export folder uploaded at the end of a run (against a stand-in for the Hub's API, never the
network); a missing repository id or token stops the run before training; a failed upload keeps the run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi, ModelCard, constants

from asrkit import hub, resume
from asrkit import train as train_module
from asrkit.config_check import ConfigError
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config

PUSH = ["push_to_hub=true", "hub_model_id=someone/asrkit-tiny"]


class FakeHub:
    """HfApi.create_repo and upload_folder replaced: what they were asked, and the files the folder held when it
    was uploaded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None) -> None:
        self.repos: list[dict[str, Any]] = []
        self.uploads: list[dict[str, Any]] = []
        self.fail = fail
        monkeypatch.setattr(HfApi, "create_repo", self.create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", self.upload_folder)

    def create_repo(self, repo_id: str, **kwargs: Any) -> str:
        self.repos.append({"repo_id": repo_id, **kwargs})
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id: str, folder_path: str, **kwargs: Any) -> str:
        folder = Path(folder_path)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        self.uploads.append({"repo_id": repo_id, "folder": folder, "files": files, **kwargs})
        if self.fail:
            raise self.fail
        return f"https://huggingface.co/{repo_id}/commit/0"


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub switched on in this process (the tests run with HF_HUB_OFFLINE=1); every request is faked."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch, online: None) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")


@pytest.fixture
def no_token(monkeypatch: pytest.MonkeyPatch, online: None, tmp_path: Path) -> None:
    """Neither HF_TOKEN nor a stored `hf auth login` token."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token_here"))


@pytest.fixture
def nothing_built(monkeypatch: pytest.MonkeyPatch) -> None:
    def built(*args: object, **kwargs: object) -> None:
        raise AssertionError("train() built something before the config was checked")

    monkeypatch.setattr(train_module, "instantiate", built)


def test_push_export_creates_the_repository_and_uploads_the_folder(tmp_path: Path, monkeypatch) -> None:
    fake = FakeHub(monkeypatch)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("card")
    url = hub.push_export(tmp_path, "someone/model", private=True)
    assert url == "https://huggingface.co/someone/model"
    assert fake.repos == [{"repo_id": "someone/model", "repo_type": "model", "private": True, "exist_ok": True}]
    assert set(fake.uploads[0]["files"]) == {"config.json", "README.md"}
    assert fake.uploads[0]["repo_id"] == "someone/model" and fake.uploads[0]["repo_type"] == "model"


def test_push_run_reports_where_it_uploaded(tmp_path: Path, monkeypatch) -> None:
    FakeHub(monkeypatch)
    record = hub.push_run(tmp_path, {"hub_model_id": "someone/model", "hub_private": False})
    assert record == {"repo_id": "someone/model", "url": "https://huggingface.co/someone/model"}


def test_a_run_uploads_its_export_and_a_failed_upload_keeps_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: None, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeHub(monkeypatch, fail=ConnectionError("the network is down\nmore detail"))
    with caplog.at_level(logging.ERROR, logger="asrkit.hub"):
        train(compose_config([*TINY_RUN, *PUSH], tmp_path))

    export = tmp_path / "export"
    [upload] = fake.uploads
    assert upload["folder"] == export and upload["repo_id"] == "someone/asrkit-tiny"
    model_files = {"model.safetensors", "config.json", "generation_config.json"}
    processor_files = {"tokenizer.json", "tokenizer_config.json", "processor_config.json"}
    assert model_files | processor_files | {"README.md"} <= set(upload["files"])
    card = upload["files"]["README.md"].decode()
    assert card == (export / "README.md").read_text()  # uploaded after the card was written
    assert ModelCard.load(export / "README.md").data.model_name == "asrkit-tiny"

    retry = f"hf upload someone/asrkit-tiny {export}"
    results = json.loads((tmp_path / "metrics.json").read_text())  # the run is kept
    assert results["hub"] == {
        "repo_id": "someone/asrkit-tiny",
        "url": None,
        "error": "ConnectionError: the network is down",
        "retry": retry,
    }
    assert results["global_step"] == 4 and (export / "model.safetensors").is_file()
    assert any(retry in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["push_to_hub=true"], "push_to_hub=true: expected hub_model_id=<user or organisation>/<name>"),
        (["push_to_hub=true", "hub_model_id=a/b/c"], "hub_model_id='a/b/c': not a Hub repository id"),
        ([*PUSH, "export=false"], "push_to_hub=true: expected export=true"),
        (PUSH, "push_to_hub=true: no Hugging Face token found to upload to someone/asrkit-tiny; set HF_TOKEN"),
    ],
    ids=["no id", "bad id", "no export", "no token"],
)
def test_push_settings_that_cannot_work_stop_the_run_before_training(
    overrides: list[str], message: str, tmp_path: Path, no_token: None, nothing_built: None
) -> None:
    with pytest.raises(ConfigError) as raised:
        train(compose_config([*TINY_RUN, *overrides], tmp_path))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert not any(tmp_path.iterdir())


def test_the_token_hint_names_both_ways_to_log_in(tmp_path: Path, no_token: None) -> None:
    problem = hub.hub_settings_problem({"push_to_hub": True, "hub_model_id": "someone/model", "export": True})
    assert problem and "HF_TOKEN" in problem and "hf auth login" in problem


def test_an_offline_process_cannot_push(monkeypatch: pytest.MonkeyPatch, token: None) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    problem = hub.hub_settings_problem({"push_to_hub": True, "hub_model_id": "someone/model"})
    assert problem and "HF_HUB_OFFLINE=1" in problem
    assert hub.hub_settings_problem({"push_to_hub": False}) is None


def test_a_finished_run_may_be_resumed_with_a_push_added() -> None:
    saved = {"push_to_hub": False, "hub_model_id": None, "optimizer": {"lr": 0.001}}
    current = {"push_to_hub": True, "hub_model_id": "someone/model", "hub_private": True, "optimizer": {"lr": 0.001}}
    assert resume.config_diff(saved, current) == []
