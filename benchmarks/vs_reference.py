"""asrkit against the Hugging Face reference recipes it replaces: same weights, data, batch, steps, schedule, precision.

    uv run python benchmarks/vs_reference.py --family whisper|ctc [--steps N] [--no-group-by-length] [--keep DIR]

The reference is written with the Hugging Face APIs the example recipes use (``run_speech_recognition_seq2seq.py``
and ``run_speech_recognition_ctc.py``): the audiofolder read by ``datasets.load_dataset``, features made by
``datasets.map`` with the model's own feature extractor (log-mel ``input_features`` for Whisper, normalised
``input_values`` for CTC), labels by its tokenizer, the recipes' padding collators, then ``Seq2SeqTrainer`` /
``Trainer``, once without and once with ``group_by_length`` (the recipes' option for batching similar lengths).

Both sides start from one ``save_pretrained`` directory (the demo model of ``experiment=demo`` or ``demo_ctc``
initialised at random, with its processor), read the bundled demo speech (480 training utterances), and train the
same number of optimizer steps at batch 16 with fused AdamW (both sides' default; lr 1e-3, betas 0.9/0.999,
eps 1e-8, no weight decay, gradient clipping at 1.0), a linear warm-up and a linear decay to 0 at the last step,
fp32, no data workers, no validation, TensorBoard logging every 20 steps, and a model saved at the end. asrkit
runs as users run it, ``python -m asrkit experiment=demo|demo_ctc model.name_or_path=<that directory> ...``, once
without duration bucketing and once with it, against the reference without and with ``group_by_length`` (like with
like), and writes what it always writes: last.ckpt, the export, metrics.json.

Each run is a fresh process, one after the other, with its own empty datasets cache. Measured per run:
- wall: process start to exit (data preparation, model load, training, saving);
- steady-state samples/s: optimizer steps 11 to the last, from the end of one step to the end of the next (data
  loading included, warm-up excluded), asrkit's throughput callback on one side and the same clock in a
  ``TrainerCallback`` on the other;
- peak RSS: the process's resident-set high-water mark (``ru_maxrss`` from ``wait4``; no worker processes run);
- test WER/CER: every saved model scored by the same evaluator, ``python -m asrkit.evaluate checkpoint=<it>
  data=demo`` (the CTC recipe's own metric decodes padded frames too, which inflates its WER).

``RESULT vs_reference_<family>`` is the lower of asrkit's two steady-state samples/s ratios (plain over plain,
bucketed over ``group_by_length``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = {"whisper": "demo", "ctc": "demo_ctc"}
WARMUP_STEPS = 10  # asrkit's throughput callback leaves out the same number (callbacks.throughput.warmup_steps)
GIB = 1024**3


# ---- the starting weights ---------------------------------------------------------------------------------------
def make_initial(family: str, out: Path, seed: int) -> None:
    """``experiment=demo|demo_ctc``'s model initialised at random (CTC: with the vocabulary of the training
    transcripts), saved as asrkit exports it: model and processor in one ``save_pretrained`` directory."""
    import torch
    from hydra.utils import instantiate

    from asrkit.config import compose_config

    overrides = [f"experiment={EXPERIMENT[family]}"] + (["model.tokenizer_dir=null"] if family == "ctc" else [])
    cfg = compose_config(overrides, str(out / "_compose"))
    torch.manual_seed(seed)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    if getattr(module, "needs_vocabulary", False):
        datamodule = instantiate(cfg.data, collator=module.collator)
        module.build_vocabulary(datamodule.training_transcripts())
        module.configure_model()
    module.export(out)
    shutil.rmtree(out / "_compose", ignore_errors=True)


# ---- the reference recipe -----------------------------------------------------------------------------------------
def run_reference(args: argparse.Namespace) -> None:
    """The Hugging Face recipe, as ``run_speech_recognition_seq2seq.py`` / ``run_speech_recognition_ctc.py`` do it."""
    import datasets
    import soundfile
    import torch
    import transformers
    from transformers import (
        AutoFeatureExtractor,
        AutoModelForCTC,
        AutoProcessor,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        WhisperForConditionalGeneration,
    )

    from asrkit.config import asset_path

    started = time.perf_counter()
    transformers.set_seed(args.seed)
    whisper = args.family == "whisper"
    processor = AutoProcessor.from_pretrained(args.model)
    feature_extractor = processor.feature_extractor
    tokenizer = processor.tokenizer
    raw = datasets.load_dataset("audiofolder", data_dir=str(asset_path("demo_speech")), split="train")
    # datasets 5 decodes audio with torchcodec, which needs FFmpeg's shared libraries; read the files with soundfile
    # instead (what asrkit reads them with), at the feature extractor's rate (the demo's 16 kHz: no resampling)
    raw = raw.cast_column("audio", datasets.Audio(decode=False))

    def decoded(audio: dict[str, Any]) -> dict[str, Any]:
        source = audio["path"] if audio.get("bytes") is None else io.BytesIO(audio["bytes"])
        array, rate = soundfile.read(source, dtype="float32")
        if rate != feature_extractor.sampling_rate:
            wanted = feature_extractor.sampling_rate
            raise SystemExit(f"{audio['path']}: {rate} Hz, the feature extractor takes {wanted}")
        return {"array": array, "sampling_rate": rate}

    if whisper:
        model = WhisperForConditionalGeneration.from_pretrained(args.model, attn_implementation="sdpa")
        model.config.use_cache = False
        tokenizer.set_prefix_tokens(language="hi", task="transcribe", predict_timestamps=False)

        def prepare(batch: dict[str, Any]) -> dict[str, Any]:
            audio = decoded(batch["audio"])
            inputs = feature_extractor(audio["array"], sampling_rate=audio["sampling_rate"])
            return {
                "input_features": inputs.input_features[0],
                "input_length": len(audio["array"]),
                "labels": tokenizer(batch["text"]).input_ids,
            }

        decoder_start = model.config.decoder_start_token_id

        def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            # DataCollatorSpeechSeq2SeqWithPadding of the seq2seq recipe
            inputs = feature_extractor.pad(
                [{"input_features": f["input_features"]} for f in features], return_tensors="pt"
            )
            labels_batch = tokenizer.pad([{"input_ids": f["labels"]} for f in features], return_tensors="pt")
            labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
            if (labels[:, 0] == decoder_start).all().cpu().item():
                labels = labels[:, 1:]
            inputs["labels"] = labels
            return inputs
    else:
        model = AutoModelForCTC.from_pretrained(args.model, attn_implementation="sdpa")
        feature_extractor = AutoFeatureExtractor.from_pretrained(args.model)

        def prepare(batch: dict[str, Any]) -> dict[str, Any]:
            audio = decoded(batch["audio"])
            inputs = feature_extractor(audio["array"], sampling_rate=audio["sampling_rate"])
            text = batch["text"].lower() + " "  # the recipe's target_text (no chars_to_ignore here, as asrkit's)
            return {
                "input_values": inputs.input_values[0],
                "input_length": len(inputs.input_values[0]),
                "labels": tokenizer(text).input_ids,
            }

        def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            # DataCollatorCTCWithPadding of the CTC recipe
            batch = processor.pad(
                input_features=[{"input_values": f["input_values"]} for f in features], return_tensors="pt"
            )
            labels_batch = processor.pad(labels=[{"input_ids": f["labels"]} for f in features], return_tensors="pt")
            batch["labels"] = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
            if "attention_mask" in batch:
                batch["attention_mask"] = batch["attention_mask"].to(torch.long)
            return batch

    train = raw.map(prepare, remove_columns=raw.column_names, desc="preprocess train dataset")

    class Clock(TrainerCallback):
        """Steady-state samples/s as asrkit's throughput callback measures it."""

        def __init__(self) -> None:
            self.last: float | None = None
            self.seconds = 0.0
            self.steps = 0

        def on_step_end(self, targs, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            now = time.perf_counter()
            if self.last is not None and state.global_step > WARMUP_STEPS:
                self.seconds += now - self.last
                self.steps += 1
            self.last = now

    clock = Clock()
    common = {
        "output_dir": str(args.out),
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": args.lr,
        "weight_decay": 0.0,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_epsilon": 1e-8,
        "max_grad_norm": 1.0,
        "lr_scheduler_type": "linear",
        "warmup_steps": args.warmup,
        "max_steps": args.steps,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 20,
        "report_to": ["tensorboard"],
        "dataloader_num_workers": 0,
        # transformers 5's name for the recipes' group_by_length=True
        "train_sampling_strategy": "group_by_length" if args.group_by_length else "random",
        "length_column_name": "input_length",
        "seed": args.seed,
        "disable_tqdm": True,
        "use_cpu": True,
    }
    trainer_class, args_class = (Seq2SeqTrainer, Seq2SeqTrainingArguments) if whisper else (Trainer, TrainingArguments)
    trainer = trainer_class(
        model=model,
        args=args_class(**common),
        train_dataset=train,
        data_collator=collate,
        processing_class=feature_extractor,
        callbacks=[clock],
    )
    trainer.train()
    trainer.save_model(str(args.out / "model"))
    processor.save_pretrained(str(args.out / "model"))
    if whisper:
        model.generation_config.save_pretrained(str(args.out / "model"))
    result = {
        "samples_per_second": args.batch * clock.steps / clock.seconds if clock.seconds else None,
        "steady_steps": clock.steps,
        "global_step": trainer.state.global_step,
        "in_process_wall_seconds": time.perf_counter() - started,
    }
    (args.out / "reference.json").write_text(json.dumps(result, indent=1))


# ---- running and measuring ---------------------------------------------------------------------------------------
def _measured(command: list[str], log: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``command`` to its end; its wall time and its resident-set high-water mark (from ``wait4``)."""
    started = time.perf_counter()
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode:
        tail = log.read_text().splitlines()[-30:]
        raise SystemExit("\n".join(tail) + f"\nvs_reference: {' '.join(command[:4])} ... failed (log: {log})")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_seconds": wall, "peak_rss_gib": usage.ru_maxrss * 1024 / GIB, "cpu_seconds": cpu}


def _evaluate(model_dir: Path, out: Path, env: dict[str, str]) -> dict[str, float]:
    command = [sys.executable, "-m", "asrkit.evaluate", f"checkpoint={model_dir}", "data=demo", f"hydra.run.dir={out}"]
    _measured(command, out.with_suffix(".log"), env)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wer": metrics["wer"], "cer": metrics["cer"]}


def _fresh_env(workdir: Path, name: str) -> dict[str, str]:
    env = dict(os.environ)
    env["HF_DATASETS_CACHE"] = str(workdir / "cache" / name)  # nothing mapped or indexed earlier is reused
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # asrkit sets it for CPU runs (hw.env); the reference gets it too
    return env


def _asrkit(args: argparse.Namespace, initial: Path, workdir: Path, bucketing: bool) -> dict[str, Any]:
    name = "asrkit-bucketed" if bucketing else "asrkit"
    run_dir = workdir / name
    command = [
        sys.executable, "-m", "asrkit", f"experiment={EXPERIMENT[args.family]}",
        f"model.name_or_path={initial}", "model.random_init=null", "model.tokenizer=null",
        "hw=cpu", "hw.precision=32-true", f"seed={args.seed}",
        f"data.per_device_batch_size={args.batch}", f"data.global_batch_size={args.batch}", "data.num_workers=0",
        "data.test_split=null", "test_before_training=false",
        f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps + 1}",
        "trainer.log_every_n_steps=20", "trainer.enable_progress_bar=false", "callbacks.periodic_checkpoint=null",
        f"optimizer.lr={args.lr}", f"optimizer.scheduler.warmup_steps={args.warmup}",
        f"data.bucketing.enabled={str(bucketing).lower()}", f"hydra.run.dir={run_dir}", *args.asrkit_overrides,
    ]  # fmt: skip
    measured = _measured(command, workdir / f"{name}.log", _fresh_env(workdir, name))
    summary = json.loads((run_dir / "metrics.json").read_text())["summary"]
    measured["samples_per_second"] = summary["samples_per_second"]
    measured["global_step"] = summary["global_step"]
    measured |= _evaluate(run_dir / "export", workdir / f"{name}-evaluate", _fresh_env(workdir, "evaluate"))
    return measured


def _reference(args: argparse.Namespace, initial: Path, workdir: Path, group_by_length: bool) -> dict[str, Any]:
    name = "reference-grouped" if group_by_length else "reference"
    out = workdir / name
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, __file__, "_reference", "--family", args.family, "--model", str(initial), "--out", str(out),
        "--steps", str(args.steps), "--batch", str(args.batch), "--lr", str(args.lr), "--warmup", str(args.warmup),
        "--seed", str(args.seed), *(["--group-by-length"] if group_by_length else []),
    ]  # fmt: skip
    measured = _measured(command, workdir / f"{name}.log", _fresh_env(workdir, name))
    measured |= json.loads((out / "reference.json").read_text())
    measured |= _evaluate(out / "model", workdir / f"{name}-evaluate", _fresh_env(workdir, "evaluate"))
    return measured


def _row(name: str, run: dict[str, Any]) -> str:
    speed = run.get("samples_per_second")
    return (
        f"| {name} | {run['global_step']} | {run['wall_seconds']:.1f} | {run['cpu_seconds']:.1f} | "
        f"{speed:.2f} | {run['peak_rss_gib']:.2f} | {run['wer']:.2f} | {run['cer']:.2f} |"
    )


def _load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(EXPERIMENT), required=True)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: whisper 120, ctc 240)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: a sixth of --steps)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--no-group-by-length",
        action="store_true",
        help="skip the length-grouped pair (asrkit bucketed, reference group_by_length)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it")
    parser.add_argument(
        "--asrkit-overrides", nargs="*", default=[], help="extra Hydra overrides for the asrkit run (e.g. to compare)"
    )
    args = parser.parse_args()
    args.steps = args.steps or {"whisper": 120, "ctc": 240}[args.family]
    args.warmup = args.warmup if args.warmup is not None else args.steps // 6
    if args.steps <= WARMUP_STEPS + 1:
        parser.error(f"--steps must be over {WARMUP_STEPS + 1}: the first {WARMUP_STEPS} are warm-up")

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="vs_reference-"))
    workdir.mkdir(parents=True, exist_ok=True)
    import torch  # after the argument check: a bad flag answers at once

    print(f"vs_reference: {args.family}, {args.steps} steps at batch {args.batch}, lr {args.lr}, warm-up {args.warmup}")
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"load average at start (1, 5, 15 min): {_load()}")
    initial = workdir / "initial"
    make = [sys.executable, __file__, "_initial", "--family", args.family, "--out", str(initial)]
    make += ["--seed", str(args.seed)]
    _measured(make, workdir / "initial.log", _fresh_env(workdir, "initial"))
    print(f"starting weights: {initial}")

    runs = {"asrkit": _asrkit(args, initial, workdir, bucketing=False)}
    runs["reference"] = _reference(args, initial, workdir, group_by_length=False)
    pairs = [("asrkit", "reference")]
    if not args.no_group_by_length:
        runs["asrkit, bucketed"] = _asrkit(args, initial, workdir, bucketing=True)
        runs["reference, group_by_length"] = _reference(args, initial, workdir, group_by_length=True)
        pairs.append(("asrkit, bucketed", "reference, group_by_length"))

    print("\n| run | steps | wall s | cpu s | samples/s (steady) | peak RSS GiB | test WER % | test CER % |")
    print("|---|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        print(_row(name, run))
    print()
    speed = []
    for ours_name, theirs_name in pairs:
        ours, theirs = runs[ours_name], runs[theirs_name]
        speed.append(ours["samples_per_second"] / theirs["samples_per_second"])
        print(
            f"{ours_name} / {theirs_name}: steady-state samples/s {speed[-1]:.2f}x, "
            f"end to end {theirs['wall_seconds'] / ours['wall_seconds']:.2f}x faster, "
            f"peak RSS {ours['peak_rss_gib'] / theirs['peak_rss_gib']:.2f}x, "
            f"WER {ours['wer'] - theirs['wer']:+.2f} points"
        )
    print(f"load average at end (1, 5, 15 min): {_load()}")
    (workdir / "results.json").write_text(json.dumps(runs, indent=1))
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"RESULT vs_reference_{args.family} {min(speed):.2f}")


def _internal() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["_initial", "_reference"])
    parser.add_argument("--family", choices=sorted(EXPERIMENT), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--group-by-length", action="store_true")
    args = parser.parse_args()
    if args.command == "_initial":
        make_initial(args.family, args.out, args.seed)
    else:
        run_reference(args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        _internal()
    else:
        main()
