"""The card (README.md) of a CTranslate2 or ONNX export: what it is, from what, with which versions, how to run
it, and how its transcripts compare with the PyTorch model's on the same data (``parity.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RUNTIMES = {"ct2": "CTranslate2", "onnx": "ONNX Runtime"}
LIBRARIES = {"ct2": "ctranslate2", "onnx": "onnx"}


def _parity_lines(parity: dict[str, Any] | None) -> list[str]:
    if parity is None:
        return ["", "## Parity", "Not measured (exported with `parity=false`)."]
    pytorch, exported = parity["pytorch"], parity["exported"]
    return [
        "",
        "## Parity with the PyTorch model",
        f"Both scored by `asrkit.evaluate` on `{parity['data']}`, split `{parity['split']}` "
        f"({parity['utterances']} utterances; WER and CER with the {parity['normalizer']} normaliser).",
        "",
        "| model | WER % | CER % | raw WER % | audio seconds per second |",
        "|---|---|---|---|---|",
        f"| PyTorch | {pytorch['wer']:.2f} | {pytorch['cer']:.2f} | {pytorch['wer_raw']:.2f} | "
        f"{pytorch['audio_seconds_per_second']:.1f} |",
        f"| this export | {exported['wer']:.2f} | {exported['cer']:.2f} | {exported['wer_raw']:.2f} | "
        f"{exported['audio_seconds_per_second']:.1f} |",
        "",
        f"- WER delta (export - PyTorch): {parity['wer_delta']:+.2f} points",
        f"- identical transcripts: {100 * parity['identical_transcripts']:.1f} %",
        f"- speed ratio (export / PyTorch, audio seconds per second): {parity['speed_ratio']:.2f}x",
    ]


def write_export_card(folder: Path, marker: dict[str, Any], parity: dict[str, Any] | None) -> Path:
    """README.md of the export folder, with YAML front matter the Hub reads (library, tags)."""
    fmt, quantization = marker["format"], marker["quantization"]
    front = {
        "library_name": LIBRARIES[fmt],
        "pipeline_tag": "automatic-speech-recognition",
        "tags": ["asrkit", marker["model_type"], LIBRARIES[fmt]] + ([quantization] if quantization else []),
    }
    versions = ", ".join(f"{name} {version}" for name, version in marker["versions"].items())
    files = ", ".join(f"`{name}`" for name in marker.get("graphs") or marker.get("files") or [])
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        f"# {marker['model_type']} for {RUNTIMES[fmt]}",
        "",
        f"- Source checkpoint: `{marker['source']}`",
        f"- Format: {RUNTIMES[fmt]} (`format={fmt}`): {files}",
        f"- Quantization: {quantization or 'none (float32)'}",
        f"- Model family: {marker['family']} ({marker['model_type']})",
        f"- Exported with: {versions}",
        "",
        "## Use",
        f"    python -m asrkit.evaluate checkpoint={folder} data=<data config>",
        f"    python -m asrkit.transcribe checkpoint={folder} audio=<file or folder>",
    ]
    if fmt == "ct2" and marker["model_type"] == "whisper":
        lines.append(f"    faster_whisper.WhisperModel('{folder}')  # also loads here")
    lines += _parity_lines(parity)
    card = folder / "README.md"
    card.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return card
