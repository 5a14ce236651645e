"""The Trainer's cluster environment, chosen so that an installed mpi4py that cannot load MPI stops only MPI runs.

Lightning's Trainer asks TorchElastic, SLURM, LSF and then MPI whether they launched this process, in that order.
MPI's answer (``MPIEnvironment.detect()``) imports ``mpi4py.MPI``, which loads the system MPI library: with the
``mpi`` extra installed on a machine without that library, the import raises ("cannot load MPI library") and
every run crashed, MPI or not. So asrkit asks MPI first, inside try/except, when the three before it say no and
the config names no environment: if MPI cannot answer, the run gets a warning and Lightning's own environment
(what Lightning picks when nothing launched the process), passed explicitly so that Lightning does not ask again.
A run that asks for MPI (started by mpirun, or an ``MPIEnvironment`` in the hw config) instead stops with an
error naming what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    LightningEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

from asrkit.extras import require

log = logging.getLogger(__name__)

# what the Trainer's accelerator connector asks before MPI (it does not ask Kubeflow)
ASKED_BEFORE_MPI = (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment)
MPI_LIBRARY_HINT = (
    "install the MPI library mpi4py was built against (e.g. apt install libopenmpi-dev, or load the cluster's "
    "MPI module), or pip uninstall mpi4py where MPI is not used"
)


def require_mpi(what: str) -> None:
    """Import mpi4py and the MPI library it loads, or stop with one line naming what is missing."""
    require("mpi4py", what)  # the package itself: names the asrkit extra
    try:
        from mpi4py import MPI  # noqa: F401
    except Exception as error:  # RuntimeError("cannot load MPI library"), or the loader's OSError
        raise ImportError(
            f"{what} needs the MPI library, which mpi4py cannot load ({type(error).__name__}: {error}); "
            f"{MPI_LIBRARY_HINT}"
        ) from None


def mpi_requested(node: Any, where: str = "hw") -> str | None:
    """The key of a ``_target_`` naming an ``MPIEnvironment`` inside ``node`` (the plain hw config), if any."""
    if isinstance(node, Mapping):
        if str(node.get("_target_", "")).rsplit(".", 1)[-1] == MPIEnvironment.__name__:
            return where
        found = (mpi_requested(value, f"{where}.{key}") for key, value in node.items())
    elif isinstance(node, list):
        found = (mpi_requested(value, f"{where}[{index}]") for index, value in enumerate(node))
    else:
        return None
    return next((key for key in found if key), None)


def fallback_environment(plugins: Sequence[Any], strategy: Any) -> ClusterEnvironment | None:
    """``LightningEnvironment()`` where Lightning's own choice would stop on an mpi4py that cannot load MPI;
    None where Lightning can choose (an environment is given, another launcher is detected, or MPI answers)."""
    if any(isinstance(plugin, ClusterEnvironment) for plugin in plugins):
        return None
    if getattr(strategy, "cluster_environment", None) is not None:
        return None
    if any(environment.detect() for environment in ASKED_BEFORE_MPI):
        return None
    try:
        MPIEnvironment.detect()
    except Exception as error:
        log.warning(
            "mpi4py is installed but cannot load MPI (%s: %s), so this run does not look for an mpirun launch and "
            "uses Lightning's own environment; to use MPI, or to silence this: %s",
            type(error).__name__,
            error,
            MPI_LIBRARY_HINT,
        )
        return LightningEnvironment()
    return None
