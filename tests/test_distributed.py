"""Multi-process runs on this CPU, launched as users launch them: DDP (hw=ddp_cpu), two torchrun "nodes" on
loopback (hw=multi_node), a DDP sweep under torchrun, and DeepSpeed ZeRO-2 (hw=a100_deepspeed over
tests/cpu_deepspeed.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import WhisperForConditionalGeneration, pipeline

from asrkit import checkpoints, resume
from asrkit.config import asset_path
from tests.conftest import TINY_RUN, subprocess_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 900  # seconds per launch; a hung collective fails the test instead of the suite
# Two optimizer steps of 8 examples per process, one validation, a few short evaluations.
SHRINK = {
    "trainer.max_steps": 2,
    "trainer.val_check_interval": 2,
    "data.max_train_samples": 32,
    "data.max_eval_samples": 4,
    "data.per_device_batch_size": 8,
    "model.generation_max_length": 8,
}
DEEPSPEED_CPU = {
    "hw": "a100_deepspeed",
    "hw.accelerator": "cpu",
    "hw.devices": 2,
    "hw.strategy._target_": "tests.cpu_deepspeed.CPUDeepSpeedStrategy",
    "hw.strategy.process_group_backend": "gloo",
    "hw.precision": "32-true",  # bf16 DeepSpeed casts the whole model: ~1 min a CPU step here, vs ~3 s
}


def _overrides(**changes: object) -> list[str]:
    """TINY_RUN with SHRINK and ``changes`` applied (each key once: Hydra refuses a key given twice)."""
    settings = dict(item.split("=", 1) for item in TINY_RUN) | SHRINK
    settings |= {key.replace("__", "."): value for key, value in changes.items()}
    return [f"{key}={value}" for key, value in settings.items()]


def _run(command: list[str], cwd: Path, log: Path) -> str:
    with log.open("w") as out:
        done = subprocess.run(
            command, cwd=cwd, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT
        )
    text = log.read_text()
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{text[-6000:]}"
    return text


def _asrkit(overrides: list[str], cwd: Path, log: Path) -> str:
    return _run([sys.executable, "-m", "asrkit", *overrides], cwd, log)


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _logged_steps(run_dir: Path, tag: str = "train/loss") -> list[int]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def _event_writers(run_dir: Path) -> set[str]:
    """Process ids of the TensorBoard event files (``events.out.tfevents.<time>.<host>.<pid>.<n>``)."""
    return {path.name.split(".")[-2] for path in (run_dir / "tensorboard").glob("events.out.tfevents.*")}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ddp_cpu_trains_in_one_run_dir_logs_once_and_resumes(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    same = "{same: {config: demo, max_eval_samples: 4}}"  # the primary set again, as an extra set: equal scores
    _asrkit(_overrides(hw="ddp_cpu", export="false", data__extra_validation=same), work, tmp_path / "first.log")

    run_dirs = [path for path in (work / "outputs").glob("*/*") if path.is_dir()]
    assert len(run_dirs) == 1, f"the DDP child processes made run dirs of their own: {run_dirs}"
    run = run_dirs[0]
    results = _metrics(run)
    assert results["global_step"] == 2
    assert results["test"]["num_samples"] == 4  # both ranks' halves of the test set, gathered, each once
    child_log = (run / "train_ddp_process_1.log").read_text()  # Lightning re-ran the command for rank 1
    assert "global rank 1 stopped at optimizer step 2" in child_log
    assert len(_event_writers(run)) == 1  # rank 0's process alone wrote TensorBoard events
    steps = _logged_steps(run)
    assert steps and len(steps) == len(set(steps)), f"train/loss logged more than once per step: {steps}"
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert "val/wer" in events.Tags()["scalars"]
    for metric in ("wer", "cer", "num_samples"):  # each rank scored its half of each set; gathered per set
        extra = [(e.step, e.value) for e in events.Scalars(f"val/same/{metric}")]
        assert extra == [(e.step, e.value) for e in events.Scalars(f"val/{metric}")], metric
    assert events.Scalars("val/same/num_samples")[0].value == 4

    resumed = tmp_path / "resumed"
    last = run / "checkpoints" / "last.ckpt"
    overrides = _overrides(
        hw="ddp_cpu",
        export="false",
        data__test_split="null",
        trainer__max_steps=4,
        resume=last,
        hydra__run__dir=resumed,
    )
    _asrkit(overrides, work, tmp_path / "resumed.log")
    assert _metrics(resumed)["global_step"] == 4
    assert min(_logged_steps(resumed)) >= 2, "the resumed run restarted from step 0"


def test_two_torchrun_nodes_on_loopback_train_together(tmp_path: Path) -> None:
    run, port = tmp_path / "run", _free_port()
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    overrides = _overrides(
        hw="multi_node", hw__num_nodes=2, hw__devices=1, hw__accelerator="cpu", export="false", hydra__run__dir=run
    )
    nodes = []
    for rank in (0, 1):
        command = [
            torchrun,
            "--nnodes=2",
            f"--node_rank={rank}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            "--nproc_per_node=1",
            "-m",
            "asrkit",
            *overrides,
        ]
        log = (tmp_path / f"node{rank}.log").open("w")
        process = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
        nodes.append((process, log))
    try:
        codes = [process.wait(timeout=TIMEOUT) for process, _ in nodes]
    finally:
        for process, log in nodes:
            if process.poll() is None:
                process.kill()
            log.close()
    logs = [(tmp_path / f"node{rank}.log").read_text() for rank in (0, 1)]
    assert codes == [0, 0], "\n\n".join(text[-4000:] for text in logs)
    for rank, text in enumerate(logs):  # each node ran one process of the two, and both stopped at step 2
        assert f"global rank {rank} stopped at optimizer step 2" in text
    results = _metrics(run)
    assert results["global_step"] == 2 and results["test"]["num_samples"] == 4
    assert len(_event_writers(run)) == 1


def test_a_sweep_of_ddp_jobs_under_torchrun_runs_each_job_once(tmp_path: Path) -> None:
    """The documented pattern for -m with several ranks: torchrun starts them, so none re-runs the sweep."""
    sweep = tmp_path / "sweep"
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    overrides = _overrides(hw="ddp_cpu", export="false", data__test_split="null", hydra__sweep__dir=sweep)
    command = [
        torchrun,
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "asrkit",
        "-m",
        *overrides,
        "optimizer.lr=1e-3,2e-3",
    ]
    text = _run(command, tmp_path, tmp_path / "sweep.log")
    assert text.count("Launching 2 jobs") == 2  # one sweep per rank, none nested in a job
    assert sorted(path.name for path in sweep.iterdir() if path.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert _metrics(sweep / job)["global_step"] == 2
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()


def test_deepspeed_zero2_on_two_cpu_processes_resumes_and_exports_a_full_model(tmp_path: Path) -> None:
    first = tmp_path / "first"
    text = _asrkit(_overrides(**DEEPSPEED_CPU, hydra__run__dir=first), REPO, tmp_path / "first.log")
    assert "strategy: CPUDeepSpeedStrategy" in text and "global rank 1 stopped at optimizer step 2" in text

    results = _metrics(first)
    assert results["global_step"] == 2 and results["test"]["num_samples"] == 4
    best, last = Path(results["best_checkpoint"]), first / "checkpoints" / "last.ckpt"
    for checkpoint in (best, last):  # DeepSpeed checkpoints: a directory, one optimizer shard per process
        assert (checkpoint / "checkpoint").is_dir()
        assert len(list((checkpoint / "checkpoint").glob("*zero_pp_rank_*_optim_states.pt"))) == 2

    export = first / "export"
    model = WhisperForConditionalGeneration.from_pretrained(export)
    weights = checkpoints.checkpoint_state_dict(best)  # the ZeRO shards consolidated to fp32
    exported = model.state_dict()
    for name in ("model.encoder.conv1.weight", "model.decoder.layers.1.fc2.weight"):
        assert torch.allclose(exported[name].float(), weights[f"model.{name}"], rtol=1e-2, atol=1e-3), name
    recognizer = pipeline("automatic-speech-recognition", model=str(export))
    audio, rate = soundfile.read(Path(asset_path("demo_speech")) / "test" / "test_0000.flac", dtype="float32")
    assert isinstance(recognizer({"raw": audio, "sampling_rate": rate})["text"], str)

    assert resume.newest_checkpoint(last.parent) == last and not list(last.parent.glob("*.partial"))
    # the same command with a later step limit: resume=auto finds the directory checkpoint and continues
    text = _asrkit(_overrides(**DEEPSPEED_CPU, hydra__run__dir=first, trainer__max_steps=4), REPO, tmp_path / "2.log")
    assert f"resume=auto: continuing from {last}" in text
    assert _metrics(first)["global_step"] == 4
    steps = _logged_steps(first)  # both runs' event files: a restart from step 0 would log steps 1-2 twice
    assert max(steps) == 4 and len(steps) == len(set(steps)), steps
