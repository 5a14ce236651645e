"""CTC pieces shared by training (:mod:`asrkit.models.wav2vec2_ctc`) and :mod:`asrkit.recognizer`.

Any CTC model of the wav2vec2 family (wav2vec2, XLS-R, HuBERT, WavLM, data2vec-audio, ...) takes raw waveforms
and gives one vector of logits per frame. :func:`ctc_loss` is the loss of transformers' ``*ForCTC`` models
computed in float32 whatever autocast is on; :func:`utterance_logits` gives each utterance the logits it gets
alone, whatever shares its batch, and :func:`greedy_transcribe` is the one greedy decoder of them;
:class:`Wav2Vec2CTCCollator` makes training batches (normalised waveforms, character labels), with the inputs
:func:`feature_extractor_for` says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PretrainedConfig, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

from asrkit.data.padding import batch_fields, pad_labels, pad_waveforms

log = logging.getLogger(__name__)


def ctc_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    frame_lengths: torch.Tensor,
    blank_id: int,
    reduction: str = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    """The CTC loss of ``logits`` (batch, frames, symbols) for ``labels`` padded with negative ids.

    As ``Wav2Vec2ForCTC`` computes it (label positions that are negative or the blank are left out;
    ``reduction`` mean divides each utterance's loss by its label length, then averages), but with autocast
    off: the log-softmax and the loss run in float32 even when the network ran in bf16/fp16.
    ``frame_lengths`` are the frames each utterance really has (not those computed from padding).
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (frames, batch, symbols)
        kept = (labels >= 0) & (labels != blank_id)
        return F.ctc_loss(
            log_probs,
            labels.masked_select(kept),
            frame_lengths.to(torch.long),
            kept.sum(-1),
            blank=blank_id,
            reduction=reduction,
            zero_infinity=zero_infinity,
        )


def batches_safely(config: Any, attention_mask: torch.Tensor | None) -> bool:
    """Whether one padded batch gives each utterance the logits it gets alone.

    It does when the model takes an attention mask and normalises its convolutional front end per frame
    (layer norm). A group-norm front end (wav2vec2-base, HuBERT-base, WavLM-base) normalises over the whole
    padded length, and a model fed no mask attends to the padding: those run on each utterance unpadded.
    """
    return attention_mask is not None and getattr(config, "feat_extract_norm", "layer") != "group"


@torch.no_grad()
def utterance_logits(
    model: Any, input_values: torch.Tensor, input_lengths: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Each utterance's logits (frames x symbols, on the model's device), cut to the frames it really has.

    ``input_values`` is a zero-padded batch of waveforms, ``input_lengths`` their lengths in samples. Frames
    computed from padding are cut off; models that a padded batch would change (:func:`batches_safely`) run
    on each group of utterances of one length, unpadded, so every utterance gets the logits it gets alone.
    What every CTC decoder starts from (:func:`greedy_transcribe`, :mod:`asrkit.ctc_decoding`).
    """
    lengths = [int(n) for n in input_lengths]
    frames = model._get_feat_extract_output_lengths(torch.as_tensor(lengths)).tolist()
    rows: list[Any] = [None] * len(lengths)
    if batches_safely(model.config, attention_mask):
        logits = model(input_values=input_values, attention_mask=attention_mask).logits
        return [row[:n] for row, n in zip(logits, frames, strict=True)]
    for length in sorted(set(lengths)):
        group = [i for i, n in enumerate(lengths) if n == length]
        logits = model(input_values=input_values[group, :length]).logits
        for i, row in zip(group, logits, strict=True):
            rows[i] = row[: frames[i]]
    return rows


@torch.no_grad()
def greedy_transcribe(
    model: Any,
    tokenizer: Any,
    input_values: torch.Tensor,
    input_lengths: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> list[str]:
    """Greedy CTC decoding (:func:`greedy_decode`) of each utterance's :func:`utterance_logits`, so that it decodes
    to the same text whatever shares its batch."""
    return greedy_decode(tokenizer, utterance_logits(model, input_values, input_lengths, attention_mask))


def greedy_decode(tokenizer: Any, logits: Sequence[Any]) -> list[str]:
    """The best symbol of each frame of each utterance's logits (tensors or arrays, frames x symbols), repeats
    merged, blanks dropped: the text ``tokenizer.batch_decode`` gives each utterance's best path, byte for byte.

    One argmax over every utterance's frames at once; the merge and the drop are array operations on the batch
    (symbols compared by their token, as the tokenizer groups them: ids it does not know are all its unknown
    token), so the tokenizer only spells the few symbols that are left of each utterance.
    """
    rows = [torch.as_tensor(row) for row in logits]
    if not rows:
        return []
    joined = torch.cat(rows)  # one argmax: a GPU's on its device; numpy's on a CPU (torch's threads cost more there)
    best = joined.float().numpy().argmax(-1) if joined.device.type == "cpu" else joined.argmax(-1).cpu().numpy()
    first: dict[str, int] = {}  # token -> the first id spelled so
    tokens = tokenizer.convert_ids_to_tokens(list(range(rows[0].shape[-1])))
    symbol = np.array([first.setdefault(token, i) for i, token in enumerate(tokens)])[best]
    utterance = np.repeat(np.arange(len(rows)), [len(row) for row in rows])
    starts = np.ones(len(best), dtype=bool)  # a symbol that is not its frame's predecessor's again
    starts[1:] = (symbol[1:] != symbol[:-1]) | (utterance[1:] != utterance[:-1])
    keep = starts & (symbol != first.get(tokenizer.pad_token, -1))  # the pad token is CTC's blank
    kept = np.split(best[keep], np.cumsum(np.bincount(utterance[keep], minlength=len(rows)))[:-1])
    return tokenizer.batch_decode([ids.tolist() for ids in kept], group_tokens=False)


class Wav2Vec2CTCCollator:
    """Normalised raw waveforms (:func:`pad_waveforms`) and character labels padded with :data:`IGNORE_INDEX`.

    The tokenizer is either given, or built from the training transcripts: ``train()`` hands them to the
    module's ``build_vocabulary`` before any text is encoded, and ``vocabulary`` (texts -> tokenizer,
    see :func:`asrkit.models.ctc_vocab.build_ctc_tokenizer`) makes the tokenizer.
    """

    max_input_seconds = None  # any length
    max_label_length = None  # CTC needs no more labels than frames; zero_infinity handles the rest
    supports_static_shapes = True  # audio_length, label_length: data.static_shapes pads to them

    def __init__(
        self,
        feature_extractor: Wav2Vec2FeatureExtractor,
        tokenizer: Wav2Vec2CTCTokenizer | None = None,
        vocabulary: Callable[[list[str]], Wav2Vec2CTCTokenizer] | None = None,
    ) -> None:
        if tokenizer is None and vocabulary is None:
            raise ValueError("Wav2Vec2CTCCollator needs a tokenizer or a vocabulary builder")
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.vocabulary = None if tokenizer is not None else vocabulary

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    def build_vocabulary(self, texts: list[str]) -> None:
        """Make the tokenizer from the prepared training transcripts (kept as it is when one was given)."""
        if self.vocabulary is None:
            return
        tokenizer = self.vocabulary(texts)
        if self.tokenizer is not None and tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise ValueError(
                "the training transcripts changed after the CTC vocabulary was built from them; "
                "build one datamodule per module"
            )
        self.tokenizer = tokenizer

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        """Character ids for each text (spaces become the word delimiter, unknown characters ``[UNK]``)."""
        if self.tokenizer is None:
            raise RuntimeError(
                "the CTC vocabulary is not built yet: call the module's build_vocabulary(training "
                "transcripts) first, or give model.tokenizer"
            )
        return self.tokenizer(texts).input_ids

    def __call__(
        self, examples: list[dict[str, Any] | None], audio_length: int | None = None, label_length: int | None = None
    ) -> dict[str, Any] | None:
        kept = [example for example in examples if example is not None]
        if not kept:
            return None
        batch = batch_fields(kept, len(examples) - len(kept), self.sampling_rate)
        batch |= pad_waveforms(
            [example["audio"] for example in kept],
            normalize=self.feature_extractor.do_normalize,
            return_attention_mask=self.feature_extractor.return_attention_mask,
            length=audio_length,
        )
        batch["labels"] = pad_labels(self.encode_text([example["text"] for example in kept]), label_length)
        return batch


def feature_extractor_for(name_or_path: str | None, config: PretrainedConfig) -> Wav2Vec2FeatureExtractor:
    """The checkpoint's own (its ``preprocessor_config.json``: HuBERT-base and WavLM take unnormalised audio),
    else what the wav2vec2 checkpoints ship: normalised audio, and an attention mask for models with a
    layer-norm front end (large-lv60, XLS-R) but none for group-norm ones (base): they take zero padding."""
    if name_or_path is not None:
        try:
            return Wav2Vec2FeatureExtractor.from_pretrained(name_or_path)
        except OSError:
            log.info("%s has no preprocessor_config.json: normalised audio, as the wav2vec2 checkpoints", name_or_path)
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16_000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=getattr(config, "feat_extract_norm", "layer") == "layer",
    )
