"""A config that cannot work stops train() before anything is built, with one line naming the key; every
config in conf/ passes the same check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asrkit import train as train_module
from asrkit.config_check import ConfigError, check_config
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config, subprocess_env
from tests.test_configs import GROUP_FILES, REQUIRED
from tests.test_hardware import LAUNCHER_VARIABLES

MAX_STEPS_ABC = "trainer.max_steps='abc': expected an integer (asrkit.trainer.Trainer max_steps: int)"

# overrides -> the start of the one-line error
ERRORS = {
    ("trainer.max_steps=abc",): MAX_STEPS_ABC,
    ("trainer.max_steps=1.5",): "trainer.max_steps=1.5: expected an integer",
    ("trainer.enable_progress_bar=yes",): "trainer.enable_progress_bar='yes': expected true or false",
    ("+trainer.max_stepz=3",): (
        "trainer.max_stepz=3: not a parameter of asrkit.trainer.Trainer (did you mean max_steps?"
    ),
    ("callbacks.periodic_checkpoint.every_n_train_steps=often",): (
        "callbacks.periodic_checkpoint.every_n_train_steps='often': expected an integer or null "
        "(lightning.pytorch.callbacks.ModelCheckpoint every_n_train_steps: int | None)"
    ),
    ("+trainer.precision=bf16-mixed",): (
        "trainer.precision='bf16-mixed': not a trainer key here, train() gives the Trainer hw.precision"
    ),
    ("data=voxpopuli",): "data.name: lang='hi' is not a language of VoxPopuli",  # a resolver's error
    ("logger.tensorboard.default_hp_metric=maybe",): "logger.tensorboard.default_hp_metric='maybe': expected true",
    ("optimizer.factory.eps=tiny",): "optimizer.factory.eps='tiny': expected a number (torch.optim.AdamW eps: float)",
    ("optimizer.scheduler.warmup_steps=abc",): "optimizer.scheduler.warmup_steps='abc': expected an integer",
    ("hw=ddp_cpu", "hw.strategy.process_group_backend=[gloo]"): "hw.strategy.process_group_backend=['gloo']: expected",
    ("data.global_batch_size=abc",): "data.global_batch_size='abc': expected an integer (BatchOptions",
    ("+data.batch_size=8",): "data.batch_size: not a data key",
    ("+data.bucketing.max_seconds=4",): "data.bucketing.max_seconds=4: not a parameter of DurationBucketBatchSampler",
    ("model.name_or_path=???",): "model.name_or_path=???: expected a value",
    # conf/data/audiofolder.yaml and manifest.yaml inherit common_voice's data_dir: null, which a "???" there
    # could not override (OmegaConf keeps a value under a merged "???"), so datasets read the working directory
    ("data=audiofolder",): "data.data_dir=null: data.path=audiofolder reads a local folder",
    ("data=manifest",): "data.data_dir=null: data.path=manifest reads a local folder",
    ("hw=ddp_cpu", "data.global_batch_size=48"): (
        "data.global_batch_size=48 is not a multiple of data.per_device_batch_size=16 x world size 2"
    ),
    ("data.bucketing.enabled=true", "data.bucketing.max_batch_seconds=2.0"): (
        "data.bucketing.max_batch_seconds=2.0: expected at least data.max_duration_in_seconds=3.0"
    ),
    # a key of the other model family: Hydra refuses it without "+"; with it, the model's signature does
    ("+model.layerdrop=0.1",): "model.layerdrop=0.1: not a parameter of asrkit.models.whisper.WhisperModule",
    ("model=wav2vec2_ctc_demo", "+model.num_beams=4"): (
        "model.num_beams=4: not a parameter of asrkit.models.wav2vec2_ctc.Wav2Vec2CTCModule"
    ),
}


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def nothing_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if train() builds anything: the model, data, callbacks, loggers or trainer."""

    def built(*args: object, **kwargs: object) -> None:
        raise AssertionError("train() built something before the config was checked")

    monkeypatch.setattr(train_module, "instantiate", built)


@pytest.mark.parametrize("overrides", list(ERRORS), ids=" ".join)
def test_a_config_error_is_one_line_naming_the_key(overrides: tuple[str, ...], tmp_path: Path, nothing_built) -> None:
    cfg = compose_config([*TINY_RUN, *overrides], tmp_path)
    with pytest.raises(ConfigError) as raised:
        train(cfg)
    message = str(raised.value)
    assert message.startswith(ERRORS[overrides]), message
    assert "\n" not in message
    assert not any(tmp_path.iterdir())  # nothing written either


# what some profiles need to fit the seed job's batches (64 global, 16 per device) or to run at all
FITS = {
    "hw/gaudi_8x.yaml": ["model=wav2vec2_ctc", "data=librispeech", "lang=en"],  # the command in its header
    "hw/gaudi_8x_deepspeed.yaml": ["data.per_device_batch_size=8"],  # 8 devices x 16 is more than 64
}
LAUNCHED = {"hw/multi_node.yaml": {"NODE_RANK": "0"}}  # several nodes: a launcher, or NODE_RANK on each
# what the check refuses where there is no CUDA GPU, by design (bitsandbytes' 4-bit weights need one)
NEEDS_CUDA = {"peft/qlora.yaml": "peft=qlora: bitsandbytes 4-bit weights need a CUDA GPU"}


@pytest.mark.parametrize("path", GROUP_FILES, ids=str)
def test_every_config_file_passes_the_check(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in LAUNCHED.get(path.as_posix(), {}).items():
        monkeypatch.setenv(name, value)
    overrides = [f"{path.parent.as_posix()}={path.stem}", *REQUIRED.get(path.as_posix(), [])]
    cfg = compose_config(overrides + FITS.get(path.as_posix(), []), tmp_path)
    if path.as_posix() in NEEDS_CUDA and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=NEEDS_CUDA[path.as_posix()]):
            check_config(cfg)
        return
    check_config(cfg)


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "asrkit", "experiment=demo", "trainer.max_steps=abc", f"hydra.run.dir={tmp_path}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=subprocess_env() | env)


def test_the_command_prints_the_one_line_and_no_traceback(tmp_path: Path) -> None:
    run = _run(tmp_path, HYDRA_FULL_ERROR="0")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == MAX_STEPS_ABC, run.stderr
    assert "Traceback" not in run.stderr + run.stdout and "Error executing job" not in run.stderr


def test_hydra_full_error_shows_the_traceback(tmp_path: Path) -> None:
    run = _run(tmp_path, HYDRA_FULL_ERROR="1")
    assert run.returncode == 1
    assert "Traceback" in run.stderr and f"ConfigError: {MAX_STEPS_ABC}" in run.stderr
