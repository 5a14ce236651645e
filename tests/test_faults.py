"""Nothing lost: a killed, preempted or requeued run resumes on re-run; non-finite steps are skipped; an
out-of-memory error, a run of non-finite steps and a changed config stop with one line."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from asrkit import faults, resume
from asrkit.models import steps
from asrkit.models.whisper import WhisperModule
from asrkit.train import train
from asrkit.trainer import PARTIAL, Trainer
from tests.conftest import TINY_RUN, compose_config, subprocess_env

# fp32 and deterministic, so that a resumed run can be compared with an uninterrupted one number for number
EXACT = ["hw=cpu", "hw.precision=32-true", "trainer.deterministic=true", "data.num_workers=0"]
RUN = [*TINY_RUN, *EXACT, "trainer.max_steps=8", "trainer.val_check_interval=4", "export=false"]


def _command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "asrkit", *RUN, *extra, f"hydra.run.dir={run_dir}"]


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)["global_step"]


def _wait_for_checkpoint(process: subprocess.Popen, checkpoint: Path, step: int, timeout: float = 300) -> None:
    """Until ``checkpoint`` holds optimizer step ``step`` or later (the run is then mid-training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        if resume.newest_checkpoint(checkpoint.parent) == checkpoint and _step(checkpoint) >= step:
            return
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint at step {step} within {timeout} s")


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run(_command(run_dir), capture_output=True, text=True, env=subprocess_env(), timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return run_dir


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    """The same final step, validation WER and (to fp32 rounding, 1e-6) the same weights."""
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference))
    assert ours["global_step"] == theirs["global_step"] == 8
    assert ours["best_val_wer"] == pytest.approx(theirs["best_val_wer"], abs=1e-9)
    a, b = _weights(run_dir / "checkpoints" / "last.ckpt"), _weights(reference / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    worst = max((a[key].float() - b[key].float()).abs().max().item() for key in a)
    assert worst <= 1e-6, f"the resumed run's weights differ from the uninterrupted run's by up to {worst}"


@pytest.mark.slow
def test_a_killed_run_rerun_with_the_same_command_ends_as_an_uninterrupted_run(tmp_path: Path, uninterrupted) -> None:
    """SIGKILL after the step-4 checkpoint; the same command again continues there (sampler position, RNG,
    optimizer and schedule restored) and ends with the uninterrupted run's weights."""
    run_dir = tmp_path / "run"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    process = subprocess.Popen(_command(run_dir), env=subprocess_env(), **quiet)
    _wait_for_checkpoint(process, run_dir / "checkpoints" / "last.ckpt", step=4)
    process.kill()
    process.wait()
    done = subprocess.run(_command(run_dir), capture_output=True, text=True, env=subprocess_env(), timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "resume=auto: continuing from" in done.stdout + done.stderr
    _assert_same_run(run_dir, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_preempted_run_saves_exits_143_and_resumes(tmp_path: Path, uninterrupted, signum) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(_command(run_dir), env=subprocess_env(), stdout=sink, stderr=subprocess.STDOUT)
        _wait_for_checkpoint(process, run_dir / "checkpoints" / "last.ckpt", step=2)
        process.send_signal(signum)
        process.wait(timeout=300)
    output = log.read_text()
    assert process.returncode == faults.SIGTERM_EXIT_CODE, output[-3000:]
    assert "stopped by a signal (preemption)" in output and "re-run the same command to resume" in output
    saved = _step(run_dir / "checkpoints" / "last.ckpt")
    assert 2 <= saved < 8
    done = subprocess.run(_command(run_dir), capture_output=True, text=True, env=subprocess_env(), timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 8


@pytest.mark.slow
def test_under_slurm_sigusr1_saves_an_hpc_checkpoint_and_requeues_the_job(tmp_path: Path) -> None:
    """Lightning's auto-requeue path: SIGUSR1 -> hpc_ckpt_1.ckpt in the run's checkpoints and ``scontrol
    requeue <job>`` (a stand-in scontrol records its arguments); the requeued command resumes from there."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "asr", "SLURM_NODELIST": "localhost"}
    slurm |= {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    env = subprocess_env() | slurm | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(_command(run_dir), env=env, stdout=sink, stderr=subprocess.STDOUT)
        _wait_for_checkpoint(process, run_dir / "checkpoints" / "last.ckpt", step=2)
        process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while not calls.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)  # what SLURM sends the requeued job
        process.wait(timeout=300)
    output = log.read_text()
    assert calls.read_text().split() == ["requeue", "4242"], output[-3000:]
    assert resume._complete(run_dir / "checkpoints" / "hpc_ckpt_1.ckpt")
    done = subprocess.run(_command(run_dir), capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 8


def test_a_kill_during_a_checkpoint_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """The save is cut off half-way (what a kill does); last.ckpt is still the previous, loadable checkpoint,
    the half-written file is skipped, and the next run resumes from the previous one."""
    run = [*TINY_RUN, "export=false", "data.test_split=null"]
    train(compose_config([*run, "trainer.max_steps=2"], tmp_path))
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    def killed_while_saving(self, checkpoint, path, storage_options=None):
        Path(path).write_bytes(before[: len(before) // 2])
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(type(L.Trainer(logger=False).strategy), "save_checkpoint", killed_while_saving)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(compose_config([*run, "trainer.max_steps=4"], tmp_path))
    monkeypatch.undo()
    assert last.read_bytes() == before and (last.parent / f"last.ckpt{PARTIAL}").exists()
    assert resume.newest_checkpoint(last.parent) == last

    train(compose_config([*run, "trainer.max_steps=4"], tmp_path))
    assert json.loads((tmp_path / "metrics.json").read_text())["global_step"] == 4


def test_a_truncated_checkpoint_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 half a zip")
    assert resume.newest_checkpoint(tmp_path) is None
    assert "incomplete checkpoint" in caplog.text


def test_a_resumed_run_with_another_config_stops_with_the_diff(tmp_path: Path) -> None:
    run = [*TINY_RUN, "export=false", "data.test_split=null", "trainer.max_steps=2"]
    train(compose_config(run, tmp_path))
    with pytest.raises(resume.ResumeError, match=r"optimizer.lr: 0.001 -> 0.002.*resume_force=true"):
        train(compose_config([*run, "trainer.max_steps=3", "optimizer.lr=0.002"], tmp_path))
    train(compose_config([*run, "trainer.max_steps=3", "optimizer.lr=0.002", "resume_force=true"], tmp_path))
    assert json.loads((tmp_path / "metrics.json").read_text())["global_step"] == 3


def test_resume_never_starts_over_and_a_missing_path_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(resume.ResumeError, match=r"^resume=/nowhere.ckpt: no such checkpoint"):
        resume.resolve("/nowhere.ckpt", tmp_path)
    (tmp_path / "last.ckpt").write_bytes(b"")
    assert resume.resolve("never", tmp_path) is None


def test_run_name_gives_a_stable_run_dir(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from asrkit.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        named = compose("train", overrides=["run_name=hi-small"], return_hydra_config=True)
        unnamed = compose("train", return_hydra_config=True)
    assert named.hydra.run.dir == "outputs/hi-small" and named.hydra.sweep.dir == "multirun/hi-small"
    assert unnamed.hydra.run.dir.startswith("outputs/20")


# --- non-finite steps, on a module small enough to check every weight --------------------------------------
class _Line(steps.EvaluationHooks, L.LightningModule):
    """y = w x + b, with a non-finite loss at the batches in ``poisoned``; the real modules' scheduler hook."""

    def __init__(self, poisoned: set[int]) -> None:
        super().__init__()
        self.model = torch.nn.Linear(1, 1)
        self.poisoned = poisoned
        self.weights: list[torch.Tensor] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = ((self.model(batch["x"]) - 2 * batch["x"]) ** 2).mean()
        return loss * float("nan") if batch_idx in self.poisoned else loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.weights.append(self.model.weight.detach().clone())

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def train_dataloader(self):
        data = [{"x": torch.randn(4, 1), "indices": [4 * i + j for j in range(4)]} for i in range(32)]
        return torch.utils.data.DataLoader(data, batch_size=None)


def _fit(module: _Line, guard: faults.NonFiniteGuard, max_steps: int, accumulate: int = 1, **kwargs) -> Trainer:
    trainer = Trainer(
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        callbacks=[guard, *kwargs.pop("callbacks", [])],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(module)
    return trainer


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_non_finite_loss_skips_its_step_weights_schedule_and_all(caplog, precision) -> None:
    module, guard = _Line(poisoned={2}), faults.NonFiniteGuard(max_consecutive=3)
    trainer = _fit(module, guard, max_steps=5, precision=precision)
    assert guard.skipped == 1 and trainer.global_step == 5
    assert torch.equal(module.weights[2], module.weights[1]) and not torch.equal(module.weights[3], module.weights[2])
    optimizer = trainer.optimizers[0]
    assert optimizer.state[module.model.weight]["step"] == 4  # AdamW stepped 4 times, not 5
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 4
    assert "optimizer step 3 skipped" in caplog.text and "[8, 9, 10, 11]" in caplog.text


def test_under_gradient_accumulation_the_whole_window_is_skipped() -> None:
    module, guard = _Line(poisoned={2}), faults.NonFiniteGuard()  # the first micro-batch of step 2
    _fit(module, guard, max_steps=3, accumulate=2)
    assert guard.skipped == 1
    assert torch.equal(module.weights[3], module.weights[1])  # batches 2 and 3 made step 2: nothing changed


class _LineOnRanks(_Line):
    """The poisoned batches are non-finite on rank 1 only; each rank writes what its guard counted."""

    def __init__(self, poisoned: set[int], out: str) -> None:
        super().__init__(poisoned)
        self.out = out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = ((self.model(batch["x"]) - 2 * batch["x"]) ** 2).mean()
        return loss * float("nan") if batch_idx in self.poisoned and self.global_rank == 1 else loss

    def on_train_end(self) -> None:
        guard = next(cb for cb in self.trainer.callbacks if isinstance(cb, faults.NonFiniteGuard))
        record = {"skipped": guard.skipped, "weight": self.model.weight.item(), "step": self.trainer.global_step}
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_under_ddp_a_step_non_finite_on_one_rank_is_skipped_by_all(tmp_path: Path) -> None:
    module = _LineOnRanks(poisoned={2}, out=str(tmp_path))
    guard = faults.NonFiniteGuard()
    _fit(module, guard, max_steps=5, strategy="ddp_spawn", accelerator="cpu", devices=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["skipped"] for r in ranks] == [1, 1] and ranks[0]["weight"] == ranks[1]["weight"]


def test_non_finite_steps_in_a_row_stop_the_run_with_a_checkpoint(tmp_path: Path) -> None:
    module, guard = _Line(poisoned=set(range(3, 32))), faults.NonFiniteGuard(max_consecutive=4)
    saver = faults.FaultCheckpoint(str(tmp_path))
    with pytest.raises(faults.RunStopped, match="4 optimizer steps in a row had a non-finite loss"):
        _fit(module, guard, max_steps=20, callbacks=[saver])
    assert saver.saved == tmp_path / "last.ckpt" and _step(saver.saved) == 6  # 3 good steps, 3 skipped, the 4th
    assert torch.equal(_weights(saver.saved)["model.weight"], module.weights[2])


def test_out_of_memory_ends_with_a_checkpoint_and_names_the_batch_and_the_key(tmp_path: Path, monkeypatch) -> None:
    real_step = WhisperModule.training_step

    def out_of_memory_at_step_3(self, batch, batch_idx):
        if self.trainer.global_step == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(WhisperModule, "training_step", out_of_memory_at_step_3)
    with pytest.raises(faults.RunStopped) as stopped:
        train(compose_config([*TINY_RUN, "export=false", "data.test_split=null"], tmp_path))
    message = str(stopped.value)
    assert "out of memory in a training step on a batch of input_features (" in message
    assert "data.per_device_batch_size" in message and "data.bucketing.max_batch_seconds" in message
    assert _step(tmp_path / "checkpoints" / "last.ckpt") == 3
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def test_out_of_memory_is_recognised_from_cuda_and_from_other_devices() -> None:
    assert faults.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert faults.is_out_of_memory(RuntimeError("synStatus 26 [Generic failure]. Device out of memory"))
    assert not faults.is_out_of_memory(RuntimeError("shapes cannot be multiplied"))
