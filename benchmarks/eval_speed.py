"""asrkit's evaluation against ``transformers.pipeline``: speed, identical transcripts and WER on the same files.

    uv run python benchmarks/eval_speed.py [--whisper <export>] [--ctc <export>] [--data demo] [--repeats 3]
        [--batch-size 16] [--unbatched CTC] [--variant 'LABEL=OVERRIDE ...'] [--threads N]

For each model (defaults: the demo Whisper and demo CTC exports of /work/main/outputs), the audio files of the test
split of ``--data`` are transcribed by ``asrkit.evaluate`` (in this process: reading, batching, model, decoding;
loading excluded) and by ``transformers.pipeline("automatic-speech-recognition", model=<export>,
batch_size=--batch-size)`` configured to decode the same way (Whisper: the export's language and task, greedy,
``max_new_tokens`` = the export's ``max_length``; CTC: greedy), fed each file as soundfile reads it (reading counted
in its time, as evaluate's includes its own; loading excluded). Each ``--variant`` adds an asrkit row with those
evaluate overrides (e.g. ``--variant 'static=cache_implementation=static'``); the row ``asrkit split order`` is
evaluate reading the split in its own order, as it did before it read longest first (that change's before). The
models named by ``--unbatched`` (default CTC) get a pipeline row at batch size 1 too: the batched CTC pipeline
decodes the frames of its padding (it argmaxes the padded batch and never cuts a row to its length), so its
transcripts gain letters; the unbatched one's are what transcripts are compared with there. Rows are timed in
turn, ``--repeats`` rounds (each starting one row further on), each row keeping its fastest pass, so that a load
coming and going on a shared machine, and what a pass leaves to the next, fall on all alike. Each row prints audio
seconds, wall and CPU seconds (``time.process_time``), the real-time factor (wall / audio), the ratio to the
pipeline at ``--batch-size`` (its RTF / the row's RTF), the share of transcripts identical to the pipeline's (raw
text, and after asrkit's normaliser) and WER as ``asrkit.metrics`` scores it. ``RESULT eval_speed`` is the smallest
ratio of asrkit's default row over the models.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import soundfile
import torch
from hydra.utils import instantiate
from transformers import AutoProcessor, GenerationConfig, pipeline

from asrkit import metrics
from asrkit.config import compose_config
from asrkit.data.datamodule import ASRDataModule
from asrkit.data.text import resolve_normalizer, text_normalizer
from asrkit.evaluate import evaluate
from asrkit.recognizer import FeatureCollator

SPLIT_ORDER = "asrkit split order"
PIPELINE = "transformers.pipeline"
UNBATCHED = "transformers.pipeline batch 1"


def _load() -> str:
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def _split_audio(overrides: list[str], work: Path) -> list[dict[str, Any]]:
    """The audio cells (path or bytes) of the evaluated split, in evaluate's order (an id is a position here)."""
    cfg = compose_config(overrides, work, config_name="evaluate")
    processor = AutoProcessor.from_pretrained(str(cfg.checkpoint))
    collator = FeatureCollator(processor.feature_extractor, processor.tokenizer, None)
    datamodule = instantiate(cfg.data, collator=collator, test_split=cfg.split, extra_validation=None)
    datamodule.setup("test")
    return list(datamodule.splits.datasets["test"].dataset.select_columns(["audio"])["audio"])


@contextlib.contextmanager
def _split_order(active: bool) -> Any:
    """evaluate's batches in the split's order (longest_first ignored), as before it sorted them."""
    original = ASRDataModule.test_dataloader
    if active:
        ASRDataModule.test_dataloader = lambda self, longest_first=False: original(self)
    try:
        yield
    finally:
        ASRDataModule.test_dataloader = original


def _asrkit(overrides: list[str], out: Path, split_order: bool = False) -> dict[str, Any]:
    with contextlib.redirect_stdout(io.StringIO()), _split_order(split_order):
        scores = evaluate(compose_config(overrides, out, config_name="evaluate"))
    rows = map(json.loads, (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines())
    texts = {row["id"]: (row["reference"], row["hypothesis"]) for row in rows}
    return {
        "audio": scores["audio_seconds"],
        "wall": scores["wall_seconds"],
        "cpu": scores["cpu_seconds"],
        "references": [texts[i][0] for i in sorted(texts)],
        "texts": [texts[i][1] for i in sorted(texts)],
    }


def _pipeline(recognize: Any, audio: list[dict[str, Any]], batch_size: int, generate: dict[str, Any]) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    inputs, seconds = [], 0.0
    for cell in audio:  # as a user hands files to the pipeline (no FFmpeg here: soundfile reads them)
        samples, rate = soundfile.read(cell["path"] if cell.get("path") else io.BytesIO(cell["bytes"]), dtype="float32")
        samples = samples.mean(axis=1) if samples.ndim > 1 else samples
        inputs.append({"raw": samples, "sampling_rate": rate})
        seconds += len(samples) / rate
    kwargs = {"generate_kwargs": generate} if generate else {}
    outputs = recognize(inputs, batch_size=batch_size, **kwargs)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"audio": seconds, "wall": wall, "cpu": cpu, "texts": [output["text"] for output in outputs]}


def measure(
    name: str, checkpoint: str, data: list[str], variants: dict[str, list[str]], work: Path, args: Any
) -> dict[str, float]:
    """Print one table for a model; return each asrkit row's ratio (pipeline RTF / its RTF)."""
    print(f"\n{name}: {checkpoint}\n")
    overrides = [f"checkpoint={checkpoint}", *data]
    audio = _split_audio(overrides, work / name / "split")
    processor = AutoProcessor.from_pretrained(checkpoint)
    whisper = hasattr(processor.tokenizer, "set_prefix_tokens")
    generate: dict[str, Any] = {}
    if whisper:  # as asrkit.evaluate decodes the export: its prompt, greedy, its new-token limit
        generation = GenerationConfig.from_pretrained(checkpoint)
        generate = {"task": generation.task or "transcribe", "num_beams": 1, "max_new_tokens": generation.max_length}
        generate |= {"language": generation.language} if generation.language else {}
        print(f"pipeline generate_kwargs: {json.dumps(generate)}")
    recognize = pipeline("automatic-speech-recognition", model=checkpoint, device="cpu", dtype=torch.float32)
    labels = [*variants, SPLIT_ORDER, PIPELINE] + ([UNBATCHED] if name in args.unbatched.split(",") else [])
    best: dict[str, dict[str, Any]] = {}
    for round_ in range(args.repeats):
        for label in labels[round_ % len(labels) :] + labels[: round_ % len(labels)]:  # each round starts elsewhere
            if label in (PIPELINE, UNBATCHED):
                run = _pipeline(recognize, audio, 1 if label == UNBATCHED else args.batch_size, generate)
            else:
                run = _asrkit(overrides + variants.get(label, []), work / name / label, label == SPLIT_ORDER)
            if label not in best or run["wall"] < best[label]["wall"]:
                best[label] = run
    references = best["asrkit"]["references"]
    normalizer = resolve_normalizer("auto", str(compose_config(overrides, work, "evaluate").evaluation.language))
    normalize = text_normalizer(normalizer)
    unknown = None if whisper else processor.tokenizer.unk_token
    compared = UNBATCHED if UNBATCHED in best else PIPELINE
    reference_texts = best[compared]["texts"]
    print(f"{len(references)} utterances, {normalizer} normaliser, batch size {args.batch_size}, best of")
    print(f"{args.repeats} interleaved passes; transcripts compared with those of {compared}\n")
    print("| variant | audio s | wall s | CPU s | RTF | ratio | identical raw | identical normalised | WER % |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = {}
    for label, run in best.items():
        rtf = run["wall"] / run["audio"]
        ratio = (best[PIPELINE]["wall"] / best[PIPELINE]["audio"]) / rtf
        if label not in (PIPELINE, UNBATCHED):
            ratios[label] = ratio
        pairs = list(zip(run["texts"], reference_texts, strict=True))
        raw = sum(a == b for a, b in pairs) / len(pairs)
        normalised = sum(normalize(a) == normalize(b) for a, b in pairs) / len(pairs)
        wer = metrics.error_rates(references, run["texts"], normalizer, unknown)["wer"]
        print(
            f"| {label} | {run['audio']:.1f} | {run['wall']:.2f} | {run['cpu']:.2f} | {rtf:.4f} | {ratio:.2f}x | "
            f"{100 * raw:.0f} % | {100 * normalised:.0f} % | {wer:.2f} |"
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whisper", default="/work/main/outputs/aug-none/export")
    parser.add_argument("--ctc", default="/work/main/outputs/ctc-demo/export")
    parser.add_argument("--data", default="demo")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--unbatched", default="CTC", help="models (Whisper,CTC) also run by a batch-1 pipeline")
    parser.add_argument("--threads", type=int, default=None, help="torch threads; default: torch's (the cores)")
    parser.add_argument("--variant", action="append", default=[], help="LABEL=OVERRIDE [OVERRIDE ...]: an asrkit row")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if args.threads:  # on a shared machine one thread waits less on the others' jobs than two
        torch.set_num_threads(args.threads)
    data = [f"data={args.data}", f"batch_size={args.batch_size}", "device=cpu"]
    variants = {"asrkit": []} | {v.split("=", 1)[0]: v.split("=", 1)[1].split() for v in args.variant}
    print(f"load average at start (1, 5, 15 min): {_load()}; torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="asrkit-eval-speed-") as work:
        ratios = {}
        for name, checkpoint in (("Whisper", args.whisper), ("CTC", args.ctc)):
            if checkpoint:
                ratios[name] = measure(name, checkpoint, data, variants, Path(work), args)["asrkit"]
    print(f"\nload average at end (1, 5, 15 min): {_load()}")
    print(f"RESULT eval_speed {min(ratios.values()):.2f}")


if __name__ == "__main__":
    main()
