"""ONNX exports run by onnxruntime: the graphs of :mod:`asrkit.backends.onnx_graphs` with asrkit's decoding.

CTC: the logits of ``model.onnx``, decoded greedily with the export's tokenizer as
:func:`asrkit.models.ctc.greedy_transcribe` decodes (one padded batch when the model takes an attention mask and
has a layer-norm front end, else each group of utterances of one length unpadded; frames from padding cut off).
Whisper: the encoder once per batch, then the decoder step by step with its key/value cache, greedy, with the
prompt, suppression lists, length and end of :class:`asrkit.backends.common.WhisperDecoding`, as transformers'
``generate`` (a row that said ``<|endoftext|>`` is done; the batch stops when all are). Without a language the
decoder is first run on ``<|startoftranscript|>`` alone and the likeliest language token chosen, as transformers'
``detect_language`` does. Beam search and audio past the window are refused (one line each).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from asrkit.backends.common import (
    WhisperDecoding,
    ctc_decoder,
    exported_settings,
    load_processor,
    make_collator,
    refuse_long_form,
    same_length_groups,
    transcribe_waveforms,
)
from asrkit.extras import require
from asrkit.longform import decode_ctc

log = logging.getLogger(__name__)


def frames_of(config: dict[str, Any], samples: int) -> int:
    """Frames the wav2vec2 convolutional front end makes of ``samples`` (``_get_feat_extract_output_lengths``)."""
    for kernel, stride in zip(config["conv_kernel"], config["conv_stride"], strict=True):
        samples = (samples - kernel) // stride + 1
    return samples


class OnnxRecognizer:
    """An ONNX export: model inputs from asrkit's collator in, texts out (see the module docstring)."""

    def __init__(
        self,
        folder: str,
        collator_class: type,
        device: str = "auto",
        language: str | None = None,
        task: str | None = "transcribe",
        num_beams: int | None = None,
        generation_max_length: int | None = None,
        decoding: Any = None,
    ) -> None:
        require("onnxruntime", f"checkpoint={folder} (an ONNX export)")
        import onnxruntime

        self.folder, self.collator_class = folder, collator_class
        settings = exported_settings(folder)
        self.config = json.loads((Path(folder) / "config.json").read_text())
        self.whisper = self.config.get("model_type") == "whisper"
        self.kind = "seq2seq" if self.whisper else "ctc"
        available = onnxruntime.get_available_providers()
        cuda = device.startswith("cuda") or (device == "auto" and "CUDAExecutionProvider" in available)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        self.sessions = {
            Path(name).stem: onnxruntime.InferenceSession(str(Path(folder) / name), providers=providers)
            for name in settings["graphs"]
        }
        self.processor = load_processor(folder)
        if self.whisper:
            positions = self.config["max_target_positions"]
            self.decoding = WhisperDecoding.read(folder, positions, language, task, num_beams, generation_max_length)
            if self.decoding.num_beams != 1:
                raise ValueError(f"num_beams={self.decoding.num_beams}: ONNX Whisper exports decode greedily (1)")
        else:
            self.inputs = {graph_input.name for graph_input in self.sessions["model"].get_inputs()}
        vocab_size = int(self.config.get("vocab_size") or 0)
        self.ctc_decoder = ctc_decoder(decoding, self.kind, self.processor.tokenizer, vocab_size, folder)
        log.info("checkpoint %s: ONNX %s on %s", folder, self.kind, providers[0])

    @property
    def sampling_rate(self) -> int:
        return self.processor.feature_extractor.sampling_rate

    def collator(self) -> Any:
        return make_collator(self.collator_class, self.processor, self.whisper)

    def transcribe(self, waveforms: list[np.ndarray], batch_size: int) -> list[str]:
        return transcribe_waveforms(self, waveforms, batch_size)

    def __call__(self, inputs: dict[str, Any], lengths: list[int]) -> list[str]:
        """Texts of a batch of model inputs; ``lengths`` are the audio lengths in samples, before padding."""
        if not inputs:
            return []
        if not self.whisper:
            return decode_ctc(self.processor.tokenizer, self.ctc_logits(inputs, lengths), self.ctc_decoder)
        refuse_long_form(inputs, self.folder)
        tokens = self._greedy(inputs["input_features"].numpy().astype(np.float32))
        return self.processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)

    @property
    def seconds_per_frame(self) -> float:
        """CTC: seconds of audio per output frame (the front end's strides over the sampling rate)."""
        return float(np.prod(self.config["conv_stride"])) / self.sampling_rate

    def ctc_logits(self, inputs: dict[str, Any], lengths: list[int]) -> list[np.ndarray]:
        """Each utterance's logits (frames x symbols), cut to its frames, as it gets them alone."""
        session, waveforms = self.sessions["model"], inputs["input_values"].numpy().astype(np.float32)
        mask = inputs.get("attention_mask")
        frames = [frames_of(self.config, n) for n in lengths]
        if "attention_mask" in self.inputs and mask is not None and self.config.get("feat_extract_norm") != "group":
            logits = session.run(None, {"input_values": waveforms, "attention_mask": mask.numpy().astype(np.int64)})
            return [row[:n] for row, n in zip(logits[0], frames, strict=True)]
        rows: list[Any] = [None] * len(lengths)
        for group in same_length_groups(lengths):
            feed = {"input_values": waveforms[group, : lengths[group[0]]]}
            if "attention_mask" in self.inputs:
                feed["attention_mask"] = np.ones(feed["input_values"].shape, dtype=np.int64)
            for i, row in zip(group, session.run(None, feed)[0], strict=True):
                rows[i] = row[: frames[i]]
        return rows

    def _step(self, ids: np.ndarray, cache: tuple[np.ndarray, np.ndarray], cross: list[np.ndarray]) -> list[Any]:
        feed = {"input_ids": ids, "past_keys": cache[0], "past_values": cache[1]}
        return self.sessions["decoder"].run(None, feed | {"cross_keys": cross[0], "cross_values": cross[1]})

    def _greedy(self, features: np.ndarray) -> list[list[int]]:
        decoding, batch = self.decoding, len(features)
        cross = self.sessions["encoder"].run(None, {"input_features": features})
        layers, _, heads, _, size = cross[0].shape
        empty = np.zeros((layers, batch, heads, 0, size), dtype=np.float32)
        languages: list[int | None] = [None] * batch
        if decoding.detect_language:  # the likeliest language token after <|startoftranscript|>
            start = np.full((batch, 1), decoding.prompt[0], dtype=np.int64)
            logits = self._step(start, (empty, empty), cross)[0]
            choices = np.array(decoding.language_ids)
            languages = [int(choices[i]) for i in logits[:, choices].argmax(-1)]
        ids = np.array([decoding.prompt_with(language) for language in languages], dtype=np.int64)
        logits, *cache = self._step(ids, (empty, empty), cross)
        tokens: list[list[int]] = [[] for _ in range(batch)]
        done = np.zeros(batch, dtype=bool)
        for step in range(decoding.max_new_tokens):
            logits[:, list(decoding.suppress)] = -np.inf
            if step == 0:
                logits[:, list(decoding.begin_suppress)] = -np.inf
            best = logits.argmax(-1)
            for row in np.flatnonzero(~done):
                tokens[row].append(int(best[row]))
            done |= best == decoding.eos
            if done.all() or step == decoding.max_new_tokens - 1:
                break
            logits, *cache = self._step(best[:, None].astype(np.int64), (cache[0], cache[1]), cross)
        return tokens
