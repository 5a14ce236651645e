"""Optional packages never break what does not use them: an mpi4py that cannot load MPI stops only MPI runs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.fabric.plugins.environments import mpi as lightning_mpi

from asrkit import hardware
from tests.conftest import compose_config
from tests.test_hardware import LAUNCHER_VARIABLES

MPI_PLUGIN = "hw.plugins=[{_target_:lightning.fabric.plugins.environments.MPIEnvironment}]"


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def broken_mpi4py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """mpi4py installed on a machine without the MPI library: importing mpi4py.MPI raises, as the real one does."""
    package = tmp_path / "site" / "mpi4py"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "MPI.py").write_text('raise RuntimeError("cannot load MPI library")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(lightning_mpi, "_MPI4PY_AVAILABLE", True)  # Lightning's flag reads installed metadata
    for name in ("mpi4py", "mpi4py.MPI"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield
    for name in ("mpi4py", "mpi4py.MPI"):
        sys.modules.pop(name, None)


def _trainer(hw, root: Path) -> L.Trainer:
    kwargs = hardware.trainer_kwargs(hw)
    return L.Trainer(
        **kwargs, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=root
    )


@pytest.mark.parametrize("profile", ["cpu", "ddp_cpu"])
@pytest.mark.cpu_precision
def test_a_trainer_builds_and_warns_where_mpi4py_cannot_load_mpi(
    profile: str, tmp_path: Path, broken_mpi4py, caplog: pytest.LogCaptureFixture
) -> None:
    hw = compose_config([f"hw={profile}"], tmp_path).hw
    with caplog.at_level(logging.WARNING, logger="asrkit.cluster"):
        trainer = _trainer(hw, tmp_path)
    assert isinstance(trainer._accelerator_connector.cluster_environment, LightningEnvironment)
    warnings = [r.getMessage() for r in caplog.records if r.name == "asrkit.cluster"]
    assert len(warnings) == 1 and "mpi4py" in warnings[0] and "cannot load MPI library" in warnings[0]


@pytest.mark.cpu_precision
def test_without_mpi4py_lightning_chooses_as_before(tmp_path: Path) -> None:
    assert not lightning_mpi._MPI4PY_AVAILABLE  # not installed here (the mpi extra needs a system MPI)
    assert "plugins" not in hardware.trainer_kwargs(compose_config(["hw=cpu"], tmp_path).hw)


def test_an_mpirun_launch_names_the_missing_mpi_library(
    tmp_path: Path, broken_mpi4py, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    with pytest.raises(ImportError) as error:
        hardware.world_size(compose_config(["hw=ddp_cpu"], tmp_path).hw)
    message = str(error.value)
    assert message.startswith("a run launched by mpirun") and "cannot load MPI library" in message
    assert "\n" not in message


def test_an_mpi_environment_in_the_config_names_the_missing_mpi_library(tmp_path: Path, broken_mpi4py) -> None:
    with pytest.raises(ImportError, match=r"^hw.plugins\[0\]=MPIEnvironment needs the MPI library.*cannot load MPI"):
        hardware.trainer_kwargs(compose_config(["hw=cpu", MPI_PLUGIN], tmp_path).hw)


def test_an_mpi_environment_without_mpi4py_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # what an import finds where it is not installed
    with pytest.raises(ImportError, match=r"pip install 'asrkit\[mpi\]'"):
        hardware.trainer_kwargs(compose_config(["hw=cpu", MPI_PLUGIN], tmp_path).hw)
