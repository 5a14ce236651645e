"""Runtimes for exported models: CTranslate2 (:mod:`asrkit.backends.ct2`) and ONNX Runtime
(:mod:`asrkit.backends.onnx`), behind what :mod:`asrkit.evaluate` and :mod:`asrkit.transcribe` use of a
:class:`asrkit.recognizer.Recognizer` (``kind``, ``processor``, ``sampling_rate``, ``collator()``, calling it on a
batch, ``transcribe()``), so an exported folder is scored by the same data, normaliser and metrics as training.

:func:`exported_format` tells the folders apart by their files: CTranslate2 writes ``model.bin`` beside its own
``config.json``; an asrkit ONNX export has ``*.onnx`` graphs and the marker :data:`EXPORT_MARKER` saying which
graphs they are (every asrkit export has one: source, format, quantization, versions). The runtimes are
imported only when such a folder is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asrkit.backends.common import EXPORT_MARKER


def exported_format(checkpoint: str | Path) -> str | None:
    """``ct2`` or ``onnx`` for a folder of that kind, None for anything else (a PyTorch export, a hub id)."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        return None
    if (folder / "model.bin").is_file() and (folder / "config.json").is_file():
        return "ct2"
    if (folder / EXPORT_MARKER).is_file() and any(folder.glob("*.onnx")):
        return "onnx"
    if any(folder.glob("*.onnx")):
        raise ValueError(
            f"checkpoint={checkpoint}: ONNX graphs without {EXPORT_MARKER}, so asrkit cannot tell their inputs: "
            "export with python -m asrkit.export format=onnx"
        )
    return None


def load_exported(checkpoint: str, cfg: Any, collator_class: type, decoding: Any = None) -> Any:
    """The recogniser of an exported folder, with the decoding options of an evaluate/transcribe config;
    ``collator_class`` makes its batches (:class:`asrkit.recognizer.FeatureCollator`, as for PyTorch models)."""
    options = {
        "collator_class": collator_class,
        "device": cfg.device,
        "language": cfg.get("language"),
        "task": cfg.get("task", "transcribe"),
        "num_beams": cfg.get("num_beams"),
        "generation_max_length": cfg.get("generation_max_length"),
        "decoding": decoding,  # CTC: greedy or beam search (asrkit.ctc_decoding.DecodingOptions); None: greedy
    }
    if exported_format(checkpoint) == "ct2":
        from asrkit.backends.ct2 import CT2Recognizer

        return CT2Recognizer(checkpoint, **options)
    from asrkit.backends.onnx import OnnxRecognizer

    return OnnxRecognizer(checkpoint, **options)
