"""The inference engine of :mod:`asrkit.evaluate`, :mod:`asrkit.transcribe` and :mod:`asrkit.demo`: load a model,
batch audio, decode.

``checkpoint`` is a hub id (``openai/whisper-small``), a ``save_pretrained`` directory (an asrkit export), or a
Lightning checkpoint of an asrkit run (``.ckpt``): its LightningModule is rebuilt from the checkpoint's
hyper-parameters (the class named by the run's config; a QLoRA run's with its adapters on full-precision weights)
and exported to a temporary directory, so that one path serves every kind. The model family comes from the
export's config (``AutoConfig``): a speech sequence-to-sequence model (Whisper) decodes with ``generate()``
(long-form past its window, as training's evaluation does:
:func:`asrkit.models.whisper_generation.generate_texts`), a CTC model (wav2vec2 and kin) greedily with the
decoder training uses (:func:`asrkit.longform.decode_ctc`), or, with ``decoder=beam``, by beam search over its
logits (:mod:`asrkit.ctc_decoding`: hotwords, a KenLM n-gram); an utterance longer than ``chunk_length_s`` is
heard window by window (:func:`asrkit.longform.ctc_logits`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForCTC, AutoModelForSpeechSeq2Seq, AutoProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES, MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

from asrkit.adapters import AdapterOptions
from asrkit.backends import exported_format, load_exported
from asrkit.backends.common import transcribe_waveforms
from asrkit.ctc_decoding import CTCDecoder, DecodingOptions
from asrkit.data.padding import pad_waveforms
from asrkit.longform import ctc_logits, decode_ctc
from asrkit.models.steps import DTYPES
from asrkit.models.whisper_collator import whisper_inputs
from asrkit.models.whisper_generation import generate_texts, is_english_only

log = logging.getLogger(__name__)

RUN_CONFIGS = (".hydra/config.yaml", "tensorboard/hparams.yaml")  # where a run records model._target_


class FeatureCollator:
    """Decoded examples in, model inputs out (in DataLoader workers), plus what evaluation keeps.

    With ``waveforms`` (CTC models of the wav2vec2 family) the inputs are made as training makes them
    (:func:`asrkit.data.padding.pad_waveforms`): each waveform normalised over its own samples, then padded.
    """

    max_label_length = None  # evaluation keeps every label

    def __init__(
        self, feature_extractor: Any, tokenizer: Any, max_input_seconds: float | None, waveforms: bool = False
    ) -> None:
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.max_input_seconds = max_input_seconds  # Whisper's window: longer utterances go long-form
        self.waveforms = waveforms  # CTC: raw waveforms, each normalised alone (as in training)

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text under the model's tokenizer."""
        return self.tokenizer(texts).input_ids

    def __call__(self, examples: list[dict[str, Any] | None]) -> dict[str, Any]:
        kept = [example for example in examples if example is not None]
        batch: dict[str, Any] = {
            "indices": [example["index"] for example in kept],
            "references": [example["reference"] for example in kept],
            "audio_seconds": sum(len(example["audio"]) for example in kept) / self.sampling_rate,
            "num_skipped": len(examples) - len(kept),
            "lengths": [len(example["audio"]) for example in kept],  # samples, before padding
            "inputs": {},
        }
        if kept and self.max_input_seconds:  # Whisper: its fixed window, and longer utterances whole
            batch["inputs"] = whisper_inputs(self.feature_extractor, [example["audio"] for example in kept])
        elif kept and self.waveforms:
            padded = pad_waveforms(
                [example["audio"] for example in kept],
                normalize=self.feature_extractor.do_normalize,
                return_attention_mask=self.feature_extractor.return_attention_mask,
            )
            batch["inputs"] = {k: padded[k] for k in ("input_values", "attention_mask") if k in padded}
        elif kept:  # the others pad to the longest in the batch
            features = self.feature_extractor(
                [example["audio"] for example in kept],
                sampling_rate=self.sampling_rate,
                return_tensors="pt",
                padding=True,
            )
            batch["inputs"] = dict(features)
        return batch


class Recognizer:
    """A speech recogniser from a hub id or a ``save_pretrained`` directory: model inputs in, texts out."""

    def __init__(
        self,
        checkpoint: str,
        device: str = "auto",
        dtype: str = "float32",
        language: str | None = None,
        task: str = "transcribe",
        num_beams: int | None = 1,
        generation_max_length: int | None = 225,
        chunk_length_s: float | None = None,
        stride_length_s: float = 0.0,
        decoding: DecodingOptions | None = None,
        cache_implementation: str | None = None,
    ) -> None:
        if Path(checkpoint).is_dir() and not (Path(checkpoint) / "config.json").is_file():
            raise FileNotFoundError(
                f"checkpoint={checkpoint} has no config.json: give an export (<run dir>/export), a hub id "
                "or a Lightning .ckpt file"
            )
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype}: one of {', '.join(DTYPES)}")
        config = AutoConfig.from_pretrained(checkpoint)
        heads = " ".join(config.architectures or [])
        if "ForCTC" in heads or (not heads and config.model_type in MODEL_FOR_CTC_MAPPING_NAMES):
            self.kind, model_class = "ctc", AutoModelForCTC
        elif config.model_type in MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES and (
            not heads or "ForConditionalGeneration" in heads or "SpeechEncoderDecoder" in heads
        ):
            self.kind, model_class = "seq2seq", AutoModelForSpeechSeq2Seq
        else:
            raise ValueError(
                f"checkpoint={checkpoint}: {config.model_type} ({heads or 'no architecture'}) has no speech "
                "recognition head (CTC or sequence-to-sequence): fine-tune a pre-trained wav2vec2 first"
            )
        if decoding is not None:
            decoding.check_model(self.kind, checkpoint)
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.dtype = DTYPES[dtype]
        self.chunk_length_s, self.stride_length_s = chunk_length_s, stride_length_s  # CTC: window, its context
        self.model = model_class.from_pretrained(checkpoint, dtype=self.dtype).to(self.device).eval()
        if self.kind == "ctc" and self.model.main_input_name != "input_values":
            raise ValueError(
                f"checkpoint={checkpoint}: {type(self.model).__name__} does not take raw waveforms; asrkit "
                "evaluates the CTC models of the wav2vec2 family (wav2vec2, HuBERT, WavLM, ...)"
            )
        self.processor = AutoProcessor.from_pretrained(checkpoint)
        self.ctc_decoder = None  # decoder=beam: pyctcdecode over each utterance's logits; None: greedy
        if decoding is not None and decoding.decoder == "beam":
            self.ctc_decoder = CTCDecoder(self.processor.tokenizer, self.model.config.vocab_size, decoding, checkpoint)
        self.whisper = config.model_type == "whisper"
        # null: the checkpoint's own setting (an asrkit export carries the one its training evaluated with)
        self.generate_kwargs: dict[str, Any] = {"num_beams": num_beams} if num_beams else {}
        if generation_max_length:  # Whisper adds its prompt to max_length itself; the others count it in
            key = "max_length" if self.whisper else "max_new_tokens"
            self.generate_kwargs[key] = generation_max_length
        if cache_implementation and self.kind == "seq2seq":  # generate()'s key-value cache: static, ...
            self.generate_kwargs["cache_implementation"] = cache_implementation
        if self.whisper and is_english_only(self.model):  # no language or task prompt
            if language not in (None, "en") or task != "transcribe":
                raise ValueError(
                    f"language={language}, task={task}: {checkpoint} is an English-only Whisper: "
                    "set lang=en (or language=null) and task=transcribe"
                )
        elif self.whisper:
            self.generate_kwargs["task"] = task
            if language:
                self.generate_kwargs["language"] = language
        log.info("checkpoint %s: %s (%s) on %s, %s", checkpoint, config.model_type, self.kind, self.device, dtype)

    @property
    def max_input_seconds(self) -> float | None:
        """Whisper's input window (longer audio is decoded long-form); CTC models take any length."""
        return float(self.processor.feature_extractor.chunk_length) if self.whisper else None

    def collator(self) -> FeatureCollator:
        extractor, tokenizer = self.processor.feature_extractor, self.processor.tokenizer
        return FeatureCollator(extractor, tokenizer, self.max_input_seconds, waveforms=self.kind == "ctc")

    @property
    def sampling_rate(self) -> int:
        """The rate, in Hz, the model hears audio at (what :func:`asrkit.data.audio.decode_audio` resamples to)."""
        return self.processor.feature_extractor.sampling_rate

    def transcribe(self, waveforms: list[np.ndarray], batch_size: int) -> list[str]:
        """The text of each mono float32 waveform at :attr:`sampling_rate`, ``batch_size`` per forward pass:
        what :mod:`asrkit.transcribe` prints for a file and :mod:`asrkit.demo` shows for a recording."""
        return transcribe_waveforms(self, waveforms, batch_size)

    @torch.no_grad()
    def __call__(self, inputs: dict[str, torch.Tensor], lengths: list[int]) -> list[str]:
        """Texts of a batch of model inputs; ``lengths`` are the audio lengths in samples, before padding."""
        if not inputs:
            return []
        inputs = self.to_device(inputs)
        if self.kind == "ctc":  # each utterance's logits as it gets them alone (window by window past chunk_length_s)
            return decode_ctc(self.processor.tokenizer, self.ctc_logits(inputs, lengths), self.ctc_decoder)
        if self.whisper:  # short utterances in one call, longer ones by long-form decoding
            return generate_texts(self.model, self.processor.tokenizer, **inputs, **self.generate_kwargs)
        generated = self.model.generate(**inputs, **self.generate_kwargs)
        return self.processor.batch_decode(generated, skip_special_tokens=True)

    @property
    def seconds_per_frame(self) -> float:
        """CTC: seconds of audio per output frame (the front end's strides over the sampling rate)."""
        return self.model.config.inputs_to_logits_ratio / self.sampling_rate

    def ctc_logits(self, inputs: dict[str, torch.Tensor], lengths: list[int]) -> list[torch.Tensor]:
        """Each utterance's CTC logits (frames, symbols), longer ones stitched from ``chunk_length_s`` windows."""
        inputs = self.to_device(inputs)
        return ctc_logits(
            self.model,
            inputs["input_values"],
            lengths,
            inputs.get("attention_mask"),
            self.chunk_length_s,
            self.stride_length_s,
            self.sampling_rate,
        )

    def to_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Tensors (also in nested dicts) on the model's device, floating point ones in its dtype."""
        moved = {}
        for key, value in inputs.items():
            if isinstance(value, dict):
                value = self.to_device(value)
            elif isinstance(value, torch.Tensor):
                value = value.to(self.device, self.dtype if value.is_floating_point() else value.dtype)
            moved[key] = value
        return moved


def _module_class(ckpt: Path, module_class: str | None) -> type:
    if module_class:
        return get_class(module_class)
    run = ckpt.resolve().parent.parent  # <run>/checkpoints/<name>.ckpt
    for name in RUN_CONFIGS:
        if (run / name).is_file():
            target = OmegaConf.select(OmegaConf.load(run / name), "model._target_")
            if target:
                return get_class(target)
    raise ValueError(
        f"checkpoint={ckpt}: its run directory {run} has no {' or '.join(RUN_CONFIGS)} naming the module: "
        "set module_class (e.g. asrkit.models.whisper.WhisperModule)"
    )


def _full_precision(ckpt: Path) -> dict[str, Any]:
    """``load_from_checkpoint`` arguments that rebuild a QLoRA run's module with the same adapters on
    full-precision weights (peft=lora): what its export merges into, and what loads without a CUDA GPU."""
    hparams = torch.load(ckpt, map_location="cpu", mmap=True, weights_only=False).get("hyper_parameters") or {}
    options = AdapterOptions.parse(hparams.get("peft"))
    return {"peft": options.unquantized()} if options.quantized else {}


def load_recognizer(cfg: DictConfig, workdir: str | Path, dtype: str) -> Any:
    """The Recognizer of ``cfg.checkpoint`` in ``dtype`` (a ``.ckpt`` is exported to ``workdir``); a CTranslate2
    or ONNX export gets its runtime's recogniser (:mod:`asrkit.backends`), in the dtype it was exported in."""
    checkpoint = str(cfg.checkpoint)
    decoding = DecodingOptions.from_config(cfg) if "decoder" in cfg else None  # evaluate and transcribe have one
    if exported_format(checkpoint):
        return load_exported(checkpoint, cfg, FeatureCollator, decoding)
    if checkpoint.endswith(".ckpt"):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint={checkpoint}: no such file (convert a DeepSpeed checkpoint folder to one file "
                "first: lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict)"
            )
        module_class = _module_class(path, cfg.get("module_class"))
        log.info("rebuilding %s from %s", module_class.__qualname__, path)
        module = module_class.load_from_checkpoint(str(path), map_location="cpu", **_full_precision(path))
        module.export(workdir)
        checkpoint = str(workdir)
    return Recognizer(
        checkpoint,
        device=cfg.device,
        dtype=dtype,
        language=cfg.language,
        task=cfg.task,
        num_beams=cfg.num_beams,
        generation_max_length=cfg.generation_max_length,
        chunk_length_s=cfg.chunk_length_s,
        stride_length_s=cfg.stride_length_s,
        decoding=decoding,
        cache_implementation=cfg.get("cache_implementation"),  # evaluate's; the others take generate()'s default
    )
