"""``python -m asrkit.export checkpoint=... format=ct2|onnx [quantization=...] [output=...]``: a model for serving.

``checkpoint`` is what :mod:`asrkit.evaluate` takes (hub id, export folder, or an asrkit run's ``.ckpt``, which
is first exported to PyTorch as :func:`asrkit.recognizer.load_recognizer` does). ``format=ct2`` converts with
CTranslate2's ``TransformersConverter`` (:mod:`asrkit.backends.ct2`), ``format=onnx`` traces ONNX graphs with
torch's exporter (:mod:`asrkit.backends.onnx_graphs`). The folder (``<run dir>/<format>[-<quantization>]`` or
``output``) also gets the processor files, the marker ``asrkit_export.json`` (what it is, from what, with which
versions) and a card (README.md). Then, unless ``parity=false``, the exported model and the PyTorch model are
both scored by :func:`asrkit.evaluate.evaluate` on ``split`` of ``data``, and the comparison (WER/CER of each, the
WER delta, the share of identical transcripts, the speed ratio) goes into ``parity.json`` and the card.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from asrkit.backends import exported_format
from asrkit.backends.common import EXPORT_MARKER
from asrkit.config import CONFIG_DIR, register_resolvers
from asrkit.evaluate import evaluate
from asrkit.export_card import write_export_card
from asrkit.recognizer import load_recognizer

log = logging.getLogger(__name__)

FORMATS = ("ct2", "onnx")
ONNX_QUANTIZATIONS = ("int8",)  # onnxruntime's dynamic quantization
PACKAGES = {"ct2": ("ctranslate2",), "onnx": ("onnx", "onnxscript", "onnxruntime")}


def check_request(fmt: str, quantization: str | None) -> None:
    """One-line refusals of a format or quantization asrkit cannot export, before anything is loaded."""
    from asrkit.backends.ct2 import QUANTIZATIONS as CT2_QUANTIZATIONS

    if fmt not in FORMATS:
        raise ValueError(f"format={fmt}: one of {' | '.join(FORMATS)}")
    allowed = CT2_QUANTIZATIONS if fmt == "ct2" else ONNX_QUANTIZATIONS
    if quantization is not None and quantization not in allowed:
        raise ValueError(f"quantization={quantization}: format={fmt} takes null | {' | '.join(allowed)}")


def _versions(fmt: str) -> dict[str, str]:
    names = ("asrkit", "torch", "transformers", *PACKAGES[fmt])
    return {name: metadata.version(name) for name in names}


def _convert(recognizer: Any, source: str, output: Path, fmt: str, quantization: str | None) -> list[str]:
    """Write the converted model into ``output``; the graph files (ONNX) or model files (CTranslate2)."""
    model = recognizer.model
    if recognizer.kind == "seq2seq" and not recognizer.whisper:
        raise ValueError(
            f"format={fmt}: {model.config.model_type} is not Whisper; asrkit exports Whisper and the CTC models "
            "of the wav2vec2 family"
        )
    if fmt == "ct2":
        from asrkit.backends.ct2 import convert

        convert(model, source, output, quantization)
        return ["model.bin"]
    from asrkit.backends import onnx_graphs

    output.mkdir(parents=True, exist_ok=True)
    if recognizer.whisper:
        graphs = onnx_graphs.export_whisper(model, output)
    else:
        takes_mask = bool(recognizer.processor.feature_extractor.return_attention_mask)
        graphs = onnx_graphs.export_ctc(model, output, takes_mask)
    if quantization == "int8":
        onnx_graphs.quantize_int8(output, graphs)
    model.config.save_pretrained(output)  # config.json: the family and sizes decoding reads
    return graphs


def _save_processor_files(recognizer: Any, output: Path) -> None:
    """Feature extractor, tokenizer and (Whisper) generation config of the source, beside the converted model.
    ``preprocessor_config.json`` is written for Whisper too: faster-whisper reads its window and mel bins there
    (transformers 5 nests them in processor_config.json)."""
    recognizer.processor.save_pretrained(output)
    if recognizer.whisper:
        recognizer.processor.feature_extractor.to_json_file(output / "preprocessor_config.json")
        recognizer.model.generation_config.save_pretrained(output)


def _predictions(folder: Path) -> dict[int, str]:
    lines = (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["id"]: row["hypothesis"] for row in map(json.loads, lines)}


def compare(cfg: DictConfig, output: Path, run_dir: Path) -> dict[str, Any]:
    """Score the PyTorch model and the export with :func:`asrkit.evaluate.evaluate` on the same split."""
    scores, hypotheses = {}, {}
    for name, checkpoint in (("pytorch", str(cfg.checkpoint)), ("exported", str(output))):
        job = copy.deepcopy(cfg)
        with open_dict(job):
            job.checkpoint = checkpoint
            job.paths.output_dir = str(run_dir / "parity" / name)
        scores[name] = evaluate(job)
        hypotheses[name] = _predictions(run_dir / "parity" / name)
    pytorch, exported = scores["pytorch"], scores["exported"]
    same = sum(hypotheses["exported"].get(i) == text for i, text in hypotheses["pytorch"].items())
    return {
        "data": pytorch["data"],
        "split": pytorch["split"],
        "utterances": len(hypotheses["pytorch"]),
        "normalizer": pytorch["normalizer"],
        "pytorch": {key: pytorch[key] for key in ("wer", "cer", "wer_raw", "audio_seconds_per_second")},
        "exported": {key: exported[key] for key in ("wer", "cer", "wer_raw", "audio_seconds_per_second")},
        "wer_delta": exported["wer"] - pytorch["wer"],  # percentage points, exported minus PyTorch
        "identical_transcripts": same / len(hypotheses["pytorch"]),
        "speed_ratio": exported["audio_seconds_per_second"] / pytorch["audio_seconds_per_second"],
    }


def export(cfg: DictConfig) -> Path:
    """Convert ``cfg.checkpoint`` to ``cfg.format``; write marker and card, and the parity scores unless off."""
    fmt, quantization = str(cfg.format), cfg.quantization
    check_request(fmt, quantization)
    already = exported_format(str(cfg.checkpoint))
    if already:
        raise ValueError(f"checkpoint={cfg.checkpoint} is a {already} export: give the PyTorch export, hub id or .ckpt")
    run_dir = Path(cfg.paths.output_dir)
    output = Path(cfg.output) if cfg.output else run_dir / (fmt + (f"-{quantization}" if quantization else ""))
    with tempfile.TemporaryDirectory(prefix="asrkit-export-") as workdir:
        recognizer = load_recognizer(cfg, workdir, "float32")
        source = workdir if str(cfg.checkpoint).endswith(".ckpt") else str(cfg.checkpoint)
        files = _convert(recognizer, source, output, fmt, quantization)
        _save_processor_files(recognizer, output)
    marker = {
        "format": fmt,
        "quantization": quantization,
        "family": recognizer.kind,
        "model_type": recognizer.model.config.model_type,
        "source": str(cfg.checkpoint),
        "graphs" if fmt == "onnx" else "files": files,
        "max_target_positions": getattr(recognizer.model.config, "max_target_positions", None),
        "vocab_size": recognizer.model.config.vocab_size,  # a CTC head's width (a CT2 folder's config is CT2's)
        "versions": _versions(fmt),
    }
    (output / EXPORT_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    del recognizer
    parity = compare(cfg, output, run_dir) if cfg.parity else None
    if parity:
        (output / "parity.json").write_text(json.dumps(parity, indent=2) + "\n")
    write_export_card(output, marker, parity)
    log.info("exported %s to %s", cfg.checkpoint, output)
    print(f"export       {output}" + (f"\nparity       {output / 'parity.json'}" if parity else ""))
    return output


@hydra.main(config_path=CONFIG_DIR, config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    export(cfg)


def cli() -> None:
    register_resolvers()
    main()


if __name__ == "__main__":
    cli()
