"""Every file in conf/ composes and resolves; typos in overrides are errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import get_object
from omegaconf import OmegaConf

from asrkit.config import CONFIG_DIR, asset_path, compose_config

CONF = Path(CONFIG_DIR)
GROUP_FILES = sorted(p.relative_to(CONF) for p in CONF.rglob("*.yaml") if p.parent != CONF)
# Options that need a value only the user can give.
REQUIRED = {
    "data/audiofolder.yaml": ["data.data_dir=/tmp"],
    "data/manifest.yaml": ["data.data_dir=/tmp"],
    "experiment/pretrain_base_fairseq.yaml": ["data.data_dir=/tmp"],
    "augment/waveform.yaml": [f"augment.waveform.noise.dir={asset_path('demo_speech')}"],  # any folder of audio
    "data/voxpopuli.yaml": ["lang=de"],
    "data/mls.yaml": ["lang=de"],
}  # no Hindi there


def _targets(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["_target_"]] if "_target_" in node else []
        return found + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in _targets(value)]
    return []


@pytest.mark.parametrize("path", GROUP_FILES, ids=str)
def test_every_config_file_composes(path: Path, tmp_path: Path) -> None:
    group, option = path.parent.as_posix(), path.stem
    overrides = [f"{group}={option}"] + REQUIRED.get(path.as_posix(), [])
    cfg = compose_config(overrides, tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    for target in _targets(resolved):
        assert get_object(target) is not None, target  # a class, or a function (the schedules)


def test_primary_defaults_are_the_seed_job(tmp_path: Path) -> None:
    cfg = compose_config([], tmp_path)
    assert cfg.model.name_or_path == "openai/whisper-small"
    assert cfg.data.path == "mozilla-foundation/common_voice_11_0" and cfg.data.name == "hi"
    assert cfg.data.train_split == "train+validation" and cfg.data.test_split == "test"
    assert cfg.hw.accelerator == "auto" and cfg.optimizer.factory._target_ == "torch.optim.AdamW"
    assert cfg.lang == "hi" and cfg.model.language == "hi"


def test_lang_flows_into_model_and_data(tmp_path: Path) -> None:
    cfg = compose_config(["lang=ta"], tmp_path)
    assert cfg.model.language == "ta" and cfg.data.name == "ta"


def test_misspelt_override_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="trainer.max_stepz"):
        compose_config(["trainer.max_stepz=3"], tmp_path)
    with pytest.raises(ConfigCompositionException, match="modle"):
        compose_config(["modle=whisper_demo"], tmp_path)
    with pytest.raises(ConfigCompositionException, match="whisper_smal"):
        compose_config(["model=whisper_smal"], tmp_path)


def test_cli_prints_the_composed_config_and_rejects_typos(tmp_path: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "asrkit", "experiment=demo", "--cfg", "job"], capture_output=True, text=True, check=True
    )
    assert "whisper_tokenizer" in shown.stdout and "max_steps:" in shown.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "asrkit", "optimizer.lrr=1e-4", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    assert "optimizer.lrr" in bad.stderr
