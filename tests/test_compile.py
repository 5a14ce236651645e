"""model.compile: training steps run the network through torch.compile, and nothing saved knows it.

torch.compile is spied on and given dynamo's ``eager`` backend: these tests are about what the module keeps and
saves, not inductor's kernels (benchmarks/compute_options.py --compile measures those).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from safetensors import safe_open

from asrkit.models.whisper import WhisperModule
from asrkit.train import steppable, train
from tests.conftest import TINY_RUN, compose_config

COMPILED = "_orig_mod"  # what torch.compile's wrapper puts in front of every parameter name


@pytest.fixture
def compile_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """torch.compile's calls (their keyword arguments); each compiles with dynamo's eager backend."""
    calls: list[dict[str, Any]] = []
    original = torch.compile

    def spy(model: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(model, backend="eager")

    monkeypatch.setattr(torch, "compile", spy)
    return calls


@pytest.mark.parametrize(
    "overrides", [["experiment=demo"], ["experiment=demo_ctc", "model.tokenizer_dir=null"]], ids=["whisper", "ctc"]
)
def test_a_compiled_training_step_leaves_the_module_state_as_it_was(tmp_path, compile_calls, overrides) -> None:
    cfg = compose_config([*overrides, "model.compile=true", "model.compile_mode=max-autotune"], tmp_path)
    module, datamodule = steppable(cfg)
    keys = list(module.state_dict())
    batch = next(iter(datamodule.train_dataloader()))
    module.training_step(batch, 0).backward()
    module.training_step(batch, 1)
    assert compile_calls == [{"mode": "max-autotune"}]  # once, on the first step
    assert list(module.state_dict()) == keys and not any(COMPILED in key for key in keys)


def test_a_checkpoint_trained_compiled_resumes_uncompiled_and_exports_plain_names(tmp_path, compile_calls) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    train(compose_config([*TINY_RUN, "model.compile=true", "data.test_split=null"], first))
    assert compile_calls  # the run's training steps went through torch.compile
    last = first / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert state and not any(COMPILED in key for key in state)

    module = WhisperModule.load_from_checkpoint(last, compile=False)  # strict: every key where it belongs
    assert not module.hparams.compile
    with safe_open(first / "export" / "model.safetensors", framework="pt") as export:
        exported = set(export.keys())
    assert exported and exported <= set(module.model.state_dict())

    calls = len(compile_calls)
    resumed = [*TINY_RUN, "data.test_split=null", "export=false", "trainer.max_steps=6", f"resume={last}"]
    train(compose_config(resumed, second))  # compile off
    assert json.loads((second / "metrics.json").read_text())["global_step"] == 6
    assert len(compile_calls) == calls


def test_an_unknown_compile_mode_names_the_key(tmp_path) -> None:
    cfg = compose_config(["experiment=demo", "model.compile_mode=fastest"], tmp_path)
    with pytest.raises(InstantiationException, match="model.compile_mode='fastest': choose one of default"):
        instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
