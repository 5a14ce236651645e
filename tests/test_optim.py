"""Optimizers (conf/optimizer/*), learning-rate schedules and weight-decay groups (asrkit/optim.py)."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from asrkit import optim
from asrkit.models import steps
from tests.conftest import compose_config

OPTIMIZERS = ["adamw", "adam8bit", "adafactor"]
_TINY_WAV2VEC2 = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(8, 8),
    conv_kernel=(10, 3),
    conv_stride=(5, 2),
    vocab_size=8,
    num_conv_pos_embeddings=4,
    num_conv_pos_embedding_groups=2,
)


def _lrs(optimizer_cfg: list[str], total_steps: int, steps: list[int], tmp_path: Path) -> list[float]:
    """The lr the real config's scheduler sets at each of ``steps`` (peak lr 1)."""
    cfg = compose_config([*optimizer_cfg, "optimizer.lr=1.0"], tmp_path).optimizer
    optimizer = optim.build_optimizer(nn.Linear(2, 2), cfg)
    scheduler = optim.build_scheduler(optimizer, cfg, total_steps)["scheduler"]
    lrs = {}
    for step in range(max(steps) + 1):
        lrs[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    return [lrs[step] for step in steps]


def test_linear_schedule_warms_up_then_decays_to_zero(tmp_path: Path) -> None:
    overrides = ["optimizer.scheduler.warmup_steps=10"]
    lrs = _lrs(overrides, 110, [0, 4, 9, 10, 60, 109, 110, 130], tmp_path)
    assert lrs == pytest.approx([0.1, 0.5, 1.0, 1.0, 0.5, 0.01, 0.0, 0.0])


def test_cosine_schedule_and_its_floor(tmp_path: Path) -> None:
    overrides = ["optimizer/scheduler=cosine", "optimizer.scheduler.warmup_steps=0"]
    lrs = _lrs(overrides, 100, [0, 25, 50, 75, 100], tmp_path)
    assert lrs == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 - math.cos(math.pi / 4)), 0])
    floor = _lrs([*overrides, "optimizer.scheduler.min_lr_ratio=0.1"], 100, [50, 100, 120], tmp_path)
    assert floor == pytest.approx([0.55, 0.1, 0.1])


def test_constant_schedule_holds_after_warm_up(tmp_path: Path) -> None:
    overrides = ["optimizer.scheduler.shape=constant", "optimizer.scheduler.warmup_steps=4"]
    assert _lrs(overrides, 50, [0, 3, 4, 49], tmp_path) == pytest.approx([0.25, 1.0, 1.0, 1.0])


def test_tri_stage_schedule_from_phase_ratios(tmp_path: Path) -> None:
    # 1000 steps, ratios 0.1/0.4/0.5: warm-up 0..99 from 0.01, hold 100..499, decay 500..999 to 0.05
    lrs = _lrs(["optimizer/scheduler=tri_stage"], 1000, [0, 50, 100, 499, 500, 750, 1000, 1100], tmp_path)
    assert lrs == pytest.approx([0.01, 0.505, 1.0, 1.0, 1.0, math.sqrt(0.05), 0.05, 0.05])


def test_tri_stage_stage_given_in_steps_wins_over_its_ratio(tmp_path: Path) -> None:
    overrides = [
        "optimizer/scheduler=tri_stage",
        "optimizer.scheduler.warmup_steps=20",
        "optimizer.scheduler.final_lr_scale=0.1",
    ]
    # warm-up 0..19, hold 20..419, decay 420..919 (the ratios' 400 and 500 steps), then 0.1
    lrs = _lrs(overrides, 1000, [10, 20, 419, 420, 670, 920], tmp_path)
    assert lrs == pytest.approx([0.01 + 0.99 * 0.5, 1.0, 1.0, 1.0, math.sqrt(0.1), 0.1])
    assert optim.tri_stage_steps(1000, 20, None, None, [0.1, 0.4, 0.5]) == (20, 400, 500)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.scheduler.shape=bogus"], "optimizer.scheduler.shape='bogus'"),
        (["optimizer.scheduler.shape=tri_stage"], "optimizer/scheduler=tri_stage"),
        (["optimizer/scheduler=tri_stage", "optimizer.scheduler.phase_ratio=[0.5,0.5,0.5]"], "phase_ratio"),
        (["optimizer/scheduler=tri_stage", "optimizer.scheduler.final_lr_scale=0"], "final_lr_scale"),
    ],
)
def test_bad_schedule_is_an_error_naming_the_key(overrides: list[str], message: str, tmp_path: Path) -> None:
    cfg = compose_config(overrides, tmp_path).optimizer
    optimizer = optim.build_optimizer(nn.Linear(2, 2), cfg)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        optim.build_scheduler(optimizer, cfg, 100)


class _CustomRMSNorm(nn.Module):  # the kind of norm transformers models define themselves
    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))


def _groups_by_name(
    model: nn.Module, weight_decay: float = 0.1, no_decay: tuple[str, ...] = ("bias", "norm", "vector")
) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        names[id(p)]: g["weight_decay"]
        for g in optim.parameter_groups(model, weight_decay, no_decay)
        for p in g["params"]
    }


def test_no_decay_on_biases_norms_and_vectors_but_on_matrices_and_embeddings() -> None:
    model = nn.Sequential(
        nn.Embedding(10, 4),
        nn.Linear(4, 4),
        nn.LayerNorm(4),
        nn.GroupNorm(2, 4),
        nn.BatchNorm1d(4),
        _CustomRMSNorm(4),
        nn.Conv1d(4, 4, 3),
    )
    model[1].requires_grad_(False)
    decay = _groups_by_name(model)
    assert decay == {
        "0.weight": 0.1,
        "2.weight": 0.0,
        "2.bias": 0.0,
        "3.weight": 0.0,
        "3.bias": 0.0,
        "4.weight": 0.0,
        "4.bias": 0.0,
        "5.weight": 0.0,
        "6.weight": 0.1,
        "6.bias": 0.0,
    }  # the frozen Linear is left out


def test_no_decay_names_the_kinds_left_undecayed() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), _CustomRMSNorm(4))
    model.scale = nn.Parameter(torch.ones(4))  # a vector outside any norm, without "bias" in its name
    names = ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "scale"]
    everything = dict.fromkeys(names, 0.1)
    assert _groups_by_name(model, no_decay=()) == everything  # fairseq's Adam: one decayed group
    assert _groups_by_name(model, no_decay=("bias",)) == everything | {"0.bias": 0.0, "1.bias": 0.0}
    norms = everything | {"1.weight": 0.0, "1.bias": 0.0, "2.weight": 0.0}
    assert _groups_by_name(model, no_decay=("norm",)) == norms
    assert _groups_by_name(model, no_decay=("vector",)) == dict.fromkeys(names, 0.0) | {"0.weight": 0.1}
    with pytest.raises(ValueError, match=r"optimizer.no_decay=\['bias', 'norms'\]: \['norms'\] unknown"):
        optim.parameter_groups(model, 0.1, ["bias", "norms"])


def test_fairseq_pretraining_decays_every_parameter(tmp_path: Path) -> None:
    model = Wav2Vec2ForCTC(Wav2Vec2Config(**_TINY_WAV2VEC2))
    count = len(list(model.parameters()))
    fairseq = compose_config(["experiment=pretrain_base_fairseq"], tmp_path).optimizer
    (group,) = optim.build_optimizer(model, fairseq).param_groups
    assert group["weight_decay"] == 0.01 and len(group["params"]) == count
    transformers = compose_config(["experiment=pretrain_base_librispeech"], tmp_path).optimizer
    decayed, exempt = optim.build_optimizer(model, transformers).param_groups  # the default no_decay
    assert (decayed["weight_decay"], exempt["weight_decay"]) == (0.01, 0.0)
    assert len(decayed["params"]) + len(exempt["params"]) == count and len(exempt["params"]) > 0


def test_whisper_and_wav2vec2_groups(demo_model_and_batch: tuple[nn.Module, dict[str, torch.Tensor]]) -> None:
    whisper = demo_model_and_batch[0]
    decay = _groups_by_name(whisper)
    assert all(decay[name] == 0.0 for name in decay if "layer_norm" in name or name.endswith("bias"))
    assert decay["model.decoder.embed_tokens.weight"] == 0.1  # tied with proj_out: counted once
    assert decay["model.encoder.layers.0.self_attn.q_proj.weight"] == 0.1
    trainable = [p for p in whisper.parameters() if p.requires_grad]
    assert len(decay) == len(trainable)

    decay = _groups_by_name(Wav2Vec2ForCTC(Wav2Vec2Config(**_TINY_WAV2VEC2)))
    assert decay["wav2vec2.feature_extractor.conv_layers.0.layer_norm.weight"] == 0.0  # GroupNorm
    assert decay["wav2vec2.encoder.layer_norm.weight"] == 0.0
    assert decay["wav2vec2.masked_spec_embed"] == 0.0
    assert decay["wav2vec2.feature_extractor.conv_layers.1.conv.weight"] == 0.1


def test_build_optimizer_puts_no_decay_group_at_zero(tmp_path: Path) -> None:
    cfg = compose_config(["optimizer.weight_decay=0.05"], tmp_path).optimizer
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    optimizer = optim.build_optimizer(model, cfg)
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert by_decay == {0.05: {id(model[0].weight)}, 0.0: {id(model[0].bias), id(model[1].weight), id(model[1].bias)}}


def test_adam8bit_without_bitsandbytes_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now fails
    cfg = compose_config(["optimizer=adam8bit"], tmp_path).optimizer
    with pytest.raises(ImportError) as error:
        optim.build_optimizer(nn.Linear(2, 2), cfg)
    message = str(error.value)
    assert "pip install 'asrkit[bnb]'" in message and "bitsandbytes" in message and "\n" not in message


@pytest.fixture(scope="module")
def demo_model_and_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The demo's random-init Whisper (no dropout) and 4 utterances of its training data."""
    cfg = compose_config(["experiment=demo", "model.random_init.dropout=0"], tmp_path_factory.mktemp("demo"))
    torch.manual_seed(0)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    datamodule = instantiate(cfg.data, collator=module.collator)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    return module.model, {key: batch[key][:4] for key in ("input_features", "labels")}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_lowers_the_loss_on_a_fixed_batch(
    name: str, demo_model_and_batch: tuple[nn.Module, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    overrides = [
        "experiment=demo",
        f"optimizer={name}",
        "optimizer.lr=1e-3",
        "optimizer.weight_decay=0.01",
        "optimizer.scheduler.warmup_steps=1",
    ]
    cfg = compose_config(overrides, tmp_path).optimizer
    model, batch = copy.deepcopy(demo_model_and_batch[0]), demo_model_and_batch[1]
    optimizer = optim.build_optimizer(model, cfg)
    scheduler = optim.build_scheduler(optimizer, cfg, total_steps=20)["scheduler"]
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert type(optimizer).__name__ == cfg.factory._target_.split(".")[-1]
    assert losses[-1] < 0.85 * losses[0], f"{name}: losses {losses}"
    if name == "adam8bit":  # the moments of the large matrices really are 8-bit
        dtypes = {t.dtype for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)}
        assert torch.uint8 in dtypes


@pytest.mark.parametrize(("fused", "expected"), [("auto", True), ("null", None), ("false", False)])
def test_fused_auto_takes_the_fused_kernel_on_a_cpu(tmp_path: Path, fused: str, expected: bool | None) -> None:
    cfg = compose_config([f"optimizer.factory.fused={fused}"], tmp_path).optimizer
    optimizer = optim.build_optimizer(nn.Linear(2, 2), cfg)
    assert optimizer.defaults["fused"] is expected


def test_fused_auto_leaves_other_devices_to_torch() -> None:
    meta = [{"params": [nn.Parameter(torch.zeros(2, device="meta"))]}]
    assert optim.fused_where_supported(meta) is None


def test_an_unknown_fused_value_names_the_key(tmp_path: Path) -> None:
    cfg = compose_config(["optimizer.factory.fused=sometimes"], tmp_path).optimizer
    with pytest.raises(ValueError, match="optimizer.factory.fused=sometimes: true, false, null"):
        optim.build_optimizer(nn.Linear(2, 2), cfg)


def test_fused_auto_stays_unfused_under_a_gradient_scaler_or_deepspeed() -> None:
    class Strategy: ...

    class DeepSpeedStrategy: ...

    class Trainer:
        def __init__(self, precision: str, strategy: object) -> None:
            self.precision, self.strategy = precision, strategy

    assert optim.fused_allowed(Trainer("bf16-mixed", Strategy()))
    assert not optim.fused_allowed(Trainer("16-mixed", Strategy()))  # Lightning cannot clip a fused step's gradients
    assert not optim.fused_allowed(Trainer("bf16-mixed", DeepSpeedStrategy()))
    groups = [{"params": [nn.Parameter(torch.zeros(2))]}]
    assert optim.fused_where_supported(groups, allowed=False) is None


class _Clipped(steps.EvaluationHooks, L.LightningModule):
    """A linear model trained with asrkit's optimizer config; records each step's gradient norm after clipping."""

    def __init__(self, optimizer: Any) -> None:
        super().__init__()
        self.model = nn.Linear(8, 8)
        self.optimizer_cfg = optimizer
        self.norms: list[float] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.model(batch) * 100).pow(2).mean()  # gradients far above the clip value

    def configure_optimizers(self) -> dict[str, Any]:
        config = optim.configure_optimizers(self.model, self.optimizer_cfg, self.trainer.max_steps, self.trainer)
        optimizer = config["optimizer"]
        optimizer.register_step_post_hook(lambda *_: self.norms.append(self._grad_norm()))  # after the closure
        return config

    def _grad_norm(self) -> float:
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.model.parameters()])).item()

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.randn(12, 8), batch_size=4)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_fused_optimizers_gradients_are_clipped_under_bf16_mixed(tmp_path: Path, precision: str) -> None:
    # Lightning's mixed-precision plugin refuses to clip for any fused optimizer; without a scaler (bf16) asrkit clips
    cfg = compose_config(["optimizer.factory.fused=auto"], tmp_path).optimizer
    module = _Clipped(cfg)
    trainer = L.Trainer(
        accelerator="cpu",
        precision=precision,
        max_steps=3,
        gradient_clip_val=1e-3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module)
    assert trainer.optimizers[0].defaults["fused"] is True
    assert len(module.norms) == 3 and all(norm <= 1e-3 * (1 + 1e-4) for norm in module.norms), module.norms
