"""The model card written next to an exported model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

NORMALIZER_NOTES = {
    "basic": "Normalised scores use the basic normaliser: lower case, punctuation and symbols removed, "
    "combining vowel signs kept (asrkit.data.text.normalize_text).",
    "english": "Normalised scores use Whisper's English normaliser (EnglishTextNormalizer with OpenAI's "
    "spelling map), as the Whisper paper and the Open ASR Leaderboard score English.",
}


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


def write_model_card(directory: str | Path, cfg: DictConfig, results: dict[str, Any]) -> Path:
    """README.md stating the model, the data, the steps trained and the test error rates."""
    data = cfg.data
    split_name = f"{data.path}" + (f" ({data.name})" if data.get("name") else "")
    # a model exported with a tokenizer transcribes; one without (wav2vec2 pre-training) is an encoder
    transcribes = (Path(directory) / "tokenizer_config.json").is_file()
    train_split = data.train_split or " + ".join(map(":".join, zip(data.configs, data.splits, strict=True)))
    lines = [
        "---",
        "library_name: transformers",
        *(["pipeline_tag: automatic-speech-recognition"] if transcribes else []),
        f"language: [{cfg.lang}]",
        "tags: [asrkit]",
        "---",
        f"# {cfg.model._target_.rsplit('.', 1)[-1]} {'fine' if transcribes else 'pre'}-trained with asrkit",
        "",
        f"- Started from: `{cfg.model.get('name_or_path') or 'random initialisation'}`",
        f"- Training data: {split_name}, split `{train_split}`; tested on `{data.test_split}`",
        f"- Optimizer steps: {results['global_step']} at a global batch of {data.global_batch_size} "
        f"({cfg.optimizer.factory._target_}, peak lr {cfg.optimizer.lr})",
        "",
        *(_wer_table(results) if transcribes else _other_metrics_table(results)),
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
