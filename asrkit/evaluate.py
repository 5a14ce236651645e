"""``python -m asrkit.evaluate checkpoint=... [data=...] [lang=...]``: error rates and speed of any model.

``checkpoint`` is a hub id (``openai/whisper-small``), a ``save_pretrained`` directory (an asrkit export), or
a Lightning checkpoint of an asrkit run (``.ckpt``): its LightningModule is rebuilt from the checkpoint's
hyper-parameters (the class named by the run's config) and exported to a temporary directory, so that one
path serves every kind. The model family comes from the export's config (``AutoConfig``): a speech
sequence-to-sequence model (Whisper) decodes with ``generate()``, a CTC model (wav2vec2 and kin) greedily.

The data is any ``conf/data`` option, read by the training datamodule (same splits, filters, streaming and
mixing) and scored by :func:`asrkit.metrics.error_rates`, as in training. The run directory receives
``metrics.json`` and ``predictions.jsonl`` (``id``: the utterance's index in the evaluated split,
``reference``, ``hypothesis``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForCTC, AutoModelForSpeechSeq2Seq, AutoProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES, MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

from asrkit import metrics
from asrkit.config import CONFIG_DIR, register_resolvers
from asrkit.data.batching import pad_waveforms, whisper_inputs
from asrkit.data.text import resolve_normalizer
from asrkit.models.ctc import greedy_transcribe
from asrkit.models.whisper import generate_texts, is_english_only

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RUN_CONFIGS = (".hydra/config.yaml", "tensorboard/hparams.yaml")  # where a run records model._target_


class FeatureCollator:
    """Decoded examples in, model inputs out (in DataLoader workers), plus what evaluation keeps.

    With ``waveforms`` (CTC models of the wav2vec2 family) the inputs are made as training makes them
    (:func:`asrkit.data.batching.pad_waveforms`): each waveform normalised over its own samples, then padded.
    """

    def __init__(self, feature_extractor: Any, max_input_seconds: float | None, waveforms: bool = False) -> None:
        self.feature_extractor = feature_extractor
        self.max_input_seconds = max_input_seconds  # Whisper's window: longer utterances go long-form
        self.waveforms = waveforms  # CTC: raw waveforms, each normalised alone (as in training)

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

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
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.dtype = DTYPES[dtype]
        self.model = model_class.from_pretrained(checkpoint, dtype=self.dtype).to(self.device).eval()
        if self.kind == "ctc" and self.model.main_input_name != "input_values":
            raise ValueError(
                f"checkpoint={checkpoint}: {type(self.model).__name__} does not take raw waveforms; asrkit "
                "evaluates the CTC models of the wav2vec2 family (wav2vec2, HuBERT, WavLM, ...)"
            )
        self.processor = AutoProcessor.from_pretrained(checkpoint)
        self.whisper = config.model_type == "whisper"
        # null: the checkpoint's own setting (an asrkit export carries the one its training evaluated with)
        self.generate_kwargs: dict[str, Any] = {"num_beams": num_beams} if num_beams else {}
        if generation_max_length:  # Whisper adds its prompt to max_length itself; the others count it in
            key = "max_length" if self.whisper else "max_new_tokens"
            self.generate_kwargs[key] = generation_max_length
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
        extractor = self.processor.feature_extractor
        return FeatureCollator(extractor, self.max_input_seconds, waveforms=self.kind == "ctc")

    @torch.no_grad()
    def __call__(self, inputs: dict[str, torch.Tensor], lengths: list[int]) -> list[str]:
        """Texts of a batch of model inputs; ``lengths`` are the audio lengths in samples, before padding."""
        if not inputs:
            return []
        inputs = self._to_device(inputs)
        if self.kind == "ctc":  # greedy, each utterance as it decodes alone, as in training
            return greedy_transcribe(
                self.model,
                self.processor.tokenizer,
                inputs["input_values"],
                torch.tensor(lengths),
                inputs.get("attention_mask"),
            )
        if self.whisper:  # short utterances in one call, longer ones by long-form decoding
            return generate_texts(self.model, self.processor.tokenizer, **inputs, **self.generate_kwargs)
        generated = self.model.generate(**inputs, **self.generate_kwargs)
        return self.processor.batch_decode(generated, skip_special_tokens=True)

    def _to_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Tensors (also in nested dicts) on the model's device, floating point ones in its dtype."""
        moved = {}
        for key, value in inputs.items():
            if isinstance(value, dict):
                value = self._to_device(value)
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


def load_recognizer(cfg: DictConfig, workdir: str | Path, dtype: str) -> Recognizer:
    """The Recognizer of ``cfg.checkpoint`` in ``dtype`` (a ``.ckpt`` is exported to ``workdir``)."""
    checkpoint = str(cfg.checkpoint)
    if checkpoint.endswith(".ckpt"):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint={checkpoint}: no such file (convert a DeepSpeed checkpoint folder to one file "
                "first: lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict)"
            )
        module_class = _module_class(path, cfg.get("module_class"))
        log.info("rebuilding %s from %s", module_class.__qualname__, path)
        module = module_class.load_from_checkpoint(str(path), map_location="cpu")
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
    )


def _left_out_line(left_out: dict[str, Any] | None) -> str:
    if left_out is None:
        return "left out     not counted while streaming (the log has each drop reason's count)"
    reasons = ", ".join(f"{reason}: {count}" for reason, count in left_out["reasons"].items())
    return f"left out     {left_out['utterances']} utterances, {left_out['hours']:.3f} h" + (
        f" ({reasons})" if reasons else ""
    )


def _report(scores: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"checkpoint   {scores['checkpoint']}",
            f"data         {scores['data']}, split {scores['split']}: {scores['num_samples']:.0f} utterances, "
            f"{scores['audio_seconds'] / 3600:.3f} h of audio ({scores['num_skipped']} unreadable, skipped)",
            _left_out_line(scores["left_out"]),
            f"WER raw         {scores['wer_raw']:.2f} %",
            f"WER normalised  {scores['wer']:.2f} % ({scores['normalizer']} normaliser)",
            f"CER normalised  {scores['cer']:.2f} %",
            f"speed           {scores['audio_seconds_per_second']:.2f} audio seconds per wall-clock second "
            f"(real-time factor, wall / audio: {scores['real_time_factor']:.4f})",
        ]
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Transcribe one split, print and return the scores; write metrics.json and predictions.jsonl."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.split:
        raise ValueError("split=null: name the split of the data config to evaluate (e.g. split=test)")
    with tempfile.TemporaryDirectory(prefix="asrkit-export-") as workdir:
        recognizer = load_recognizer(cfg, workdir, cfg.evaluation.dtype)
    datamodule = instantiate(cfg.data, collator=recognizer.collator(), test_split=cfg.split)
    datamodule.setup("test")

    predictions: list[tuple[int, str, str]] = []
    audio_seconds, skipped = 0.0, 0
    start = time.perf_counter()
    for batch in datamodule.test_dataloader():
        hypotheses = recognizer(batch["inputs"], batch["lengths"])
        predictions += zip(batch["indices"], batch["references"], hypotheses, strict=True)
        audio_seconds += batch["audio_seconds"]
        skipped += batch["num_skipped"]
    wall_seconds = time.perf_counter() - start
    if not predictions:
        raise ValueError(f"split {cfg.split} of data.path={cfg.data.path}: no utterance was transcribed")
    predictions.sort()

    data_name = f"{cfg.data.path}" + (f" ({cfg.data.name})" if cfg.data.get("name") else "")
    scores: dict[str, Any] = {"checkpoint": str(cfg.checkpoint), "data": data_name, "split": str(cfg.split)}
    normalizer = resolve_normalizer(cfg.evaluation.normalizer, cfg.evaluation.language)
    scores |= {"normalizer": normalizer, "dtype": str(cfg.evaluation.dtype)}
    unknown = recognizer.processor.tokenizer.unk_token if recognizer.kind == "ctc" else None
    references, hypotheses = [p[1] for p in predictions], [p[2] for p in predictions]
    scores |= metrics.error_rates(references, hypotheses, normalizer, unknown)
    left_out = datamodule.excluded.get("test")  # None when streaming: the stream logs its drop counts
    scores |= {
        "left_out": left_out,  # what the data config's drop rule kept out (eval filters, empty transcripts)
        "num_skipped": skipped,
        "audio_seconds": audio_seconds,
        "wall_seconds": wall_seconds,  # reading, decoding, features and the model, not loading them
        "audio_seconds_per_second": audio_seconds / wall_seconds,
        "real_time_factor": wall_seconds / audio_seconds,
    }
    metrics.write_predictions(out / "predictions.jsonl", predictions)
    (out / "metrics.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(_report(scores) + f"\npredictions  {out / 'predictions.jsonl'}")
    return scores


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


def cli() -> None:
    register_resolvers()
    main()


if __name__ == "__main__":
    cli()
