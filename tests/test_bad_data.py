"""Bad data, all counted: every kind of bad example is dropped under its own reason on both data paths, the
counts reach metrics.json, a split with nothing left is an error, and stereo / 44.1 kHz audio is converted."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from asrkit.config import asset_path
from asrkit.data.datamodule import ASRDataModule
from asrkit.data.filtering import decode_kept, header_duration
from asrkit.evaluate import evaluate
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config

DEMO = Path(asset_path("demo_speech"))
LONG_TEXT = " ".join(["गाँव पिता सुबह सूरज"] * 200)  # far over Whisper's 448 label tokens
AUDIO_REASONS = {"missing file": 1, "empty file": 1, "unreadable audio": 3, "no samples": 1, "silent audio": 2}


def _noise(seconds: float, peak: float, rate: int = 16_000, channels: int = 1) -> np.ndarray:
    samples = np.random.default_rng(0).uniform(-peak, peak, (int(rate * seconds), channels)).astype(np.float32)
    return samples[:, 0] if channels == 1 else samples


def _salt(folder: Path) -> list[dict[str, str]]:
    """Every kind of bad example, written into ``folder``: its metadata rows (file_name, text, duration)."""
    for number in range(3):  # three of one reason: the log names at most three files per reason
        (folder / f"corrupt{number}.wav").write_bytes(b"these bytes are no audio" * 40)
    (folder / "empty.wav").write_bytes(b"")
    soundfile.write(folder / "no_samples.wav", np.zeros(0, np.float32), 16_000, format="WAV")  # a header only
    soundfile.write(folder / "zeros.flac", np.zeros(16_000, np.float32), 16_000, format="FLAC")
    soundfile.write(folder / "hiss.wav", _noise(1.0, 5e-5), 16_000, subtype="FLOAT")  # below -80 dBFS: silent
    soundfile.write(folder / "quiet.wav", _noise(1.0, 2e-3), 16_000, subtype="FLOAT")  # -54 dBFS: kept
    soundfile.write(folder / "stereo44k.wav", _noise(1.5, 0.1, 44_100, channels=2), 44_100)  # kept, converted
    soundfile.write(folder / "long.flac", _noise(4.0, 0.1), 16_000, format="FLAC")  # over the 3 s window
    shutil.copy(DEMO / "train" / "train_0000.flac", folder / "no_text.flac")
    shutil.copy(DEMO / "train" / "train_0001.flac", folder / "blank_text.flac")
    shutil.copy(DEMO / "train" / "train_0002.flac", folder / "long_label.flac")
    names = ["corrupt0.wav", "corrupt1.wav", "corrupt2.wav", "empty.wav", "missing.wav", "no_samples.wav"]
    rows = [{"file_name": name, "text": "पानी", "duration": ""} for name in names]  # bad headers: read up front
    rows += [  # durations given: the headers are not read, these are only known once decoded
        {"file_name": "zeros.flac", "text": "पानी", "duration": "1.0"},
        {"file_name": "hiss.wav", "text": "पानी", "duration": "1.0"},
        {"file_name": "quiet.wav", "text": "पानी", "duration": "1.0"},
        {"file_name": "stereo44k.wav", "text": "पानी", "duration": ""},
        {"file_name": "long.flac", "text": "पानी", "duration": ""},
        {"file_name": "no_text.flac", "text": "", "duration": ""},
        {"file_name": "blank_text.flac", "text": "  \t ", "duration": ""},
        {"file_name": "long_label.flac", "text": LONG_TEXT, "duration": ""},
    ]
    return rows


def _write_metadata(folder: Path, rows: list[dict[str, str]]) -> None:
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["file_name", "text", "duration"])
        writer.writeheader()
        writer.writerows(rows)


def _salted_folder(root: Path, good: int = 6) -> Path:
    """An audiofolder whose train, validation and test splits hold ``good`` demo utterances and every bad kind."""
    with open(DEMO / "train" / "metadata.csv", newline="", encoding="utf-8") as f:
        demo = list(csv.DictReader(f))[10 : 10 + good]
    for split in ("train", "validation", "test"):
        folder = root / split
        folder.mkdir(parents=True)
        for row in demo:
            shutil.copy(DEMO / "train" / row["file_name"], folder / row["file_name"])
        _write_metadata(folder, _salt(folder) + demo)  # the bad rows first: data.max_eval_samples keeps them
    return root


def _datamodule(root: Path, collator, **kwargs) -> ASRDataModule:
    settings = dict(
        path="audiofolder",
        data_dir=str(root),
        train_split="train",
        validation_split="validation",
        test_split="test",
        duration_column="duration",
        global_batch_size=4,
        collator=collator,
    )
    return ASRDataModule(**(settings | kwargs))


def _read_all(datamodule: ASRDataModule, loader, limit: int = 20) -> list[dict]:
    """The batches of ``loader`` (at most ``limit``: a training stream never ends) as Lightning hands them to the
    model, through on_before_batch_transfer."""
    batches = (datamodule.on_before_batch_transfer(batch, 0) for batch in itertools.islice(loader, limit))
    return [batch for batch in batches if batch is not None]


def test_each_bad_file_is_told_apart_by_its_header_or_its_samples(tmp_path: Path) -> None:
    _salt(tmp_path)
    in_header = {
        "corrupt0.wav": "unreadable audio",
        "empty.wav": "empty file",
        "missing.wav": "missing file",
        "no_samples.wav": "no samples",
    }
    for name, reason in in_header.items():
        assert header_duration({"path": str(tmp_path / name), "bytes": None}) == (None, reason), name
        assert decode_kept({"path": str(tmp_path / name), "bytes": None}, 16_000) == (None, reason), name
    assert header_duration({"path": "empty.wav", "bytes": b""}) == (None, "empty file")  # stored, 0 bytes
    for name in ("zeros.flac", "hiss.wav"):  # a fine header; silence is only heard
        assert header_duration({"path": str(tmp_path / name), "bytes": None}) == (1.0, None)
        assert decode_kept({"path": str(tmp_path / name), "bytes": None}, 16_000) == (None, "silent audio")
    quiet, reason = decode_kept({"path": str(tmp_path / "quiet.wav"), "bytes": None}, 16_000)
    assert reason is None and len(quiet) == 16_000


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_stereo_44k_audio_is_kept_and_decoded_to_mono_16k(tmp_path: Path, collator, streaming: bool) -> None:
    root = _salted_folder(tmp_path)
    datamodule = _datamodule(root, collator, streaming=streaming)
    datamodule.setup("test")
    batches = _read_all(datamodule, datamodule.test_dataloader())
    if streaming:
        examples = [e for e, _, _ in datamodule.splits.datasets["test"] if e is not None and e != "end of pass"]
    else:
        test = datamodule.splits.datasets["test"]
        examples = [test[i] for i in range(len(test)) if isinstance(test[i], dict)]
    stereo = [e for e in examples if e["audio"].ndim == 1 and len(e["audio"]) == 24_000]  # 1.5 s at 16 kHz, mono
    assert len(stereo) == 1 and stereo[0]["audio"].dtype == np.float32
    assert sum(batch["num_samples"] for batch in batches) == len(examples) == 6 + 4  # quiet, stereo, long, label


EVAL_DROPS = AUDIO_REASONS | {"empty transcript": 2}  # evaluation keeps any duration and label length
TRAIN_DROPS = EVAL_DROPS | {"duration outside [0.0, 3.0] s": 1, "label longer than 448 tokens": 1}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_map_style_counts_each_reason_up_front_and_once_decoded(tmp_path: Path, collator, caplog, num_workers) -> None:
    datamodule = _datamodule(_salted_folder(tmp_path), collator, num_workers=num_workers)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
    up_front = {reason: n for reason, n in TRAIN_DROPS.items() if reason != "silent audio"}
    assert datamodule.excluded["train"]["reasons"] == up_front  # silence is not in any header
    assert "dropped 3 of 20 examples: unreadable audio (first: " in caplog.text
    assert "empty.wav" in caplog.text and "missing.wav" in caplog.text and "no_samples.wav" in caplog.text
    for _ in range(2):  # two epochs: a file dropped again is not counted again
        batches = _read_all(datamodule, datamodule.train_dataloader())
    assert sum(batch["num_skipped"] for batch in batches) == 2  # the silent two, skipped in their batches
    assert "dropped" not in batches[0]  # taken off before the model sees the batch
    assert datamodule.excluded["train"]["reasons"] == TRAIN_DROPS
    assert datamodule.excluded["train"]["utterances"] == sum(TRAIN_DROPS.values())
    _read_all(datamodule, datamodule.val_dataloader())
    assert datamodule.excluded["validation"]["reasons"] == EVAL_DROPS


def test_streaming_counts_each_reason(tmp_path: Path, collator, caplog) -> None:
    datamodule = _datamodule(_salted_folder(tmp_path), collator, streaming=True)
    datamodule.setup("fit")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # validated twice: each drop counted once
            batches = _read_all(datamodule, datamodule.val_dataloader())
    assert datamodule.excluded["validation"]["reasons"] == EVAL_DROPS
    assert sum(batch["num_samples"] for batch in batches) == 6 + 4
    assert re.search(r"unreadable audio \(first: \S*corrupt0.wav, \S*corrupt1.wav, \S*corrupt2.wav\)", caplog.text)
    assert re.search(r"silent audio \(first: \S*zeros.flac, \S*hiss.wav\)", caplog.text)


def test_a_run_that_loads_preprocessed_rows_still_reports_what_was_dropped(tmp_path: Path, collator) -> None:
    root = _salted_folder(tmp_path / "speech")
    settings = {"preprocessed_dir": str(tmp_path / "preprocessed")}
    first = _datamodule(root, collator, **settings)
    first.preprocess()
    later = _datamodule(root, collator, **settings)
    later.setup("fit")
    assert later.excluded["train"] == first.excluded["train"]
    assert later.excluded["train"]["reasons"] == {r: n for r, n in TRAIN_DROPS.items() if r != "silent audio"}


def _all_bad(root: Path, silent_only: bool) -> Path:
    """The salted folder with the good utterances left out of the training split (and, with ``silent_only``,
    every training example silent)."""
    root = _salted_folder(root)
    rows = _salt(root / "train")
    if silent_only:
        rows = [row for row in rows if row["file_name"] in ("zeros.flac", "hiss.wav")]
    else:
        rows = [row for row in rows if row["file_name"] not in ("quiet.wav", "stereo44k.wav", "zeros.flac", "hiss.wav")]
    _write_metadata(root / "train", rows)
    return root


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_a_split_with_nothing_left_is_an_error_naming_the_split_and_the_reasons(
    tmp_path: Path, collator, streaming: bool
) -> None:
    datamodule = _datamodule(_all_bad(tmp_path, silent_only=False), collator, streaming=streaming)
    with pytest.raises(ValueError, match=r"train split.*'missing file': 1.*") as error:
        datamodule.setup("fit")
        _read_all(datamodule, datamodule.train_dataloader())
    assert "'unreadable audio': 3" in str(error.value) and "'empty transcript': 2" in str(error.value)


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_a_split_that_is_all_silence_is_an_error_once_read(tmp_path: Path, collator, streaming: bool) -> None:
    datamodule = _datamodule(_all_bad(tmp_path / "silent", silent_only=True), collator, streaming=streaming)
    datamodule.setup("fit")  # the headers are fine
    with pytest.raises(ValueError, match=r"train split.*\{'silent audio': 2\}"):
        for _ in range(2):
            _read_all(datamodule, datamodule.train_dataloader())


def test_a_short_run_and_its_evaluation_write_every_reason_to_metrics_json(tmp_path: Path) -> None:
    """The demo speech salted with every bad kind: the run trains, and metrics.json counts each one (so does the
    evaluation of its export, whose silent test files are only found when read)."""
    data = tmp_path / "speech"
    shutil.copytree(DEMO, data)
    for split in ("train", "validation", "test"):
        with open(data / split / "metadata.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))[:12]  # one training batch an epoch: every example is met in two steps
        _write_metadata(data / split, _salt(data / split) + rows)
    run = tmp_path / "run"
    overrides = [f"data.data_dir={data}", "trainer.max_steps=2", "data.max_eval_samples=null"]
    train(compose_config(TINY_RUN + overrides, run))
    results = json.loads((run / "metrics.json").read_text())
    assert results["global_step"] == 2
    assert results["data"]["dropped"]["train"] == TRAIN_DROPS
    assert results["data"]["dropped"]["validation"] == results["data"]["dropped"]["test"] == EVAL_DROPS
    assert results["left_out"]["test"]["utterances"] == sum(EVAL_DROPS.values())
    assert results["test"]["num_samples"] == 12 + 4

    evaluation = [f"checkpoint={run / 'export'}", "data=demo", f"data.data_dir={data}", "generation_max_length=8"]
    scores = evaluate(compose_config(evaluation, tmp_path / "evaluate", config_name="evaluate"))
    assert scores["left_out"]["reasons"] == EVAL_DROPS and scores["num_skipped"] == 2  # the silent two
