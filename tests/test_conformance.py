"""Every checkpoint family the README names, on a config-faithful replica of its real layout
(tests/replicas/): a short fine-tune through train() (training, test, export), then three ways of hearing the
same test utterances must agree word for word: training's own test (test_predictions.jsonl),
python -m asrkit.evaluate on the export, and transformers.pipeline on the export."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoFeatureExtractor, GenerationConfig

from asrkit.evaluate import evaluate
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config, transcribe_demo_test_files
from tests.hub_repo import demo_rows
from tests.replicas.ctc import CTC_KINDS, build_ctc_replica
from tests.replicas.whisper import WHISPER_KINDS, build_whisper_replica
from tests.test_ctc import LAYOUT

UTTERANCES = 4  # demo test utterances heard by each of the three
# two optimizer steps, one validation, the test; one utterance per forward pass in every path, so that what
# is compared is the model, its processor and its generation settings, not batched arithmetic
SHORT = [
    *TINY_RUN[1:],
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    f"data.max_eval_samples={UTTERANCES}",
    "data.eval_batch_size=1",
]
CASES = [("whisper", kind) for kind in WHISPER_KINDS] + [("ctc", kind) for kind in CTC_KINDS]


def _fine_tune(family: str, kind: str, replica: Path, run: Path) -> None:
    if family == "whisper":
        english_only = "english" in kind
        overrides = [
            "experiment=demo",
            "model.tokenizer=null",
            "model.generation_max_length=12",
            f"lang={'en' if english_only else 'hi'}",
        ]
    else:
        overrides = [
            "experiment=demo_ctc",
            f"model.vocab_cache_dir={run / 'vocab'}",
            "model.freeze_feature_encoder=true",
        ]  # as model=wav2vec2_ctc fine-tunes a checkpoint
        overrides += ["model.attn_implementation=eager"] if kind.startswith("wavlm") else []  # no SDPA
    train(compose_config([*overrides, *SHORT, f"model.name_or_path={replica}"], run))


def _evaluate(export: Path, out: Path, english_only: bool) -> list[str]:
    overrides = [
        f"checkpoint={export}",
        "data=demo",
        f"max_eval_samples={UTTERANCES}",
        "batch_size=1",
        "generation_max_length=12",
        f"lang={'en' if english_only else 'hi'}",
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluate(compose_config(overrides, out, config_name="evaluate"))
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    return [row["hypothesis"] for row in rows]


@pytest.mark.parametrize(("family", "kind"), CASES, ids=[kind for _, kind in CASES])
def test_a_replica_fine_tunes_and_its_export_hears_what_training_heard(family, kind, tmp_path: Path) -> None:
    build = build_whisper_replica if family == "whisper" else build_ctc_replica
    replica = build(kind, tmp_path / "replica")
    run = tmp_path / "run"
    _fine_tune(family, kind, replica, run)

    results = json.loads((run / "metrics.json").read_text())
    assert results["global_step"] == 2 and results["test"]["num_samples"] == UTTERANCES
    trained = [json.loads(line) for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    heard_in_training = [row["hypothesis"] for row in trained]
    heard_by_evaluate = _evaluate(run / "export", tmp_path / "evaluate", "english" in kind)
    _, heard_by_pipeline = transcribe_demo_test_files(run / "export", count=UTTERANCES)
    assert heard_by_evaluate == heard_in_training
    assert [text.strip() for text in heard_by_pipeline] == [text.strip() for text in heard_in_training]
    _check_export(family, kind, replica, run / "export")


def _check_export(family: str, kind: str, replica: Path, export: Path) -> None:
    """What the export keeps of the replica's layout and what it says about decoding."""
    if family == "whisper":  # decodes as training's evaluation did
        generation = GenerationConfig.from_pretrained(export)
        assert generation.max_length == 12
        assert generation.language == (None if "english" in kind else "hi")
        return
    published, exported = AutoConfig.from_pretrained(replica), AutoConfig.from_pretrained(export)
    assert all(getattr(exported, key) == getattr(published, key) for key in LAYOUT)
    assert exported.ctc_loss_reduction == "mean" and exported.ctc_zero_infinity  # asrkit's options applied
    normalize = AutoFeatureExtractor.from_pretrained(replica).do_normalize
    assert AutoFeatureExtractor.from_pretrained(export).do_normalize == normalize
    conv = "feature_extractor.conv_layers.0.conv.weight"  # frozen while fine-tuning: the replica's own
    weights = [load_file(directory / "model.safetensors") for directory in (replica, export)]
    loaded, kept = ([value for key, value in w.items() if key.endswith(conv)] for w in weights)
    assert len(loaded) == len(kept) == 1 and torch.equal(loaded[0], kept[0])


def _predictions(path: Path) -> dict[int, str]:
    return {row["id"]: row["hypothesis"] for row in map(json.loads, path.read_text().splitlines())}


def _folder_with_a_long_test_utterance(folder: Path) -> None:
    """An audiofolder of demo utterances whose test split also holds one of 6 s (three, with pauses)."""
    splits = {
        "train": demo_rows("train")[:16],
        "validation": demo_rows("validation")[:2],
        "test": demo_rows("test")[:3],
    }
    for split, rows in splits.items():
        (folder / split).mkdir(parents=True)
        entries = [("file_name", "text")]
        for row in rows:
            shutil.copy(row["file_name"], folder / split / Path(row["file_name"]).name)
            entries.append((Path(row["file_name"]).name, row["text"]))
        if split == "test":
            parts, pause = demo_rows("test")[3:6], np.zeros(8_000, np.float32)
            clips = [soundfile.read(row["file_name"], dtype="float32")[0] for row in parts]
            audio = np.concatenate([piece for clip in clips for piece in (clip, pause)])
            audio = np.pad(audio, (0, max(0, 96_000 - len(audio))))  # at least 6 s
            soundfile.write(folder / split / "long.flac", audio, 16_000)
            entries.append(("long.flac", " ".join(r["text"] for r in parts)))
        with open(folder / split / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(entries)


def test_a_test_utterance_longer_than_the_window_is_heard_whole_by_training_and_evaluate(tmp_path) -> None:
    """The demo Whisper's window is 3 s: a 6 s test utterance used to be dropped from the test set."""
    _folder_with_a_long_test_utterance(tmp_path / "data")
    data = ["data=audiofolder", f"data.data_dir={tmp_path / 'data'}", "data.duration_column=null"]
    run = tmp_path / "run"
    train(compose_config(["experiment=demo", *SHORT, *data, "model.generation_max_length=12"], run))
    results = json.loads((run / "metrics.json").read_text())
    assert results["test"]["num_samples"] == 4 and results["left_out"]["test"]["utterances"] == 0
    overrides = [f"checkpoint={run / 'export'}", *data, "batch_size=4"]
    with contextlib.redirect_stdout(io.StringIO()):
        scores = evaluate(compose_config(overrides, tmp_path / "evaluate", config_name="evaluate"))
    assert scores["num_samples"] == 4
    heard_by_evaluate = _predictions(tmp_path / "evaluate" / "predictions.jsonl")
    assert heard_by_evaluate == _predictions(run / "test_predictions.jsonl")
