"""wav2vec2 pre-training batches: waveforms, span masks over their feature frames and negative indices.

As the transformers ``run_wav2vec2_pretraining_no_trainer.py`` recipe draws them (``_compute_mask_indices``,
``_sample_negative_indices``), over each utterance's real (unpadded) frames only.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

from asrkit.data.padding import batch_fields, pad_waveforms

log = logging.getLogger(__name__)


def random_window(audio: np.ndarray, samples: int | None) -> np.ndarray:
    """A random window of ``samples`` from longer audio (fairseq's ``crop_to_max_size``); None keeps all."""
    if samples is None or len(audio) <= samples:
        return audio
    start = np.random.randint(0, len(audio) - samples + 1)
    return audio[start : start + samples]


class Wav2Vec2PretrainCollator:
    """Waveforms (normalised per utterance with ``do_normalize``) of one length and, per batch, the span
    masks and negative indices of the loss.

    Masks and negatives are drawn only over each utterance's real (unpadded) feature frames. An
    utterance shorter than one mask span has nothing to predict: it is dropped from the batch and
    counted in ``num_skipped`` (raise ``data.min_duration_in_seconds`` to avoid it). Models with a
    GroupNorm front end (``feat_extract_norm: group``) take no attention mask, so padding would enter
    the GroupNorm statistics and the attention: their batches are cut to the shortest utterance, a
    random window of each (fairseq's pre-training batches); duration bucketing keeps the audio cut small.
    Layer-norm front ends are zero-padded and get an attention mask.
    """

    max_input_seconds = None  # any length (crop_seconds cuts long training audio to a random window)
    max_label_length = None  # no labels

    def __init__(
        self,
        feature_extractor: Wav2Vec2FeatureExtractor,
        model: Wav2Vec2ForPreTraining,
        mask_time_prob: float,
        mask_time_length: int,
        crop_seconds: float | None = None,
    ) -> None:
        if not 0.0 < mask_time_prob < 1.0 or mask_time_length < 1:
            raise ValueError(
                f"model.mask_time_prob={mask_time_prob} must be in (0, 1) and model.mask_time_length="
                f"{mask_time_length} at least 1"
            )
        self.feature_extractor = feature_extractor
        self.output_lengths = model._get_feat_extract_output_lengths  # samples -> feature frames
        self.num_negatives = model.config.num_negatives
        self.mask_time_prob = mask_time_prob
        self.mask_time_length = mask_time_length
        self.crop_samples = round(crop_seconds * self.sampling_rate) if crop_seconds else None
        self.crop_to_shortest = model.config.feat_extract_norm == "group"
        self._warned_short = False

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        """Pre-training has no labels: every text encodes to an empty label."""
        return [[] for _ in texts]

    def __call__(self, examples: list[dict[str, Any] | None]) -> dict[str, Any] | None:
        decoded = [
            example | {"audio": random_window(example["audio"], self.crop_samples)} for example in examples if example
        ]
        kept = [e for e in decoded if int(self.output_lengths(len(e["audio"]))) > self.mask_time_length]
        if len(kept) < len(decoded) and not self._warned_short:
            log.warning(
                "dropping utterances shorter than one mask span (%d feature frames); "
                "raise data.min_duration_in_seconds",
                self.mask_time_length,
            )
            self._warned_short = True
        if not kept:
            return None
        if self.crop_to_shortest:  # no padding: GroupNorm and attention see only real audio
            shortest = min(len(example["audio"]) for example in kept)
            kept = [example | {"audio": random_window(example["audio"], shortest)} for example in kept]
        batch = batch_fields(kept, len(examples) - len(kept), self.sampling_rate)
        batch |= pad_waveforms(  # the CTC collator's normalisation: what the exported processor does
            [example["audio"] for example in kept],
            normalize=self.feature_extractor.do_normalize,
            return_attention_mask=self.feature_extractor.return_attention_mask,  # layer-norm front ends
        )
        num_frames = int(self.output_lengths(batch["input_values"].shape[-1]))
        lengths = self.output_lengths(batch.pop("input_lengths"))
        frames = torch.arange(num_frames)[None, :] < lengths[:, None]  # real (unpadded) feature frames
        mask = _compute_mask_indices(  # min_masks=2: every row has two frames to contrast, however short
            (len(kept), num_frames),
            self.mask_time_prob,
            self.mask_time_length,
            attention_mask=frames.long(),
            min_masks=2,
        )
        negatives = _sample_negative_indices((len(kept), num_frames), self.num_negatives, mask)
        batch["mask_time_indices"] = torch.from_numpy(mask)
        batch["sampled_negative_indices"] = torch.from_numpy(negatives).long()
        batch["num_frames"] = int(frames.sum())
        return batch
