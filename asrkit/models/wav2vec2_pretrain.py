"""wav2vec2 self-supervised pre-training: masked contrastive loss plus codebook diversity loss.

As the transformers ``run_wav2vec2_pretraining_no_trainer.py`` recipe does it: the collator draws span
masks over the feature frames of each batch (``_compute_mask_indices``) and, for every masked frame,
``num_negatives`` distractor frames of the same utterance (``_sample_negative_indices``);
``Wav2Vec2ForPreTraining`` sums the contrastive loss over the masked frames and adds the weighted
diversity loss. The sum is divided by the number of masked frames over all ranks, so every masked
frame weighs the same whatever the world size. The Gumbel-softmax temperature of the quantizer falls
per optimizer step as ``max(max_gumbel_temperature * gumbel_temperature_decay**step,
min_gumbel_temperature)``.

Two terms of fairseq's objective are options (``pretrain_base_fairseq`` turns them on): an L2 penalty on
the convolutional features (``feature_penalty_weight``: fairseq's second ``loss_weights`` entry times
``features.float().pow(2).mean()`` of the feature encoder's output before its LayerNorm, per masked frame
as fairseq's criterion scales it) and ``feature_grad_mult`` (the gradient reaching the feature encoder
scaled, fairseq's ``GradMultiply``). ``do_normalize: false`` feeds the waveform unnormalised (fairseq's
base recipe, ``normalize: false``); the export's feature extractor says so to the models fine-tuned from it.

``name_or_path`` gives the architecture (``config.json``) and the feature extractor; its weights are
used only with ``load_weights: true`` (continue pre-training): the recipe starts from random weights.
With ``name_or_path: null`` the architecture is ``random_init`` (``Wav2Vec2Config`` arguments). The
export is a ``Wav2Vec2ForPreTraining`` checkpoint with its feature extractor, which
``model=wav2vec2_ctc model.name_or_path=<export>`` fine-tunes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

from asrkit.models import steps
from asrkit.models.pretrain_collator import Wav2Vec2PretrainCollator
from asrkit.models.spec_augment import refuse_spec_augment

log = logging.getLogger(__name__)

HEALTHY_GRAD_NORM = (0.5, 2.0)  # the transformers pre-training guide's healthy range
WARN_FACTOR = 10.0  # warn (once) when the norm is this far outside that range


def gumbel_temperature(step: int, max_temperature: float, min_temperature: float, decay: float) -> float:
    """The quantizer's Gumbel-softmax temperature at optimizer step ``step`` (from 0)."""
    return max(max_temperature * decay**step, min_temperature)


def _build_model(
    name_or_path: str | None, load_weights: bool, random_init: dict[str, Any] | None, attn: str, do_normalize: bool
) -> tuple[Wav2Vec2ForPreTraining, Wav2Vec2FeatureExtractor]:
    if name_or_path is None:
        if not random_init:
            raise ValueError("model.name_or_path is null, so model.random_init must give the Wav2Vec2Config")
        config = Wav2Vec2Config(**random_init)
        extractor = Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=16_000,
            padding_value=0.0,
            do_normalize=do_normalize,
            return_attention_mask=config.feat_extract_norm == "layer",
        )
        return Wav2Vec2ForPreTraining._from_config(config, attn_implementation=attn), extractor
    if random_init:
        log.info("model.random_init is not used: the architecture comes from %s", name_or_path)
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(name_or_path)
    if extractor.do_normalize != do_normalize:
        log.info("model.do_normalize=%s replaces the do_normalize of %s", do_normalize, name_or_path)
        extractor.do_normalize = do_normalize
    if load_weights:
        return Wav2Vec2ForPreTraining.from_pretrained(name_or_path, attn_implementation=attn), extractor
    config = Wav2Vec2Config.from_pretrained(name_or_path)
    return Wav2Vec2ForPreTraining._from_config(config, attn_implementation=attn), extractor


class Wav2Vec2PretrainModule(steps.EvaluationHooks, L.LightningModule):
    def __init__(
        self,
        name_or_path: str | None = None,
        load_weights: bool = False,
        random_init: dict[str, Any] | None = None,
        mask_time_prob: float = 0.65,
        mask_time_length: int = 10,
        max_gumbel_temperature: float = 2.0,
        min_gumbel_temperature: float = 0.5,
        gumbel_temperature_decay: float = 0.999995,
        crop_seconds: float | None = None,
        do_normalize: bool = True,
        feature_penalty_weight: float = 0.0,
        feature_grad_mult: float = 1.0,
        gradient_checkpointing: bool = False,
        attn_implementation: str = "sdpa",
        spec_augment: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        refuse_spec_augment(spec_augment)
        if not 0 < min_gumbel_temperature <= max_gumbel_temperature or not 0 < gumbel_temperature_decay <= 1:
            raise ValueError(
                "model.min_gumbel_temperature must be in (0, max_gumbel_temperature] and "
                f"model.gumbel_temperature_decay in (0, 1]; got {min_gumbel_temperature}, "
                f"{max_gumbel_temperature}, {gumbel_temperature_decay}"
            )
        if feature_penalty_weight < 0 or feature_grad_mult <= 0:
            raise ValueError(
                f"model.feature_penalty_weight={feature_penalty_weight} must be >= 0 and "
                f"model.feature_grad_mult={feature_grad_mult} > 0"
            )
        if isinstance(random_init, DictConfig):  # Hydra hands nested nodes over unconverted
            random_init = OmegaConf.to_container(random_init, resolve=True)
        self.model, self.feature_extractor = _build_model(
            name_or_path, load_weights, random_init, attn_implementation, do_normalize
        )
        if not self.model.config.apply_spec_augment:
            raise ValueError("the model config has apply_spec_augment=false, which disables the masks")
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.wav2vec2.feature_extractor.register_forward_hook(self._keep_features)
        self._features: torch.Tensor | None = None
        self.collator = Wav2Vec2PretrainCollator(
            self.feature_extractor, self.model, mask_time_prob, mask_time_length, crop_seconds
        )
        self._eval_sums: torch.Tensor | None = None
        self._last_train: dict[str, torch.Tensor] = {}
        self._warned_grad_norm = False

    @property
    def skips_layers(self) -> bool:
        """Whether a training step may skip layers (layerdrop), leaving parameters without gradient."""
        return self.model.config.layerdrop > 0

    # training ---------------------------------------------------------------------------------
    def _keep_features(self, module: torch.nn.Module, inputs: Any, features: torch.Tensor) -> None:
        """Forward hook on the conv feature encoder: keep its output (batch, channels, frames) for the
        penalty, and scale the gradient that flows back into the encoder (fairseq's GradMultiply)."""
        mult = self.hparams.feature_grad_mult
        if mult != 1.0 and features.requires_grad:
            features.register_hook(lambda grad: grad * mult)
        self._features = features

    def _forward(self, batch: dict[str, Any]) -> tuple[Any, torch.Tensor]:
        """The model's outputs and the feature penalty: the mean square of the conv features (real frames)."""
        outputs = self.model(
            input_values=batch["input_values"],
            attention_mask=batch.get("attention_mask"),
            mask_time_indices=batch["mask_time_indices"],
            sampled_negative_indices=batch["sampled_negative_indices"],
        )
        features, self._features = self._features, None
        per_frame = features.float().pow(2).mean(dim=1)  # (batch, frames)
        if batch.get("attention_mask") is not None:  # padded batches: the real frames only
            real = self.model._get_feature_vector_attention_mask(per_frame.shape[1], batch["attention_mask"])
            return outputs, per_frame[real.bool()].mean()
        return outputs, per_frame.mean()

    def _sums(self, batch: dict[str, Any], outputs: Any, penalty: torch.Tensor) -> torch.Tensor:
        """Masked frames; contrastive, diversity and feature-penalty sums over them; perplexity, frames,
        utterances, batches."""
        masked = batch["mask_time_indices"].sum().float()
        return torch.stack(
            [
                masked,
                outputs.contrastive_loss.detach().float(),
                outputs.diversity_loss.detach().float(),
                penalty.detach().float() * masked,
                outputs.codevector_perplexity.detach().float(),
                torch.tensor(float(batch["num_frames"]), device=self.device),
                torch.tensor(float(batch["num_samples"]), device=self.device),
                torch.tensor(1.0, device=self.device),
            ]
        )

    def _scores(self, sums: torch.Tensor) -> dict[str, torch.Tensor]:
        masked, contrastive, diversity, penalty, perplexity, frames, samples, batches = sums
        weight = self.model.config.diversity_loss_weight
        penalty_weight = self.hparams.feature_penalty_weight
        return {
            "loss": (contrastive + weight * diversity + penalty_weight * penalty) / masked,
            "contrastive_loss": contrastive / masked,
            "diversity_loss": diversity / masked,
            "feature_penalty": penalty / masked,
            "codevector_perplexity": perplexity / batches,  # the mean of the device batches' perplexities
            "percent_masked": 100.0 * masked / frames,
            "num_samples": samples,
        }

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every file in the batch failed to decode
            return steps.empty_batch_loss(self)
        hp = self.hparams
        temperature = gumbel_temperature(
            self.global_step, hp.max_gumbel_temperature, hp.min_gumbel_temperature, hp.gumbel_temperature_decay
        )
        self.model.set_gumbel_temperature(temperature)
        outputs, penalty = self._forward(batch)
        sums = self._sums(batch, outputs, penalty)
        # fairseq's criterion: the penalty weighs as much as the masked frames of the batch (sample_size)
        objective = outputs.loss + hp.feature_penalty_weight * penalty * sums[0]
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")  # over all ranks
        # DDP averages gradients over ranks: scaling by the world size makes that a sum over all masked frames
        loss = objective * self.trainer.world_size / sums[0]
        scores = self._scores(sums)
        scores["gumbel_temperature"] = torch.tensor(temperature)
        del scores["num_samples"]
        for name, value in scores.items():
            self.log(
                f"train/{name}",
                value,
                prog_bar=name in {"loss", "codevector_perplexity"},
                batch_size=batch["num_samples"],
            )
        if self.global_step == 0 and batch_idx == 0:
            self._report("first training batch", scores)
        self._last_train = scores
        if batch["num_skipped"]:
            self.log("train/skipped_audio", float(batch["num_skipped"]), reduce_fx="sum")
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Warn once when the gradient norm before clipping is far from what the guide calls healthy (0.5 to 2);
        ``train/grad_norm`` is logged for every family by :class:`asrkit.faults.NonFiniteGuard`."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:  # DeepSpeed keeps gradients in its own partitions
            return
        norm = float(torch.nn.utils.get_total_norm(grads))
        low, high = HEALTHY_GRAD_NORM
        if not self._warned_grad_norm and not low / WARN_FACTOR <= norm <= high * WARN_FACTOR:
            log.warning(
                "gradient norm %.3g at step %d is far outside the healthy %.1f-%.1f: consider "
                "another optimizer.lr or batch size",
                norm,
                self.global_step,
                low,
                high,
            )
            self._warned_grad_norm = True

    def on_train_end(self) -> None:
        if self._last_train:
            self._report(f"last training batch (step {self.global_step})", self._last_train)

    def _report(self, when: str, scores: dict[str, torch.Tensor]) -> None:
        if self.trainer.is_global_zero:
            log.info(
                "%s: loss %.4f, contrastive %.4f, diversity %.4f, feature penalty %.4g, codevector "
                "perplexity %.1f, gumbel temperature %.3f, %.1f%% of frames masked",
                when,
                scores["loss"],
                scores["contrastive_loss"],
                scores["diversity_loss"],
                scores["feature_penalty"],
                scores["codevector_perplexity"],
                scores["gumbel_temperature"],
                scores["percent_masked"],
            )

    # evaluation: the same losses with the quantizer's hard choice (no Gumbel noise), no WER -------------
    def _eval_step(self, batch: dict[str, Any] | None) -> None:
        if batch is None:
            return
        sums = self._sums(batch, *self._forward(batch))
        self._eval_sums = sums if self._eval_sums is None else self._eval_sums + sums

    def _eval_epoch_end(self, stage: str, predictions: list[Any]) -> None:  # losses, no transcripts
        sums, self._eval_sums = self._eval_sums, None
        if sums is None:
            sums = torch.zeros(8, device=self.device)  # this rank had no batch; the others may have
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        if sums[-1] == 0:  # no batch on any rank
            return
        for name, value in self._scores(sums).items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "loss")  # already summed over ranks

    # export -----------------------------------------------------------------------------------
    def export(self, directory: str | Path) -> None:
        """``save_pretrained`` of the pre-training model and its feature extractor."""
        self.model.save_pretrained(directory)
        self.feature_extractor.save_pretrained(directory)
