"""train(cfg): build the datamodule, module, callbacks, loggers and trainer; fit; test; export."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from asrkit import adapters, checkpoints, faults, hardware, memory, metrics, resume, summary
from asrkit.batch_plan import BatchPlan
from asrkit.callbacks import SpeechThroughput
from asrkit.config_check import check_config
from asrkit.data.extra_validation import resolve as resolve_extra
from asrkit.hub import push_run
from asrkit.model_card import write_model_card
from asrkit.models.steps import evaluation_normalizer
from asrkit.reporting import ValidationReport, finish_runs

log = logging.getLogger(__name__)


def _build(name: str, node: DictConfig, **kwargs: Any) -> Any:
    log.info("%s: %s", name, node._target_)
    return instantiate(node, **kwargs)


def _augment(cfg: DictConfig, name: str) -> dict[str, Any] | None:
    """``augment.<name>`` resolved to plain values (it leaves the config tree, where ``${seed}`` resolves), or None
    when it is null or the chosen augment options do not set it."""
    node = cfg.get("augment", {}).get(name)
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def _test(trainer: L.Trainer, module: L.LightningModule, datamodule: Any, when: str) -> dict[str, float]:
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    scores = {key.removeprefix("test/"): value for key, value in results.items()}
    if "wer" not in scores:  # a module without transcripts (pre-training) reports its own metrics
        log.info("test %s training: %s", when, ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        return scores
    log.info(
        "test %s training: WER %.2f%% (raw %.2f%%), CER %.2f%% on %d utterances",
        when,
        scores["wer"],
        scores["wer_raw"],
        scores["cer"],
        scores["num_samples"],
    )
    return scores


def _left_out(datamodule: Any) -> dict[str, Any]:
    """Per evaluation split, the utterances (and hours) the drop rule left out of the scores, and why."""
    left_out = {}
    extra = [f"validation/{name}" for name in getattr(datamodule, "extra_validation_names", [])]
    for role in ("validation", *extra, "test"):
        excluded = datamodule.excluded.get(role)
        if excluded is None:  # a stream that has dropped nothing (it counts as it reads)
            continue
        left_out[role] = excluded
        if excluded["utterances"]:
            log.warning(
                "%s split: %d utterances (%.3f h) left out of the scores: %s",
                role,
                excluded["utterances"],
                excluded["hours"],
                excluded["reasons"],
            )
    return left_out


def _dropped(datamodule: Any) -> dict[str, dict[str, int]]:
    """``data/dropped/<role>/<reason>``: how many examples of each split each reason dropped."""
    return {role: dict(excluded["reasons"]) for role, excluded in datamodule.excluded.items()}


def _load_best(module: L.LightningModule, callbacks: list[Any]) -> dict[str, Any]:
    """Load the best weights by the monitored metric (val/wer -> best_val_wer) into ``module``."""
    best = next((cb for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor), None)
    if best is None or not best.best_model_path:
        log.warning("no validation ran, so there is no best checkpoint: testing and exporting the last weights")
        return {"best_checkpoint": None}
    module.load_state_dict(checkpoints.checkpoint_state_dict(best.best_model_path))  # a file, or DeepSpeed's dir
    log.info("best checkpoint: %s", best.best_model_path)
    best_key = "best_" + best.monitor.replace("/", "_")  # best_val_wer; best_val_loss for pre-training
    score = best.best_model_score  # None when a resumed run ended before validating again
    return {"best_checkpoint": best.best_model_path, best_key: None if score is None else float(score)}


def _fit(trainer: L.Trainer, module: Any, datamodule: Any, resume_from: Path | None, callbacks: list[Any]) -> None:
    """``trainer.fit``; a fault that :class:`asrkit.faults.FaultCheckpoint` saved a checkpoint for ends the
    process with its one-line message (a signal: exit status 143, as a shell reports SIGTERM)."""
    with warnings.catch_warnings():  # the datamodule saves and restores its position within the epoch itself
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        except (SIGTERMException, RuntimeError) as error:  # RunStopped and out-of-memory errors are RuntimeErrors
            if not isinstance(error, (SIGTERMException, faults.RunStopped)) and not faults.is_out_of_memory(error):
                raise
            handler = next((cb for cb in callbacks if isinstance(cb, faults.FaultCheckpoint)), None)
            message = handler.describe(error) if handler else str(error) or type(error).__name__
            log.error("%s", message)
            if isinstance(error, SIGTERMException):
                raise SystemExit(faults.SIGTERM_EXIT_CODE) from None
            raise faults.RunStopped(message) from error


def _optimized(results: dict[str, Any], name: str) -> float | None:
    """The best validation value of ``optimized_metric`` (what sweeps and Optuna minimise); None if none ran."""
    key = "best_" + name.replace("/", "_")
    if results["best_checkpoint"] is not None and key not in results:  # its monitor was set apart from the key
        kept = next(k for k in results if k.startswith("best_") and k != "best_checkpoint")
        raise ValueError(f"optimized_metric={name!r}: the best checkpoint kept {kept} (its monitor was changed)")
    return results.get(key)


def _summary(
    cfg: DictConfig, trainer: L.Trainer, callbacks: list[Any], results: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """The end-of-run summary's numbers (:mod:`asrkit.summary`): metrics.json keeps them, the log ends with them."""
    report = next((cb for cb in callbacks if isinstance(cb, ValidationReport)), None)
    speed = next((cb for cb in callbacks if isinstance(cb, SpeechThroughput)), None)
    seen = {"samples": speed.samples_seen, "audio_seconds": speed.audio_seconds_seen} if speed else {}
    paths = summary.run_paths(Path(cfg.paths.output_dir), bool(cfg.export), trainer.loggers)
    history = report.history if report else []
    return summary.run_summary(
        results, history, cfg.optimized_metric, seen, seconds, summary.peak_memory(trainer), paths
    )


def steppable(cfg: DictConfig) -> tuple[L.LightningModule, L.LightningDataModule]:
    """The config's module and datamodule, ready for training steps outside a Trainer (benchmarks, tests): the
    datamodule set up for fitting, CTC's vocabulary built from its training transcripts and the network made, as
    ``train()`` prepares them, and ``training_step``'s logging a no-op (there is no Trainer to log to)."""
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    datamodule = instantiate(cfg.data, collator=module.collator)
    datamodule.setup("fit")
    if module.needs_vocabulary:
        module.build_vocabulary(datamodule.training_transcripts())
        module.configure_model()
    module.log = lambda *args, **kwargs: None
    return module, datamodule


def train(cfg: DictConfig) -> float | None:
    """Run one training job; return the best validation value of ``cfg.optimized_metric``."""
    started = time.perf_counter()
    check_config(cfg)  # one-line errors naming the key, before anything loads
    out = Path(cfg.paths.output_dir)
    if logging.getLogger().hasHandlers():  # Hydra logs to console and file; Lightning's handler would repeat it
        logging.getLogger("lightning").handlers.clear()
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)

    spec_augment = _augment(cfg, "spec_augment")  # masks in the model (augment=specaugment)
    module: L.LightningModule = _build(
        "model", cfg.model, optimizer=cfg.optimizer, spec_augment=spec_augment, _recursive_=False
    )
    batch_plan = BatchPlan.make(cfg.data.global_batch_size, cfg.data.per_device_batch_size, hardware.world_size(cfg.hw))
    data = cfg.data.copy()
    with open_dict(data):  # instantiate would merge the resolved sets into the named ones, not replace them
        data.extra_validation = None
    augment = _augment(cfg, "waveform")  # speed, noise, gain on the training audio (augment=waveform)
    datamodule: L.LightningDataModule = _build(
        "data",
        data,
        collator=module.collator,
        batch_plan=batch_plan,
        augment=augment,
        extra_validation=resolve_extra(cfg),
    )
    if cfg.preprocess_only:  # one process measures, filters and saves the splits; later runs load them
        datamodule.preprocess()
        return None
    if module.needs_vocabulary:  # CTC: the character vocabulary of the training transcripts
        module.build_vocabulary(datamodule.training_transcripts())
    callbacks = [_build(f"callbacks.{name}", node) for name, node in (cfg.get("callbacks") or {}).items() if node]
    if not cfg.trainer.enable_progress_bar:  # Lightning refuses a progress bar callback it is told not to show
        callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
    loggers = [_build(f"logger.{name}", node) for name, node in (cfg.get("logger") or {}).items() if node]
    checkpoint_dir = out / "checkpoints"
    resume_from = resume.resolve(cfg.resume, checkpoint_dir)
    if resume_from is not None:
        resume.check_config(cfg, resume_from, force=cfg.resume_force)
    trainer: L.Trainer = _build(
        "trainer",
        cfg.trainer,
        **hardware.trainer_kwargs(cfg.hw, find_unused_parameters=module.skips_layers),  # layerdrop under DDP
        callbacks=callbacks,
        logger=loggers,
        accumulate_grad_batches=batch_plan.accumulation,
        val_check_interval=cfg.trainer.val_check_interval * batch_plan.accumulation,  # given in optimizer steps
        default_root_dir=checkpoint_dir,  # where Lightning's SLURM requeue handler saves (and resume finds) hpc_ckpt_N
    )
    if trainer.is_global_zero:
        resume.record_config(cfg, out)
    if cfg.hw.reuse_freed_memory and isinstance(trainer.accelerator, CPUAccelerator):
        memory.reuse_freed_memory()
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    results: dict[str, Any] = {}
    if cfg.test_before_training and cfg.data.test_split and resume_from is None:
        results["test_before"] = _test(trainer, module, datamodule, "before")
    _fit(trainer, module, datamodule, resume_from, callbacks)
    trainer.save_checkpoint(checkpoint_dir / "last.ckpt")  # the final state, to resume or extend
    results["global_step"] = trainer.global_step
    log.info("global rank %d stopped at optimizer step %d", trainer.global_rank, trainer.global_step)
    results |= _load_best(module, callbacks)
    speed = next((cb.summary for cb in callbacks if isinstance(cb, SpeechThroughput)), {})
    results["throughput"] = {key.split("/")[-1]: value for key, value in speed.items()}
    if cfg.data.test_split:
        results["test"] = _test(trainer, module, datamodule, "after")
    results["evaluation"] = {"dtype": str(cfg.evaluation.dtype), "normalizer": evaluation_normalizer(cfg.evaluation)}
    results["left_out"] = _left_out(datamodule)
    results["data"] = {"dropped": _dropped(datamodule)}

    if trainer.is_global_zero:
        results["summary"] = _summary(cfg, trainer, callbacks, results, time.perf_counter() - started)
        if cfg.export:
            module.export(out / "export")  # with adapters: merged in
            if cfg.export_adapter_only:
                adapters.save_adapter(module.model, out / "export" / "adapter")
            write_model_card(out / "export", cfg, results)
            log.info("exported to %s", out / "export")
        (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        if getattr(module, "predictions", {}).get("test"):  # what the test after training heard
            metrics.write_predictions(out / "test_predictions.jsonl", module.predictions["test"])
        if cfg.export and cfg.push_to_hub:  # after metrics.json: an upload cut short loses nothing
            results["hub"] = push_run(out / "export", cfg)  # a failure is logged with the command to retry
            (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        for line in summary.summary_lines(results["summary"]):
            log.info("%s", line)
    finish_runs(loggers)  # the next job of a -m sweep in this process starts its own tracker runs
    return _optimized(results, cfg.optimized_metric)
