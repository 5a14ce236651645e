"""The model card written next to an exported model: the README.md that the Hugging Face Hub shows.

Its YAML front matter is built as a dict and dumped by yaml: library, pipeline tag, language, base model, datasets
and a ``model-index`` with the test WER/CER, as the Hub reads it (``huggingface_hub.ModelCard.load(path).data``
gives them as ``eval_results``). The text says what was trained from what (fine-tuned from a checkpoint, or trained
from random initialisation), on which data and splits, with which hyper-parameters (LoRA adapters, merged into the
exported weights, among them) and for how many optimizer steps, the test error rates raw and normalised (naming the
normaliser), the command that reproduces the run (from Hydra's ``.hydra/overrides.yaml`` in the run dir) and the
whole composed config.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from asrkit.adapters import AdapterOptions
from asrkit.config import ASSETS_DIR
from asrkit.hardware import resolve_precision

NORMALIZER_NOTES = {
    "basic": "Normalised scores use the basic normaliser: lower case, punctuation and symbols removed, "
    "combining vowel signs kept (asrkit.data.text.normalize_text).",
    "english": "Normalised scores use Whisper's English normaliser (EnglishTextNormalizer with OpenAI's "
    "spelling map), as the Whisper paper and the Open ASR Leaderboard score English.",
}
FAMILIES = {"whisper": "Whisper", "wav2vec2": "wav2vec2", "hubert": "HuBERT", "wavlm": "WavLM"}


def _architecture(directory: Path, cfg: DictConfig) -> tuple[str, str]:
    """(model_type, architecture class) from the export's config.json, else from the module's name."""
    config = directory / "config.json"
    if config.is_file():
        saved = json.loads(config.read_text())
        return saved.get("model_type", "model"), (saved.get("architectures") or ["?"])[0]
    module_path, module = str(cfg.model._target_).rsplit(".", 1)
    return module_path.rsplit(".", 1)[-1], module  # asrkit.models.whisper.WhisperModule -> whisper


def _is_hub_id(name: Any) -> bool:
    """Whether ``name`` reads as a hub repository id (``owner/name``) rather than a local path or a builder."""
    text = str(name or "")
    return text.count("/") == 1 and not text.startswith((".", "/")) and not Path(text).exists()


def _start(model: DictConfig, transcribes: bool) -> tuple[str, str | None]:
    """(what training started from, in words; the base model's hub id for the metadata, if it has one)."""
    source = model.get("name_or_path")
    if not source:
        return ("trained" if transcribes else "pre-trained") + " with asrkit from random initialisation", None
    if not model.get("load_weights", True):  # pre-training: the checkpoint's architecture, not its weights
        return f"pre-trained with asrkit from random initialisation, with the architecture of `{source}`", None
    verb = "fine-tuned" if transcribes else "further pre-trained"
    return f"{verb} with asrkit from `{source}`", str(source) if _is_hub_id(source) else None


def _where(node: DictConfig) -> str:
    """One data source in words: its path (a hub id, a local dir or a builder), config and data dir."""
    text = f"`{node.path}`" + (f" (config `{node.name}`)" if node.get("name") else "")
    if node.get("data_dir"):
        folder = Path(str(node.data_dir)).resolve()
        bundled = folder.is_relative_to(ASSETS_DIR)
        shown = f"asrkit/assets/{folder.relative_to(ASSETS_DIR)}" if bundled else str(node.data_dir)
        text += f" of `{shown}`" + (" (bundled with asrkit)" if bundled else "")
    return text


def _training_split(data: DictConfig) -> str:
    if data.get("train_split"):
        return str(data.train_split)
    return " + ".join(map(":".join, zip(data.configs, data.splits, strict=True)))


def _data_lines(data: DictConfig, lang: str, results: dict[str, Any]) -> list[str]:
    sources = data.get("sources") or {}
    if sources:
        drawn = data.get("mixing") == "interleave"  # each example drawn from source i with its probability
        parts = [_where(s) + (f" ({s.probability:.0%} of examples)" if drawn else "") for s in sources.values()]
        corpus = ("interleaved" if drawn else "concatenated") + " from " + ", ".join(parts)
    else:
        corpus = _where(data)
    limit = f" (first {data.max_train_samples} examples)" if data.get("max_train_samples") else ""
    tested = (results.get("test") or {}).get("num_samples")
    lines = [
        f"- Language: `{lang}`",
        f"- Training data: {corpus}, split `{_training_split(data)}`{limit}",
        f"- Validated on split `{data.validation_split}`; "
        + (f"tested on split `{data.test_split}`" if data.test_split else "not tested (data.test_split is null)")
        + (f" ({int(tested)} utterances scored)" if tested is not None else ""),
    ]
    if data.get("max_eval_samples"):
        lines.append(f"- Validation and test: first {data.max_eval_samples} examples only")
    return lines


def _hyper_parameter_lines(cfg: DictConfig, results: dict[str, Any]) -> list[str]:
    optimizer, data, trainer = cfg.optimizer, cfg.data, cfg.trainer
    schedule = optimizer.get("scheduler") or {}
    settings = ", ".join(f"{key} {value}" for key, value in schedule.items() if not str(key).startswith("_"))
    clip = trainer.get("gradient_clip_val")
    clipping = f"gradients clipped to a global L2 norm of {clip}" if clip else "gradients not clipped"
    lines = [
        f"- Optimizer steps: {results['global_step']} (trainer.max_steps {trainer.max_steps})",
        f"- Optimizer: `{optimizer.factory._target_}`, peak lr {optimizer.lr}, weight decay {optimizer.weight_decay}",
        f"- Schedule: `{schedule.get('_target_', 'constant')}`" + (f" ({settings})" if settings else ""),
        f"- Batch: {data.global_batch_size} examples per optimizer step, over all devices ({data.per_device_batch_size}"
        " per device and forward pass; gradient accumulation derived from the number of devices)",
        f"- Precision: {resolve_precision(cfg.hw)}; {clipping}; seed {cfg.seed}",
        f"- Validation every {trainer.val_check_interval} optimizer steps; the best by `{cfg.optimized_metric}` "
        "is the checkpoint exported and tested",
    ]
    return lines + _run_lines(results, str(cfg.optimized_metric))


def _adapter_lines(cfg: DictConfig, directory: Path, model_type: str, architecture: str) -> list[str]:
    """What a peft=lora|qlora run trained: the adapters (rank, targets), merged into this export's weights."""
    options = AdapterOptions.parse(cfg.get("peft"))
    if not options.enabled:
        return []
    head = " and the output layer (lm_head) trained whole" if architecture.endswith("ForCTC") else ""
    bits = f", loaded in {options.load_in_bits} bit by bitsandbytes (QLoRA)" if options.quantized else ""
    alone = (
        "; the adapter alone is in `adapter/` (`PeftModel.from_pretrained`)" if (directory / "adapter").is_dir() else ""
    )
    return [
        f"- Adapters: LoRA of rank {options.r} (alpha {options.alpha}, dropout {options.dropout}) on "
        f"{', '.join(options.targets(model_type))}{head}; every other weight frozen{bits}",
        f"- The adapters are merged into the exported weights: a plain `{architecture}`, no peft needed{alone}",
    ]


def _run_lines(results: dict[str, Any], metric: str) -> list[str]:
    """What the run's summary (``results["summary"]``, :mod:`asrkit.summary`) says of the training itself; without
    one, the best validation value and the throughput that ``results`` holds. Local paths stay out of the card."""
    run = results.get("summary") or {}
    best, key = run.get("best") or {}, metric.removeprefix("val/")
    lines = []
    if key in best:
        lines.append(f"- Best validation `{metric}`: {best[key]:.2f} at optimizer step {int(best['step'])}")
    elif results.get("best_" + metric.replace("/", "_")) is not None:
        lines.append(f"- Best validation `{metric}`: {results['best_' + metric.replace('/', '_')]:.2f}")
    speed = run.get("samples_per_second") or (results.get("throughput") or {}).get("samples_per_second")
    if speed:
        lines.append(f"- Training speed: {speed:.3g} examples per second (steady state, all devices)")
    if run.get("audio_hours_seen"):
        lines.append(
            f"- Audio trained on: {run['audio_hours_seen']:.3g} h in {int(run['samples_seen'])} examples "
            "(repeats over epochs counted)"
        )
    if run.get("wall_seconds"):
        lines.append(f"- Wall time: {run['wall_seconds'] / 60:.1f} min (training, validation and tests)")
    return lines
    return lines


def _metric_row(name: str, scores: dict[str, float] | None) -> str:
    if not scores:
        return f"| {name} | - | - | - |"
    return f"| {name} | {scores['wer_raw']:.2f} | {scores['wer']:.2f} | {scores['cer']:.2f} |"


def _wer_table(results: dict[str, Any]) -> list[str]:
    return [
        "| test | WER raw % | WER normalised % | CER normalised % |",
        "|---|---|---|---|",
        _metric_row("before training", results.get("test_before")),
        _metric_row("after training", results.get("test")),
        "",
        NORMALIZER_NOTES[results.get("evaluation", {}).get("normalizer", "basic")],
        f"Evaluated in {results.get('evaluation', {}).get('dtype', 'float32')}; raw WER compares with the "
        "transcripts as the model was trained to write them (the data config's label preparation applied).",
    ]


def _other_metrics_table(results: dict[str, Any]) -> list[str]:
    """Whatever a module without WER (pre-training) reported on the test split, before and after."""
    runs = [("before training", results.get("test_before")), ("after training", results.get("test"))]
    names = sorted({name for _, scores in runs if scores for name in scores})
    if not names:
        return ["No test split was evaluated (data.test_split is null)."]
    rows = [[when, *(f"{s[n]:.4g}" if s and n in s else "-" for n in names)] for when, s in runs]
    return [f"| {' | '.join(row)} |" for row in [["test", *names], ["---"] * (len(names) + 1), *rows]]


def _command_lines(run_dir: Path) -> list[str]:
    """The command that reproduces the run, from the overrides Hydra recorded; or why there is none."""
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        return [
            "Not known: the run dir has no `.hydra/overrides.yaml` (the run was not started by `python -m asrkit`). "
            "The configuration below is the complete record of the run."
        ]
    command = shlex.join(["python", "-m", "asrkit", *map(str, OmegaConf.load(overrides))])
    return ["```bash", command, "```", "(the overrides Hydra recorded in the run dir's `.hydra/overrides.yaml`)"]


def _model_index(name: str, data: DictConfig, results: dict[str, Any]) -> list[dict[str, Any]]:
    """``model-index`` as the Hub reads it: one result (task, dataset, metrics) for the test split."""
    test = results.get("test") or {}
    if "wer" not in test:
        return []
    normalizer = results.get("evaluation", {}).get("normalizer", "basic")
    # data=mix: the sources whose test splits were scored (a source without the key inherits data.test_split)
    tested = [s for s in (data.get("sources") or {}).values() if "test_split" not in s or s.test_split] or [data]
    one = tested[0] if len(tested) == 1 else None
    dataset = {
        "name": " + ".join(Path(str(s.data_dir)).name if s.get("data_dir") else str(s.path) for s in tested),
        "type": str(one.path if one else data.path),
        **({"config": str(one.name)} if one and one.get("name") else {}),
        "split": str(data.test_split),
    }
    metrics = [
        {"type": "wer", "value": round(float(test["wer"]), 2), "name": f"Test WER ({normalizer} normaliser)"},
        {"type": "wer", "value": round(float(test["wer_raw"]), 2), "name": "Test WER (raw)"},
        {"type": "cer", "value": round(float(test["cer"]), 2), "name": f"Test CER ({normalizer} normaliser)"},
    ]
    task = {"type": "automatic-speech-recognition", "name": "Automatic Speech Recognition"}
    return [{"name": name, "results": [{"task": task, "dataset": dataset, "metrics": metrics}]}]


def _front_matter(
    cfg: DictConfig, name: str, model_type: str, base: str | None, transcribes: bool, results: dict[str, Any]
) -> str:
    sources = list((cfg.data.get("sources") or {}).values()) or [cfg.data]
    datasets = [str(s.path) for s in sources if _is_hub_id(s.path)]
    metadata: dict[str, Any] = {
        "library_name": "transformers",
        **({"pipeline_tag": "automatic-speech-recognition"} if transcribes else {}),
        "language": [str(cfg.lang)],
        "tags": ["asrkit", model_type, *(["lora"] if AdapterOptions.parse(cfg.get("peft")).enabled else [])],
        **({"base_model": base} if base else {}),
        **({"datasets": datasets} if datasets else {}),
        **({"metrics": ["wer", "cer"]} if transcribes else {}),
    }
    model_index = _model_index(name, cfg.data, results)
    if model_index:
        metadata["model-index"] = model_index
    return yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)


def _model_name(cfg: DictConfig, model_type: str) -> str:
    """hub_model_id's name, else the run name, else ``<model type>-<lang>-asrkit``."""
    if cfg.get("hub_model_id"):
        return str(cfg.hub_model_id).rsplit("/", 1)[-1]
    return str(cfg.get("run_name") or f"{model_type}-{cfg.lang}-asrkit")


def write_model_card(directory: str | Path, cfg: DictConfig, results: dict[str, Any]) -> Path:
    """README.md stating the model, the data, the training, the test error rates and how to reproduce them."""
    directory = Path(directory)
    # a model exported with a tokenizer transcribes; one without (wav2vec2 pre-training) is an encoder
    transcribes = (directory / "tokenizer_config.json").is_file()
    model_type, architecture = _architecture(directory, cfg)
    started, base = _start(cfg.model, transcribes)
    name = _model_name(cfg, model_type)
    lines = [
        "---",
        _front_matter(cfg, name, model_type, base, transcribes, results).rstrip(),
        "---",
        f"# {name}",
        "",
        f"{FAMILIES.get(model_type, model_type)} (`{architecture}`) {started}.",
        "",
        "## Data",
        *_data_lines(cfg.data, str(cfg.lang), results),
        "",
        "## Training",
        *_hyper_parameter_lines(cfg, results),
        *_adapter_lines(cfg, directory, model_type, architecture),
        "",
        "## Test results",
        *(_wer_table(results) if transcribes else _other_metrics_table(results)),
        "",
        "## Reproduce",
        *_command_lines(Path(cfg.paths.output_dir)),
        "",
        "## Configuration",
        "```yaml",
        OmegaConf.to_yaml(cfg, resolve=True).rstrip(),
        "```",
        "",
    ]
    path = directory / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
