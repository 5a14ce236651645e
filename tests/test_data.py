"""Data pipeline: splits, cheap durations, filters with counted drops, lazy decoding that skips bad files."""

from __future__ import annotations

import csv
import itertools
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from asrkit.batch_plan import BatchPlan
from asrkit.config import asset_path
from asrkit.data.audio import AudioDecodeError, audio_duration, decode_audio
from asrkit.data.datamodule import ASRDataModule
from asrkit.data.padding import IGNORE_INDEX
from asrkit.models.whisper_collator import WhisperCollator

DEMO = Path(asset_path("demo_speech"))


@pytest.mark.parametrize(
    ("global_batch", "per_device", "world", "expected"),
    [(64, 16, 1, 4), (64, 8, 8, 1), (256, 8, 8, 4), (64, None, 8, 1), (32, 4, 1, 8)],
)
def test_gradient_accumulation_is_derived_from_world_size(global_batch, per_device, world, expected) -> None:
    assert BatchPlan.make(global_batch, per_device, world).accumulation == expected


@pytest.mark.parametrize(("global_batch", "per_device", "world"), [(64, 16, 8), (100, 16, 1), (4, None, 8)])
def test_global_batch_that_does_not_divide_is_an_error(global_batch, per_device, world) -> None:
    with pytest.raises(ValueError, match="data.global_batch_size"):
        BatchPlan.make(global_batch, per_device, world)


def test_header_durations_match_the_metadata_column() -> None:
    with open(DEMO / "test" / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:10]
    for row in rows:
        measured = audio_duration({"path": str(DEMO / "test" / row["file_name"]), "bytes": None})
        assert measured == pytest.approx(float(row["duration"]), abs=1e-3)


def test_decode_resamples_to_16k_mono(tmp_path: Path) -> None:
    stereo = np.random.default_rng(0).uniform(-0.5, 0.5, (44_100, 2)).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", stereo, 44_100)
    samples = decode_audio({"path": str(tmp_path / "a.wav"), "bytes": None})
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 16_000) <= 1
    with pytest.raises(AudioDecodeError, match="missing.wav"):
        decode_audio({"path": str(tmp_path / "missing.wav"), "bytes": None})


def _small_audiofolder(root: Path, count: int = 6) -> list[dict[str, str]]:
    """A train/validation/test audiofolder holding copies of the first demo utterances, without durations."""
    with open(DEMO / "train" / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:count]
    for split in ("train", "validation", "test"):
        (root / split).mkdir(parents=True)
        for row in rows:
            shutil.copy(DEMO / "train" / row["file_name"], root / split / row["file_name"])
        with open(root / split / "metadata.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["file_name", "text"])
            writer.writeheader()
            writer.writerows({"file_name": r["file_name"], "text": r["text"]} for r in rows)
    return rows


def _datamodule(root: Path, collator: WhisperCollator, **kwargs) -> ASRDataModule:
    settings = dict(
        path="audiofolder",
        data_dir=str(root),
        train_split="train",
        validation_split="validation",
        test_split="test",
        global_batch_size=4,
        collator=collator,
    )
    return ASRDataModule(**(settings | kwargs))


def test_bad_and_out_of_range_audio_is_counted_and_dropped(tmp_path: Path, collator, caplog) -> None:
    rows = _small_audiofolder(tmp_path)
    (tmp_path / "train" / rows[0]["file_name"]).write_bytes(b"not audio at all" * 64)  # unreadable header
    long_audio = np.zeros(16_000 * 4, dtype=np.float32)  # 4 s: longer than the 3 s model window
    soundfile.write(tmp_path / "train" / rows[1]["file_name"], long_audio, 16_000, format="FLAC")
    datamodule = _datamodule(tmp_path, collator, max_duration_in_seconds=30.0)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
    assert len(datamodule.splits.datasets["train"]) == len(rows) - 2
    assert len(datamodule.splits.datasets["validation"]) == len(rows)
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "dropped 1 of 6 examples: unreadable audio" in messages
    assert "dropped 1 of 6 examples: duration outside [0.0, 3.0] s" in messages  # clamped to the window


def test_file_that_breaks_after_indexing_is_skipped_in_the_batch(tmp_path: Path, collator, caplog) -> None:
    rows = _small_audiofolder(tmp_path, count=4)
    datamodule = _datamodule(tmp_path, collator)
    datamodule.setup("fit")
    (tmp_path / "train" / rows[2]["file_name"]).write_bytes(b"corrupted later")
    with caplog.at_level(logging.WARNING):
        batch = next(iter(datamodule.train_dataloader()))
    assert batch["num_skipped"] == 1 and batch["num_samples"] == 3
    assert batch["input_features"].shape == (3, 80, 300)
    assert rows[2]["file_name"] in caplog.text


def test_overlong_labels_are_dropped_with_a_count(tmp_path: Path, collator, caplog) -> None:
    rows = _small_audiofolder(tmp_path)
    lengths = sorted(len(ids) for ids in collator.encode_text([row["text"] for row in rows]))
    limit = lengths[len(lengths) // 2]
    too_long = sum(length > limit for length in lengths)
    assert 0 < too_long < len(rows)
    collator.max_label_length = limit
    try:
        datamodule = _datamodule(tmp_path, collator)
        with caplog.at_level(logging.WARNING):
            datamodule.setup("fit")
    finally:
        collator.max_label_length = 448
    kept = collator.encode_text(list(datamodule.splits.datasets["train"].dataset["text"]))
    assert len(kept) == len(rows) - too_long and max(len(ids) for ids in kept) <= limit
    assert f"dropped {too_long} of {len(rows)} examples: label longer than {limit} tokens" in caplog.text


def test_whisper_batch_layout(collator) -> None:
    datamodule = ASRDataModule(
        path="audiofolder",
        data_dir=str(DEMO),
        train_split="validation",
        validation_split="validation",
        duration_column="duration",
        global_batch_size=4,
        max_train_samples=4,
        collator=collator,
    )
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    labels = batch["labels"]
    prefix = collator.tokenizer.convert_tokens_to_ids(["<|hi|>", "<|transcribe|>", "<|notimestamps|>"])
    assert labels[:, :3].tolist() == [prefix] * len(labels)  # the model prepends <|startoftranscript|>
    eos = collator.tokenizer.eos_token_id
    for row, reference in zip(labels.tolist(), batch["references"], strict=True):
        ids = [t for t in row if t != IGNORE_INDEX]
        assert ids[-1] == eos
        assert collator.tokenizer.decode(ids, skip_special_tokens=True) == reference
    assert batch["audio_seconds"] == pytest.approx(sum(datamodule.splits.durations["validation"][:4]), abs=0.01)


def test_validation_and_test_are_scored_whole_unless_an_eval_filter_is_set(tmp_path: Path, collator) -> None:
    """The training filter (and the model's 3 s window) used to shrink the test set silently."""
    rows = _small_audiofolder(tmp_path)
    for split in ("train", "test"):  # one utterance of 4 s: longer than the 3 s model window
        path = tmp_path / split / rows[1]["file_name"]
        soundfile.write(path, np.zeros(64_000, np.float32), 16_000, format="FLAC")
    whole = _datamodule(tmp_path, collator)
    whole.setup("fit")
    whole.setup("test")
    assert len(whole.splits.datasets["train"]) == len(rows) - 1  # training keeps to the window
    assert len(whole.splits.datasets["test"]) == len(whole.splits.datasets["validation"]) == len(rows)
    assert whole.excluded["test"] == {"utterances": 0, "hours": 0.0, "reasons": {}}

    filtered = _datamodule(tmp_path, collator, eval_max_duration_in_seconds=3.0)
    filtered.setup("test")
    assert len(filtered.splits.datasets["test"]) == len(rows) - 1
    assert filtered.excluded["test"] == {
        "utterances": 1,
        "hours": pytest.approx(4 / 3600),
        "reasons": {"duration outside [0.0, 3.0] s": 1},
    }


def test_evaluation_batches_can_come_longest_first(tmp_path: Path, collator) -> None:
    """asrkit.evaluate's order: batches of similar durations (less padding), every utterance once."""
    _small_audiofolder(tmp_path, count=7)
    datamodule = _datamodule(tmp_path, collator, eval_batch_size=3)
    datamodule.setup("test")
    durations = datamodule.splits.durations["test"]
    assert len(set(durations)) > 1
    in_order = [batch["indices"] for batch in datamodule.test_dataloader()]
    assert in_order == [[0, 1, 2], [3, 4, 5], [6]]  # Lightning's call: the split's order
    batches = [batch["indices"] for batch in datamodule.test_dataloader(longest_first=True)]
    assert [len(batch) for batch in batches] == [3, 3, 1]
    assert sorted(sum(batches, [])) == list(range(7))
    assert [durations[index] for index in sum(batches, [])] == sorted(durations, reverse=True)


def test_missing_transcripts_are_kept_when_text_is_not_required(tmp_path: Path, collator) -> None:
    rows = _small_audiofolder(tmp_path, count=4)
    for split in ("train", "validation", "test"):  # no transcript at all: empty metadata cells
        lines = (tmp_path / split / "metadata.csv").read_text().splitlines()
        empty = [f"{row['file_name']}," for row in rows]
        (tmp_path / split / "metadata.csv").write_text("\n".join([lines[0], *empty]))
    datamodule = _datamodule(tmp_path, collator, require_text=False)
    datamodule.setup("fit")
    assert datamodule.splits.datasets["train"].dataset[0]["text"] is None  # what datasets makes of an empty cell
    example = datamodule.splits.datasets["train"][0]
    assert example["text"] == example["reference"] == "" and len(example["audio"]) > 0


def test_references_are_scored_as_the_labels_are_written(tmp_path: Path, collator) -> None:
    """A model that outputs its training label exactly scores 0, whatever data.chars_to_ignore deletes."""
    from asrkit.metrics import error_rates

    rows = _small_audiofolder(tmp_path, count=2)
    sentence = "Twenty-one rock'n'roll fans, all well-known."
    for split in ("train", "validation", "test"):
        lines = [f'{r["file_name"]},"{sentence}"' for r in rows]
        (tmp_path / split / "metadata.csv").write_text("\n".join(["file_name,text", *lines]))
    recipe = [",", "?", ".", "!", "-", ";", ":", '"', "“", "%", "‘", "”", "�"]  # run_speech_recognition_ctc's
    datamodule = _datamodule(tmp_path, collator, chars_to_ignore=recipe, do_lower_case=True)
    datamodule.setup("test")
    example = datamodule.splits.datasets["test"][0]
    assert example["text"] == "twentyone rock'n'roll fans all wellknown"
    assert example["reference"] == example["text"]
    assert error_rates([example["reference"]], [example["text"]]) == {
        "wer_raw": 0.0,
        "wer": 0.0,
        "cer": 0.0,
        "num_samples": 1.0,
    }


def _stereo_44k(path: Path, seconds: float) -> None:
    """A readable stereo 44.1 kHz WAV of ``seconds`` (what a user's own recordings often are)."""
    samples = np.random.default_rng(0).uniform(-0.1, 0.1, (int(44_100 * seconds), 2)).astype(np.float32)
    soundfile.write(path, samples, 44_100, format="WAV")


def _with_duration_column(root: Path, rows: list[dict[str, str]], empty: set[int]) -> None:
    """metadata.csv with a duration column whose cells are empty for the rows in ``empty``."""
    for split in ("train", "validation", "test"):
        with open(root / split / "metadata.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["file_name", "text", "duration"])
            writer.writeheader()
            for number, row in enumerate(rows):
                seconds = "" if number in empty else f"{soundfile.info(root / split / row['file_name']).duration:.3f}"
                writer.writerow({"file_name": row["file_name"], "text": row["text"], "duration": seconds})


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_a_row_with_an_empty_duration_cell_is_kept_when_its_file_is_readable(
    tmp_path: Path, collator, caplog, streaming: bool
) -> None:
    rows = _small_audiofolder(tmp_path, count=4)
    for row in rows[:2]:  # two good stereo 44.1 kHz recordings, their duration cells left empty
        for split in ("train", "validation", "test"):
            (tmp_path / split / row["file_name"]).unlink()
            _stereo_44k(tmp_path / split / row["file_name"].replace(".flac", ".wav"), 1.5)
        row["file_name"] = row["file_name"].replace(".flac", ".wav")
    _with_duration_column(tmp_path, rows, empty={0, 1})
    datamodule = _datamodule(tmp_path, collator, duration_column="duration", streaming=streaming)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
    if streaming:
        kept = [example for example, _, _ in itertools.islice(iter(datamodule.splits.datasets["train"]), len(rows))]
        assert all(example is not None for example in kept)
        assert {len(example["audio"]) for example in kept[:2]} == {24_000}  # 1.5 s, mono, resampled to 16 kHz
    else:
        assert len(datamodule.splits.datasets["train"]) == len(rows)
        assert datamodule.splits.durations["train"][:2] == pytest.approx([1.5, 1.5])  # from the headers
    assert "dropped" not in caplog.text


def test_each_drop_reason_is_counted_on_its_own(tmp_path: Path, collator) -> None:
    rows = _small_audiofolder(tmp_path, count=6)
    (tmp_path / "train" / rows[0]["file_name"]).write_bytes(b"not audio at all" * 64)  # unreadable header
    rows[1]["text"] = ""  # a readable file without a transcript
    soundfile.write(tmp_path / "train" / rows[2]["file_name"], np.zeros(16_000 * 4, np.float32), 16_000, format="FLAC")
    with open(tmp_path / "train" / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["file_name", "text"])
        writer.writeheader()
        writer.writerows({"file_name": r["file_name"], "text": r["text"]} for r in rows)
    datamodule = _datamodule(tmp_path, collator)
    datamodule.setup("fit")
    assert datamodule.excluded["train"]["reasons"] == {
        "unreadable audio": 1,
        "empty transcript": 1,
        "duration outside [0.0, 3.0] s": 1,
    }
