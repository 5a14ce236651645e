"""python -m asrkit.evaluate and asrkit.transcribe on a demo export, its checkpoint and a tiny CTC export."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

from asrkit.evaluate import evaluate
from asrkit.metrics import error_rates
from asrkit.train import train
from asrkit.transcribe import transcribe
from tests.conftest import TINY_RUN, compose_config, tiny_ctc_config
from tests.hub_repo import DEMO, demo_rows

# what the tiny run tested: the first 8 test utterances, with the demo model's generation length
EVAL = ["data=demo", "max_eval_samples=8", "batch_size=8", "generation_max_length=48"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny training run: checkpoints, tensorboard/hparams.yaml, export, metrics.json."""
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_config(TINY_RUN, run_dir))
    return run_dir


@pytest.fixture(scope="module")
def evaluated(run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    """evaluate() of the run's export: its scores, what it printed and its run directory."""
    out = tmp_path_factory.mktemp("evaluate")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cfg = compose_config([f"checkpoint={run / 'export'}", *EVAL], out, config_name="evaluate")
        scores = evaluate(cfg)
    return scores, printed.getvalue(), out


def _predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def _printed(text: str, label: str) -> float:
    return float(re.search(rf"^{label}\s+([0-9.]+)", text, re.MULTILINE).group(1))


@pytest.mark.slow
def test_evaluate_prints_every_metric_and_writes_predictions_that_recompute(evaluated, run: Path) -> None:
    scores, printed, out = evaluated
    predictions = _predictions(out)
    assert [p["id"] for p in predictions] == list(range(8))
    assert all(set(p) == {"id", "reference", "hypothesis"} for p in predictions)
    recomputed = error_rates([p["reference"] for p in predictions], [p["hypothesis"] for p in predictions])
    for key, label in (("wer_raw", "WER raw"), ("wer", "WER normalised"), ("cer", "CER normalised")):
        assert _printed(printed, label) == pytest.approx(recomputed[key], abs=0.005)  # 2 decimals
        assert scores[key] == pytest.approx(recomputed[key])
    pattern = r"^speed\s+([0-9.]+) audio seconds per wall-clock second \(real-time factor, wall / audio: "
    pattern += r"([0-9.]+)"
    speed = re.search(pattern, printed, re.MULTILINE)
    assert float(speed.group(1)) > 0
    assert float(speed.group(2)) == pytest.approx(1 / scores["audio_seconds_per_second"], rel=0.01, abs=1e-4)
    audio_seconds = sum(float(row["duration"]) for row in demo_rows("test")[:8])
    assert scores["audio_seconds"] == pytest.approx(audio_seconds, abs=0.01)
    written = json.loads((out / "metrics.json").read_text())
    assert written["normalizer"] == "basic" and written["dtype"] == "float32"
    assert written["left_out"] == scores["left_out"] == {"utterances": 0, "hours": 0.0, "reasons": {}}
    numbers = [key for key, value in scores.items() if isinstance(value, float | int)]
    assert {key: written[key] for key in numbers} == pytest.approx({key: scores[key] for key in numbers})
    trained = json.loads((run / "metrics.json").read_text())["test"]  # the same model, data and metric code
    assert {key: scores[key] for key in trained} == pytest.approx(trained, abs=1e-3)


@pytest.mark.slow
def test_a_lightning_checkpoint_and_a_stream_give_the_same_predictions(evaluated, run, tmp_path) -> None:
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    overrides = [f"checkpoint={best}", *EVAL, "streaming=true"]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluate(compose_config(overrides, tmp_path, config_name="evaluate"))
    assert _predictions(tmp_path) == _predictions(evaluated[2])


@pytest.mark.slow
def test_a_checkpoint_moved_out_of_its_run_needs_module_class(run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "last.ckpt"
    moved.parent.mkdir()
    shutil.copy(run / "checkpoints" / "last.ckpt", moved)
    with pytest.raises(ValueError, match="module_class"):
        evaluate(compose_config([f"checkpoint={moved}", *EVAL], tmp_path / "out", config_name="evaluate"))


@pytest.mark.slow
def test_transcribe_writes_text_for_a_folder(evaluated, run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "audio"
    (folder / "inner").mkdir(parents=True)
    for number, row in enumerate(demo_rows("test")[:8]):  # the utterances evaluate saw, in the same batch
        shutil.copy(row["file_name"], folder / ("inner" if number >= 6 else "") / f"{number:02d}.flac")
    (folder / "notes.txt").write_text("not audio")
    overrides = [f"checkpoint={run / 'export'}", f"audio={folder}", "batch_size=8"]
    overrides.append("generation_max_length=48")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        results = transcribe(compose_config(overrides, tmp_path / "out", config_name="transcribe"))
    files = [Path(result["file"]).name for result in results]
    assert files == [f"{number:02d}.flac" for number in range(8)]
    assert [r["text"] for r in results] == [p["hypothesis"].strip() for p in _predictions(evaluated[2])]
    lines = (tmp_path / "out" / "transcripts.txt").read_text(encoding="utf-8").splitlines()
    assert lines == printed.getvalue().splitlines() and lines[0].endswith("\t" + results[0]["text"])
    jsonl = (tmp_path / "out" / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in jsonl] == results and all(r["seconds"] > 0 for r in results)


@pytest.mark.slow
def test_the_evaluate_command(run: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "asrkit.evaluate",
        f"checkpoint={run / 'export'}",
        "data=demo",
        "max_eval_samples=2",
        "batch_size=2",
        "generation_max_length=4",
        f"hydra.run.dir={tmp_path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "WER normalised" in done.stdout and "real-time factor" in done.stdout
    assert len(_predictions(tmp_path)) == 2 and (tmp_path / "metrics.json").is_file()


def _tiny_ctc_export(directory: Path, norm: str = "layer") -> Path:
    """A random-init wav2vec2 CTC model with a character vocabulary, as save_pretrained writes it; ``norm``
    group: a group-norm front end fed no attention mask (as wav2vec2-base), else layer norm and a mask."""
    directory.mkdir(parents=True)
    characters = sorted({char for row in demo_rows("test") for char in row["text"] if char != " "})
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2} | {char: i + 3 for i, char in enumerate(characters)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(directory / "vocab.json"), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=norm == "layer")
    config = tiny_ctc_config(len(vocab), 0, feat_extract_norm=norm)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(directory)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def test_a_ctc_export_is_evaluated_by_greedy_decoding(tmp_path: Path) -> None:
    export = _tiny_ctc_export(tmp_path / "export")
    runs = {}
    for batch_size in (1, 4):  # padding must not change what a file decodes to
        overrides = [f"checkpoint={export}", "data=demo", "max_eval_samples=4", f"batch_size={batch_size}"]
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            scores = evaluate(
                compose_config(overrides + ["split=validation"], tmp_path / f"{batch_size}", config_name="evaluate")
            )
        runs[batch_size] = _predictions(tmp_path / f"{batch_size}")
    predictions = runs[4]
    assert len(predictions) == 4 and scores["num_samples"] == 4 and "CER normalised" in printed.getvalue()
    assert runs[1] == runs[4]
    recomputed = error_rates([p["reference"] for p in predictions], [p["hypothesis"] for p in predictions])
    assert scores["wer_raw"] == pytest.approx(recomputed["wer_raw"])
    symbols = set(json.loads((export / "vocab.json").read_text())) | {" "}
    assert all(set(p["hypothesis"].replace("<unk>", "")) <= symbols for p in predictions)


def test_a_group_norm_ctc_export_gives_each_utterance_its_output_at_any_batch_size(tmp_path: Path) -> None:
    """wav2vec2-base's layout: a padded batch changes its GroupNorm statistics and what it attends to, and
    the feature extractor normalised over the padded batch; evaluation must not depend on the batch."""
    export = _tiny_ctc_export(tmp_path / "export", norm="group")
    runs, scores = {}, {}
    for batch_size in (1, 16):
        overrides = [f"checkpoint={export}", "data=demo", "max_eval_samples=16", f"batch_size={batch_size}"]
        with contextlib.redirect_stdout(io.StringIO()):
            cfg = compose_config(overrides, tmp_path / f"{batch_size}", config_name="evaluate")
            scores[batch_size] = evaluate(cfg)
        runs[batch_size] = _predictions(tmp_path / f"{batch_size}")
    assert len({row["duration"] for row in demo_rows("test")[:16]}) > 1 and len(runs[16]) == 16
    assert sum(bool(p["hypothesis"].strip()) for p in runs[1]) >= 8  # the random model does say something
    assert runs[16] == runs[1]
    assert scores[16]["wer"] == scores[1]["wer"] and scores[16]["cer"] == scores[1]["cer"]


def test_a_model_without_a_recognition_head_is_refused(tmp_path: Path) -> None:
    Wav2Vec2Config(architectures=["Wav2Vec2ForPreTraining"]).save_pretrained(tmp_path / "pretrained")
    overrides = [f"checkpoint={tmp_path / 'pretrained'}", "data=demo"]
    with pytest.raises(ValueError, match="no speech recognition head"):
        evaluate(compose_config(overrides, tmp_path / "out", config_name="evaluate"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        cfg = compose_config([f"checkpoint={DEMO}", "data=demo"], tmp_path / "out", config_name="evaluate")
        evaluate(cfg)
