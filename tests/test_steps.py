"""What every model module shares around its steps (asrkit/models/steps.py), on each of the three families:
train mode when fitting starts from a save_pretrained directory, a batch of undecodable audio under DDP,
and the precision evaluation runs in whatever the trainer trains in."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from asrkit.models import steps
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config

EXPERIMENTS = ["demo", "demo_ctc", "demo_pretrain"]
# one optimizer step, no evaluation, nothing written but what the test reads
ONE_STEP = [
    *TINY_RUN[1:],
    "trainer.max_steps=1",
    "trainer.val_check_interval=1000",
    "data.test_split=null",
    "export=false",
    "callbacks.periodic_checkpoint=null",
]


def _module(experiment: str, tmp_path: Path, *overrides: str):
    if experiment == "demo_ctc":
        overrides = (*overrides, "model.tokenizer_dir=null")  # no run directory to save the vocabulary in
    cfg = compose_config([f"experiment={experiment}", *overrides], tmp_path)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    if module.model is None:  # CTC: the network exists once the vocabulary does
        module.collator.build_vocabulary(["नमस्ते दुनिया", "पानी"])
        module.configure_model()
    return module


class EvalModeProbe(Callback):
    """Writes the names of the submodules in eval mode when the first training batch starts to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.path.exists():
            found = [name for name, module in pl_module.named_modules() if not module.training]
            self.path.write_text(json.dumps(found))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_module_is_in_train_mode_at_the_first_step_of_a_fine_tune(experiment: str, tmp_path) -> None:
    """from_pretrained returns eval mode and Lightning keeps it: dropout, SpecAugment, layerdrop were off."""
    pretrained, found = tmp_path / "pretrained", tmp_path / "eval_mode.json"
    _module(experiment, tmp_path / "cfg").export(pretrained)  # a save_pretrained directory of the family
    probe = "tests.test_steps.EvalModeProbe"
    overrides = [
        f"model.name_or_path={pretrained}",
        f"+callbacks.probe._target_={probe}",
        f"+callbacks.probe.path={found}",
    ]
    if experiment == "demo_pretrain":
        overrides.append("model.load_weights=true")
    train(compose_config([f"experiment={experiment}", *ONE_STEP, *overrides], tmp_path / "run"))
    in_eval_mode = json.loads(found.read_text())
    assert in_eval_mode == [], f"{len(in_eval_mode)} modules in eval mode while training: {in_eval_mode[:5]}"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_rank_whose_batch_failed_to_decode_still_joins_the_backward_pass(experiment, tmp_path) -> None:
    """Under DDP a rank that returns no loss skips the gradient all-reduce and the others wait forever."""
    module = _module(experiment, tmp_path)
    module._trainer = SimpleNamespace(world_size=2, global_step=0)
    loss = module.training_step(None, 0)
    assert isinstance(loss, torch.Tensor) and loss.item() == 0.0
    loss.backward()
    trained = [p for p in module.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and not p.grad.any() for p in trained)  # zero, but all-reduced
    module._trainer = SimpleNamespace(world_size=1, global_step=0)
    assert module.training_step(None, 0) is None  # one process: Lightning skips the step


@pytest.mark.parametrize(("dtype", "expected"), [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_evaluation_runs_in_its_own_dtype_whatever_the_trainer_autocasts_to(dtype, expected, tmp_path):
    module = _module("demo", tmp_path)
    seen = []
    module.model.proj_out.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    batch = module.collator(
        [{"index": 0, "audio": torch.zeros(16_000).numpy() + 0.01, "text": "पानी", "reference": "पानी"}]
    )
    module.hparams.evaluation = {"dtype": dtype, "normalizer": "basic"}
    module.hparams.generation_max_length = 2
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what Lightning's bf16-mixed wraps every step in
        module.test_step(batch, 0)
    assert seen and set(seen) == {expected}


def test_evaluation_settings_name_the_key() -> None:
    assert steps.evaluation_normalizer({"normalizer": "auto", "language": "en"}) == "english"
    assert steps.evaluation_normalizer({"normalizer": "auto", "language": "hi"}) == "basic"
    assert steps.evaluation_normalizer(None) == "basic"
    with pytest.raises(ValueError, match="evaluation.normalizer='latin'"):
        steps.evaluation_normalizer({"normalizer": "latin", "language": "en"})
    with pytest.raises(ValueError, match="evaluation.dtype=int8"):
        steps.evaluation_dtype({"dtype": "int8"})
