"""The export uploaded to the Hugging Face Hub at the end of a run: ``push_to_hub=true hub_model_id=<user>/<name>``.

:func:`hub_settings_problem` is asked before training (by :func:`asrkit.config_check.check_config`), so that a
missing repository id or token stops the run before it trains rather than after. :func:`push_run` is called by
``train()`` on global rank zero once the model card and metrics.json are written; a failed upload is logged with
the command that retries it and never ends the run (metrics.json and the export stay).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

log = logging.getLogger(__name__)

TOKEN_HINT = "set HF_TOKEN to a write token or run `hf auth login` (`huggingface-cli login` in older huggingface_hub)"


def hub_settings_problem(cfg: Mapping[str, Any]) -> str | None:
    """One line naming what stops ``push_to_hub`` from working, or None (also when it is off)."""
    if not cfg.get("push_to_hub"):
        return None
    repo_id = cfg.get("hub_model_id")
    if not repo_id:
        return "push_to_hub=true: expected hub_model_id=<user or organisation>/<name>, the Hub repository to upload to"
    try:
        validate_repo_id(str(repo_id))
    except HFValidationError as error:
        return f"hub_model_id={repo_id!r}: not a Hub repository id ({str(error).splitlines()[0]})"
    if not cfg.get("export", True):
        return "push_to_hub=true: expected export=true (the export is what is uploaded)"
    if constants.is_offline_mode():
        return "push_to_hub=true: the Hub is switched off in this process (HF_HUB_OFFLINE=1); unset it to upload"
    if get_token() is None:
        return f"push_to_hub=true: no Hugging Face token found to upload to {repo_id}; {TOKEN_HINT}"
    return None


def push_export(directory: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the model repository ``repo_id`` if it is not there and upload ``directory`` into it; its URL."""
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(directory),
        commit_message="Upload the asrkit export (model, processor, model card)",
    )
    return str(url)


def retry_command(directory: str | Path, repo_id: str, private: bool = False) -> str:
    """The command line that uploads ``directory`` by hand."""
    return shlex.join(["hf", "upload", repo_id, str(directory), *(["--private"] if private else [])])


def push_run(directory: str | Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`push_export` with ``cfg``'s ``hub_model_id`` and ``hub_private``; a failure is logged with the
    command to retry, not raised. Returns what metrics.json records under ``hub``."""
    repo_id, private = str(cfg["hub_model_id"]), bool(cfg.get("hub_private", False))
    try:
        url = push_export(directory, repo_id, private=private)
    except Exception as error:  # the run is trained and saved: an upload that fails must not lose it
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        retry = retry_command(directory, repo_id, private)
        log.error(
            "upload to the Hugging Face Hub failed (%s: %s); the run and its export are kept in %s; retry with: %s",
            type(error).__name__,
            reason,
            directory,
            retry,
        )
        return {"repo_id": repo_id, "url": None, "error": f"{type(error).__name__}: {reason}", "retry": retry}
    log.info("uploaded %s to %s", directory, url)
    return {"repo_id": repo_id, "url": url}
