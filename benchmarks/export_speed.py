"""Serving exports against PyTorch: speed, WER and identical transcripts on the demo test split.

    uv run python benchmarks/export_speed.py [--whisper <export>] [--ctc <export>] [--data demo] [--repeats 1]

For each model (defaults: the demo Whisper and demo CTC exports of /work/main/outputs), ``asrkit.export`` writes
CTranslate2 float32 and int8 and ONNX float32 and int8 folders (``parity=false``), then ``asrkit.evaluate`` scores
PyTorch and every folder on the test split of ``--data`` with the same data, normaliser, batch size and metrics.
Speed is evaluate's audio seconds per wall-clock second (reading, features, model and decoding; loading excluded),
the best of ``--repeats`` passes taken in turn across the variants. Each row prints its speed ratio to PyTorch
(= PyTorch's real-time factor over the export's), WER delta and the share of transcripts identical to PyTorch's;
an export a runtime cannot make prints its one-line reason. ``RESULT export_speed`` is the CTranslate2 float32
Whisper's speed ratio to PyTorch.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from asrkit.config import compose_config
from asrkit.evaluate import evaluate
from asrkit.export import export

VARIANTS = [("pytorch", None, None), ("ct2", "ct2", None), ("ct2 int8", "ct2", "int8")]
VARIANTS += [("onnx", "onnx", None), ("onnx int8", "onnx", "int8")]


def _score(checkpoint: str, data: list[str], out: Path) -> tuple[dict[str, Any], dict[int, str]]:
    with contextlib.redirect_stdout(io.StringIO()):
        scores = evaluate(compose_config([f"checkpoint={checkpoint}", *data], out, config_name="evaluate"))
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return scores, {row["id"]: row["hypothesis"] for row in map(json.loads, lines)}


def _export_variants(source: str, data: list[str], work: Path) -> dict[str, str]:
    """label -> the checkpoint to evaluate (PyTorch's own, or the export folder), or the reason it has none."""
    checkpoints = {}
    for label, fmt, quantization in VARIANTS:
        if fmt is None:
            checkpoints[label] = source
            continue
        overrides = [f"checkpoint={source}", f"format={fmt}", "parity=false", *data]
        overrides.append(f"quantization={quantization or 'null'}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                checkpoints[label] = str(export(compose_config(overrides, work / label.replace(" ", "-"), "export")))
        except ValueError as error:
            checkpoints[label] = "not exported: " + str(error).splitlines()[0]
    return checkpoints


def measure(name: str, source: str, data: list[str], work: Path, repeats: int) -> dict[str, float]:
    """Print one table for a model; return the speed ratios of its variants to PyTorch.

    The variants are timed in turn, ``repeats`` rounds, each keeping its fastest pass: a load that comes and
    goes on a shared machine then falls on every variant alike rather than on one."""
    print(f"\n{name}: {source}\n")
    checkpoints = _export_variants(source, data, work / name)
    runs = {label: checkpoint for label, checkpoint in checkpoints.items() if not checkpoint.startswith("not ")}
    best: dict[str, tuple[dict[str, Any], dict[int, str]]] = {}
    for _ in range(repeats):
        for label, checkpoint in runs.items():
            scores, hypotheses = _score(checkpoint, data, work / name / f"{label}-eval".replace(" ", "-"))
            if label not in best or scores["audio_seconds_per_second"] > best[label][0]["audio_seconds_per_second"]:
                best[label] = (scores, hypotheses)
    print("| variant | WER % | CER % | audio s/s | speed ratio | WER delta | identical |")
    print("|---|---|---|---|---|---|---|")
    reference, texts = best["pytorch"]
    ratios = {}
    for label, checkpoint in checkpoints.items():
        if label not in best:
            print(f"| {label} | - | - | - | - | - | {checkpoint} |")
            continue
        scores, hypotheses = best[label]
        ratios[label] = scores["audio_seconds_per_second"] / reference["audio_seconds_per_second"]
        same = sum(hypotheses.get(i) == text for i, text in texts.items()) / len(texts)
        print(
            f"| {label} | {scores['wer']:.2f} | {scores['cer']:.2f} | {scores['audio_seconds_per_second']:.1f} | "
            f"{ratios[label]:.2f}x | {scores['wer'] - reference['wer']:+.2f} | {100 * same:.0f} % ({len(texts)}) |"
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whisper", default="/work/main/outputs/aug-none/export")
    parser.add_argument("--ctc", default="/work/main/outputs/ctc-demo/export")
    parser.add_argument("--data", default="demo")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    data = [f"data={args.data}", f"batch_size={args.batch_size}", "device=cpu"]
    print(f"load average at start (1, 5, 15 min): {', '.join(f'{load:.2f}' for load in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="asrkit-export-speed-") as work:
        whisper = measure("Whisper", args.whisper, data, Path(work), args.repeats)
        measure("CTC", args.ctc, data, Path(work), args.repeats)
    print(f"\nload average at end (1, 5, 15 min): {', '.join(f'{load:.2f}' for load in os.getloadavg())}")
    print(f"RESULT export_speed {whisper['ct2']:.2f}")


if __name__ == "__main__":
    main()
