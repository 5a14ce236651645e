"""hw profiles -> Trainer arguments: strategies, precision plugins, world size under launchers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

from asrkit import checkpoints, hardware
from asrkit.batch_plan import BatchPlan
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config

LAUNCHER_VARIABLES = [
    "TORCHELASTIC_RUN_ID",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "SLURM_NTASKS",
    "SLURM_JOB_NAME",
    "SLURM_JOB_NUM_NODES",
    "SLURM_NNODES",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "PMI_SIZE",
]


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _hw(tmp_path: Path, *overrides: str):
    return compose_config(list(overrides), tmp_path).hw


# --- global batch invariance ----------------------------------------------------------------------
# what torchrun tells every process of 4 nodes x 8
TORCHRUN_4x8 = {"TORCHELASTIC_RUN_ID": "job", "WORLD_SIZE": "32", "LOCAL_WORLD_SIZE": "8"}


@pytest.mark.parametrize(
    ("overrides", "launcher", "world", "accumulation"),
    [
        (["hw=cpu"], {}, 1, 32),  # 1 device x 1 node
        (["hw=gaudi_8x"], {}, 8, 4),  # 8 devices x 1 node
        (["hw=multi_node", "hw.num_nodes=4"], TORCHRUN_4x8, 32, 1),  # 8 devices (from torchrun) x 4 nodes
    ],
    ids=["1x1", "8x1", "8x4"],
)
def test_accumulation_keeps_the_global_batch_on_any_hardware(
    overrides: list[str],
    launcher: dict[str, str],
    world: int,
    accumulation: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in launcher.items():
        monkeypatch.setenv(name, value)
    hw = _hw(tmp_path, *overrides)
    assert hardware.world_size(hw) == world
    steps = BatchPlan.make(global_batch_size=256, per_device_batch_size=8, world_size=world).accumulation
    assert steps == accumulation and 8 * world * steps == 256


def test_accumulation_without_a_per_device_size_splits_the_global_batch() -> None:
    assert BatchPlan.make(64, None, 8).accumulation == 1  # 8 per device
    assert BatchPlan.make(64, None, 1).accumulation == 1  # the whole batch in one pass


@pytest.mark.parametrize(("global_batch", "per_device", "world"), [(64, 16, 8), (48, 16, 2), (4, None, 8)])
def test_a_global_batch_that_does_not_divide_names_the_numbers_to_change(
    global_batch: int, per_device: int | None, world: int
) -> None:
    with pytest.raises(ValueError, match=rf"data.global_batch_size={global_batch}\b.*world size {world}"):
        BatchPlan.make(global_batch, per_device, world)


@pytest.mark.cpu_precision
# --- world size under external launchers ----------------------------------------------------------
def test_torchrun_sets_devices_per_node_and_a_mismatch_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    hw = _hw(tmp_path, "hw=multi_node", "hw.accelerator=cpu")  # devices: auto, num_nodes: 2
    assert hardware.world_size(hw) == 16
    kwargs = hardware.trainer_kwargs(hw)
    assert kwargs["devices"] == 8 and kwargs["num_nodes"] == 2 and isinstance(kwargs["strategy"], DDPStrategy)
    with pytest.raises(ValueError, match="hw.num_nodes=4"):
        hardware.world_size(_hw(tmp_path, "hw=multi_node", "hw.num_nodes=4"))
    with pytest.raises(ValueError, match="hw.devices=2"):
        hardware.world_size(_hw(tmp_path, "hw=multi_node", "hw.devices=2"))


def test_slurm_tasks_give_the_world_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "asr")
    assert hardware.world_size(_hw(tmp_path, "hw=multi_node")) == 16
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # salloc shell: asrkit starts its own processes
    with pytest.raises(ValueError, match="hw.num_nodes=2: start asrkit on every node"):
        hardware.world_size(_hw(tmp_path, "hw=multi_node"))


def test_several_nodes_need_a_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="torchrun, srun or mpirun"):
        hardware.world_size(_hw(tmp_path, "hw=multi_node"))
    monkeypatch.setenv("NODE_RANK", "1")  # Lightning's own multi-node launch (MASTER_ADDR, NODE_RANK)
    assert hardware.world_size(_hw(tmp_path, "hw=multi_node", "hw.devices=2")) == 4


# --- strategies and plugins -----------------------------------------------------------------------
@pytest.mark.cpu_precision
def test_ddp_cpu_builds_a_gloo_ddp_strategy(tmp_path: Path) -> None:
    kwargs = hardware.trainer_kwargs(_hw(tmp_path, "hw=ddp_cpu"))
    assert kwargs["accelerator"] == "cpu" and kwargs["devices"] == 2
    assert isinstance(kwargs["strategy"], DDPStrategy) and kwargs["strategy"]._process_group_backend == "gloo"
    assert "plugins" not in kwargs


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_a100_profiles_build_their_strategies_and_need_a_gpu(tmp_path: Path) -> None:
    hw = _hw(tmp_path, "hw=a100")
    assert hw.precision == "bf16-mixed" and isinstance(hardware.build_strategy(hw), DDPStrategy)
    with pytest.raises(RuntimeError, match="hw.accelerator=gpu: no CUDA GPU here"):
        hardware.trainer_kwargs(hw)
    strategy = hardware.build_strategy(_hw(tmp_path, "hw=a100_deepspeed"))
    assert isinstance(strategy, DeepSpeedStrategy)
    assert type(strategy.config) is dict and strategy.config["zero_optimization"]["stage"] == 2


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("hw.deepspeed.zero_optimization.stage=auto", "hw.deepspeed.zero_optimization.stage"),
        ("+hw.deepspeed.train_micro_batch_size_per_gpu=auto", "hw.deepspeed.train_micro_batch_size_per_gpu"),
        ("+hw.deepspeed.gradient_accumulation_steps=4", "hw.deepspeed.gradient_accumulation_steps"),
        ("+hw.deepspeed.optimizer.type=AdamW", "hw.deepspeed.optimizer"),
        ("hw.deepspeed.zero_optimization.stage=3", "hw.deepspeed.zero_optimization.stage=3"),
    ],
)
def test_deepspeed_config_rejects_auto_and_derived_keys_naming_them(override: str, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        hardware.build_strategy(_hw(tmp_path, "hw=a100_deepspeed", override))


def test_gaudi_profiles_build_habana_objects_and_stop_without_an_hpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_habana.pytorch.plugins import HPUPrecisionPlugin, precision
    from lightning_habana.pytorch.strategies import HPUDDPStrategy, SingleHPUStrategy

    one, eight = _hw(tmp_path, "hw=gaudi_1x"), _hw(tmp_path, "hw=gaudi_8x")
    assert isinstance(hardware.build_strategy(one), SingleHPUStrategy)
    ddp = hardware.build_strategy(eight)
    assert isinstance(ddp, HPUDDPStrategy) and ddp._process_group_backend == "hccl"
    assert hardware.world_size(eight) == 8
    # The plugin checks the SynapseAI version at construction; pretend a Gaudi host's to build it here.
    monkeypatch.setattr(precision, "_HPU_SYNAPSE_GREATER_EQUAL_1_11_0", True)
    for hw in (one, eight):
        (plugin,) = hardware.build_plugins(hw)
        assert isinstance(plugin, HPUPrecisionPlugin) and plugin.precision == "bf16-mixed"

    monkeypatch.delenv("PT_HPU_LAZY_MODE", raising=False)
    with pytest.raises(RuntimeError, match="HPU not available"):
        hardware.trainer_kwargs(eight)
    assert os.environ["PT_HPU_LAZY_MODE"] == "0"  # exported from hw.env before the HPU check
    with pytest.raises(Exception, match="hpu DeepSpeed"):  # Habana's fork, not PyPI's, is needed
        hardware.build_strategy(_hw(tmp_path, "hw=gaudi_8x_deepspeed"))


def test_a_gaudi_run_stops_with_a_clear_error_on_this_machine(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="hw.accelerator=hpu: HPU not available"):
        train(compose_config(TINY_RUN + ["hw=gaudi_1x"], tmp_path))


@pytest.mark.parametrize(
    ("profile", "package", "extra"),
    [
        ("gaudi_1x", "lightning_habana", "gaudi"),
        ("gaudi_8x", "lightning_habana", "gaudi"),
        ("a100_deepspeed", "deepspeed", "deepspeed"),
    ],
)
def test_a_missing_platform_package_is_a_one_line_hint_naming_the_extra(
    profile: str, package: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hw = _hw(tmp_path, f"hw={profile}")
    monkeypatch.setitem(sys.modules, package, None)  # what an import finds where it is not installed
    with pytest.raises(ImportError) as error:
        hardware.build_strategy(hw)
    message = str(error.value)
    assert f"pip install 'asrkit[{extra}]'" in message and "\n" not in message and package in message


def test_checkpoint_state_dict_reads_a_lightning_checkpoint_file(tmp_path: Path) -> None:
    weights = {"model.weight": torch.arange(3.0)}
    torch.save({"state_dict": weights, "global_step": 3}, tmp_path / "last.ckpt")
    loaded = checkpoints.checkpoint_state_dict(tmp_path / "last.ckpt")
    assert torch.equal(loaded["model.weight"], weights["model.weight"])


@pytest.mark.cpu_precision
@pytest.mark.parametrize("experiment", ["demo", "demo_ctc", "demo_pretrain"])
@pytest.mark.parametrize("cpu_bf16", ["0", "1"])
def test_the_demos_train_in_fp32_whatever_the_cpu_says(experiment, cpu_bf16, tmp_path, monkeypatch) -> None:
    """bf16 autocast stopped the CTC demo learning on a Xeon with AMX (issue 10): the demos pin fp32, so their
    documented results hold on every CPU (experiments/demo_precision)."""
    monkeypatch.setenv(hardware.CPU_BF16_VARIABLE, cpu_bf16)
    assert hardware.resolve_precision(_hw(tmp_path, f"experiment={experiment}")) == "32-true"
    expected = "bf16-mixed" if cpu_bf16 == "1" else "32-true"
    assert hardware.resolve_precision(_hw(tmp_path, "hw=cpu")) == expected  # what the switch does elsewhere


@pytest.mark.cpu_precision
def test_a_cpu_bf16_override_that_is_not_0_or_1_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv(hardware.CPU_BF16_VARIABLE, "yes")
    with pytest.raises(ValueError, match="ASRKIT_CPU_BF16='yes'"):
        hardware.cpu_has_native_bf16()
