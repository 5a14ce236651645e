"""Turn the ``hw`` config into Lightning Trainer arguments.

``accelerator``, ``devices`` and ``num_nodes`` go to the Trainer as they are (``devices: auto`` under an
external launcher becomes the processes it started per node). ``strategy`` is a Lightning name
(``auto``, ``ddp``) or a config with a ``_target_`` (``DDPStrategy``, ``DeepSpeedStrategy``,
``SingleHPUStrategy``, ...), built here; ``plugins`` is a list of such configs (Habana's precision plugin).
``precision: auto`` picks bf16-mixed on GPUs that support it and 16-mixed on older GPUs; on a CPU,
bf16-mixed where the processor has native bf16 dot products (AVX512-BF16 or AMX; 1.3x the fp32 step
rate of the demo Whisper in ``benchmarks/cpu_step.py``) and 32-true elsewhere. The world size
(devices x nodes) is what global batch sizes are divided by.

Platform packages (lightning_habana, habana_frameworks, deepspeed, mpi4py) are imported only when the
config names them; a missing one is a one-line error naming the asrkit extra that installs it. An installed
mpi4py that cannot load its MPI library stops only runs that use MPI (:mod:`asrkit.cluster`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from asrkit.cluster import fallback_environment, mpi_requested, require_mpi
from asrkit.extras import EXTRAS, require

log = logging.getLogger(__name__)

# Lightning's DDP strategy names; each has a "<name>_find_unused_parameters_true" variant
DDP_NAMES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
# DeepSpeed config keys that asrkit sets from elsewhere (Lightning derives them from the Trainer and data)
DEEPSPEED_DERIVED_KEYS = {
    "gradient_accumulation_steps": "derived from data.global_batch_size / (per-device batch x world size)",
    "train_batch_size": "it is data.global_batch_size",
    "optimizer": "the optimizer group builds the optimizer (optimizer.factory)",
    "scheduler": "the optimizer group builds the learning-rate schedule (optimizer.scheduler)",
}


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


# --- how this process was launched ------------------------------------------------------------------
def external_launch() -> tuple[str, int, int] | None:
    """``(launcher, world size, processes per node)`` when torchrun, SLURM's srun or mpirun started this
    process (one process per device); None when asrkit starts its own processes."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun", int(env["WORLD_SIZE"]), int(env["LOCAL_WORLD_SIZE"])
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        world = int(env["SLURM_NTASKS"])
        return "srun", world, world // int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES", "1"))
    mpi_sizes = (("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"), ("PMI_SIZE", "MPI_LOCALNRANKS"))
    for size, local in mpi_sizes:
        if size in env and int(env[size]) > 1:
            require_mpi("a run launched by mpirun (Lightning's MPIEnvironment)")
            return "mpirun", int(env[size]), int(env.get(local, env[size]))
    return None


# --- devices and world size -------------------------------------------------------------------------
def _cuda_usable(accelerator: str) -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(hw: Mapping[str, Any]) -> str:
    precision = str(hw.get("precision", "auto"))
    if precision != "auto":
        return precision
    accelerator = str(hw["accelerator"])
    if _cuda_usable(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator == "hpu":
        return "bf16-mixed"
    if accelerator in ("auto", "cpu") and cpu_has_native_bf16():
        return "bf16-mixed"
    return "32-true"


CPU_BF16_VARIABLE = "ASRKIT_CPU_BF16"  # 1 / 0: what precision auto assumes of the CPU instead of detecting it


def cpu_has_native_bf16() -> bool:
    """Whether the processor has native bf16 dot products (AVX512-BF16 or AMX), unless ``ASRKIT_CPU_BF16``
    says otherwise: ``1`` picks bf16-mixed on any CPU (emulated where there is no native support), ``0`` fp32.

    The override makes a run's numerics independent of the machine it lands on (CI runs the test suite
    with each value); ``hw.precision`` is still the way to choose a precision for one run.
    """
    forced = os.environ.get(CPU_BF16_VARIABLE, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"{CPU_BF16_VARIABLE}={forced!r}: 1 (bf16 autocast on CPUs), 0 (fp32) or unset")
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def devices_per_node(hw: Mapping[str, Any]) -> int:
    """Processes per node: ``hw.devices``, or for ``auto`` the launcher's count or every visible device."""
    devices = hw.get("devices", "auto")
    launched = external_launch()
    if devices in ("auto", -1, "-1"):
        if launched:
            return launched[2]
        if _cuda_usable(str(hw["accelerator"])):
            return torch.cuda.device_count()
        if hw["accelerator"] == "hpu":
            require("lightning_habana", "hw.accelerator=hpu")
            from lightning_habana.pytorch.accelerator import HPUAccelerator

            return HPUAccelerator.auto_device_count()
        return 1
    if isinstance(devices, int) or isinstance(devices, str) and devices.isdigit():
        count = int(devices)
    elif isinstance(devices, str) and devices.replace(",", "").strip().isdigit():
        count = len([index for index in devices.split(",") if index.strip()])  # "0,1": device indices
    elif not isinstance(devices, str):
        count = len(devices)  # a list of device indices
    else:
        raise ValueError(f"hw.devices={devices!r}: use auto, a count or a list of device indices")
    if launched and count != launched[2]:
        raise ValueError(
            f"hw.devices={count} but {launched[0]} started {launched[2]} processes per node: "
            f"set hw.devices={launched[2]} (or auto), or launch {count} per node"
        )
    return count


def world_size(hw: Mapping[str, Any]) -> int:
    """Processes taking part in one optimizer step: devices per node x nodes (the launcher's count when
    torchrun, srun or mpirun started the processes)."""
    per_node, nodes = devices_per_node(hw), int(hw.get("num_nodes", 1))
    launched = external_launch()
    if launched and per_node * nodes != launched[1]:
        raise ValueError(
            f"hw.num_nodes={nodes} x {per_node} devices = {per_node * nodes} processes, but {launched[0]} "
            f"started {launched[1]}: set hw.num_nodes={launched[1] // per_node}"
        )
    if nodes > 1 and not launched and "NODE_RANK" not in os.environ:
        raise ValueError(
            f"hw.num_nodes={nodes}: start asrkit on every node with torchrun, srun or mpirun "
            "(see conf/hw/multi_node.yaml), or set MASTER_ADDR, MASTER_PORT and NODE_RANK on each"
        )
    return per_node * nodes


# --- strategy, plugins and the Trainer arguments ----------------------------------------------------
def check_deepspeed_config(config: Mapping[str, Any], where: str) -> None:
    """Reject what only the Hugging Face Trainer understands (``"auto"``), keys asrkit derives, and ZeRO-3."""
    for key, reason in DEEPSPEED_DERIVED_KEYS.items():
        if key in config:
            raise ValueError(f"{where}.{key}: remove it from the DeepSpeed config, {reason}")
    if (config.get("zero_optimization") or {}).get("stage") == 3:
        raise ValueError(
            f"{where}.zero_optimization.stage=3 shards the weights themselves, and asrkit's test and export "
            "need whole weights in every process: use stage 1 or 2"
        )
    _reject_auto(config, where)


def _reject_auto(config: Mapping[str, Any], where: str) -> None:
    for key, value in config.items():
        if isinstance(value, Mapping):
            _reject_auto(value, f"{where}.{key}")
        elif value == "auto":
            raise ValueError(
                f"{where}.{key}=auto: DeepSpeed 'auto' values only work inside the Hugging Face Trainer; "
                "give a concrete value or remove the key"
            )


def _target_class(node: Mapping[str, Any], where: str) -> type:
    target = str(node["_target_"])
    root = target.split(".")[0]
    if root in EXTRAS:
        require(root, f"{where}={target}")
    return get_class(target)


def _find_unused_parameters(hw: Mapping[str, Any], node: Any) -> Any:
    """``hw.strategy`` with DDP told to look for parameters a step leaves without gradient (layerdrop)."""
    from lightning.pytorch.strategies import DDPStrategy  # Habana's HPUDDPStrategy is one too

    if isinstance(node, Mapping):
        cls = _target_class(node, "hw.strategy")
        if not issubclass(cls, DDPStrategy) or "deepspeed" in cls.__name__.lower():
            return node  # single-device strategies need nothing; DeepSpeed ZeRO ignores unused parameters
        if node.get("find_unused_parameters") is False:
            raise ValueError(
                "hw.strategy.find_unused_parameters=false, but the model skips layers "
                "(layerdrop > 0): remove the key or set the model's layerdrop to 0"
            )
        node = {**_plain(node), "find_unused_parameters": True}
    elif node in DDP_NAMES or (node == "auto" and world_size(hw) > 1):
        if node == "auto" and hw["accelerator"] == "hpu":  # Lightning would pick HPUParallelStrategy
            raise ValueError(
                "hw.strategy=auto on several HPUs with layerdrop > 0: give hw.strategy an "
                "HPUDDPStrategy config (hw=gaudi_8x)"
            )
        node = f"{'ddp' if node == 'auto' else node}_find_unused_parameters_true"
    else:
        return node  # one process, or a strategy name that is not DDP
    log.info("the model skips layers (layerdrop > 0): DDP looks for unused parameters every step")
    return node


def build_strategy(hw: Mapping[str, Any], find_unused_parameters: bool = False) -> Any:
    """``hw.strategy``: a Lightning name as it is, or the strategy object its ``_target_`` describes.

    ``find_unused_parameters`` (the module's ``skips_layers``: layerdrop > 0) makes a DDP strategy look
    for parameters that a step left without gradient, which DDP otherwise stops on.
    """
    node = hw.get("strategy", "auto")
    if find_unused_parameters:
        node = _find_unused_parameters(hw, node)
    if not isinstance(node, Mapping):
        return node
    cls = _target_class(node, "hw.strategy")
    if "deepspeed" in cls.__name__.lower():
        require("deepspeed", f"hw.strategy={cls.__name__}")
        if not isinstance(node.get("config"), Mapping):
            raise ValueError(f"hw.strategy={cls.__name__} needs hw.strategy.config (e.g. ${{hw.deepspeed}})")
        where = "hw.deepspeed" if "deepspeed" in hw else "hw.strategy.config"
        check_deepspeed_config(_plain(node["config"]), where)
    strategy = instantiate(node, _convert_="all")
    log.info("strategy: %s", type(strategy).__name__)
    return strategy


def build_plugins(hw: Mapping[str, Any]) -> list[Any]:
    """``hw.plugins``: the Lightning plugin objects (precision, checkpoint IO, cluster environment)."""
    plugins = []
    for index, node in enumerate(hw.get("plugins") or []):
        _target_class(node, f"hw.plugins[{index}]")
        plugins.append(instantiate(node, _convert_="all"))
    return plugins


def _check_available(hw: Mapping[str, Any]) -> None:
    """Stop early, naming the profile's needs, when the accelerator it asks for is not on this machine."""
    accelerator = str(hw["accelerator"])
    if accelerator == "hpu":
        require("lightning_habana", "hw.accelerator=hpu")
        from lightning_habana.pytorch.accelerator import HPUAccelerator

        if not HPUAccelerator.is_available():
            raise RuntimeError(
                "hw.accelerator=hpu: HPU not available on this machine (no Gaudi device or no "
                "habana_frameworks); use a Gaudi host with the SynapseAI software, or hw=cpu / hw=auto here"
            )
    elif accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"hw.accelerator={accelerator}: no CUDA GPU here; use hw=cpu or hw=auto")


def trainer_kwargs(hw: Mapping[str, Any], find_unused_parameters: bool = False) -> dict[str, Any]:
    """The ``lightning.Trainer`` arguments accelerator, devices, num_nodes, strategy, precision, plugins
    (``find_unused_parameters``: see ``build_strategy``). :func:`world_size` checks nodes x devices against
    the launcher; ``train()`` calls it once, for the batch plan."""
    from asrkit.config import export_environment

    export_environment(hw.get("env"))  # Habana's PT_HPU_* are read when its bridge is first imported
    _check_available(hw)
    asked = mpi_requested(_plain(hw))
    if asked:
        require_mpi(f"{asked}=MPIEnvironment")
    devices = hw.get("devices", "auto")
    if devices in ("auto", -1, "-1") and external_launch():
        devices = devices_per_node(hw)
    kwargs: dict[str, Any] = {
        "accelerator": hw["accelerator"],
        "devices": _plain(devices),
        "num_nodes": int(hw.get("num_nodes", 1)),
        "strategy": build_strategy(hw, find_unused_parameters),
        "precision": resolve_precision(hw),
    }
    plugins = build_plugins(hw)
    environment = fallback_environment(plugins, kwargs["strategy"])  # None: Lightning's detection is safe
    if environment is not None:
        plugins.append(environment)
    if plugins:
        from lightning.pytorch.plugins.precision import Precision

        if any(isinstance(plugin, Precision) for plugin in plugins):
            del kwargs["precision"]  # the plugin carries it (hw.precision, interpolated into it)
        kwargs["plugins"] = plugins
    return kwargs
