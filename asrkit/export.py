"""The model card written next to an exported model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def _metric_row(name: str, scores: dict[str, float] | None) -> str:
    if not scores:
        return f"| {name} | - | - | - |"
    return f"| {name} | {scores['wer_raw']:.2f} | {scores['wer']:.2f} | {scores['cer']:.2f} |"


def write_model_card(directory: str | Path, cfg: DictConfig, results: dict[str, Any]) -> Path:
    """README.md stating the model, the data, the steps trained and the test error rates."""
    data = cfg.data
    split_name = f"{data.path}" + (f" ({data.name})" if data.get("name") else "")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: automatic-speech-recognition",
        f"language: [{cfg.lang}]",
        "tags: [asrkit]",
        "---",
        f"# {cfg.model._target_.rsplit('.', 1)[-1]} fine-tuned with asrkit",
        "",
        f"- Started from: `{cfg.model.get('name_or_path') or 'random initialisation'}`",
        f"- Training data: {split_name}, split `{data.train_split}`; tested on `{data.test_split}`",
        f"- Optimizer steps: {results['global_step']} at a global batch of {data.global_batch_size} "
        f"({cfg.optimizer.factory._target_}, peak lr {cfg.optimizer.lr})",
        "",
        "| test | WER raw % | WER normalised % | CER normalised % |",
        "|---|---|---|---|",
        _metric_row("before training", results.get("test_before")),
        _metric_row("after training", results.get("test")),
        "",
        "Normalised scores lower-case and strip punctuation but keep combining vowel signs "
        "(asrkit.data.text.normalize_text).",
        "",
        "## Configuration",
        "```yaml",
        OmegaConf.to_yaml(cfg, resolve=True).rstrip(),
        "```",
        "",
    ]
    path = Path(directory) / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
