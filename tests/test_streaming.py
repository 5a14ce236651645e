"""Streaming: on-the-fly filtering and decoding, per-pass reshuffles, disjoint DDP ranks, exact resumption."""

from __future__ import annotations

import copy
import io
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch

from asrkit.data import filtering, streaming
from asrkit.data.datamodule import ASRDataModule
from asrkit.models.whisper_collator import WhisperCollator
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config, subprocess_env
from tests.hub_repo import build_hub_repo

SIZES = {"train": 12, "validation": 6, "test": 5}


@pytest.fixture(autouse=True)
def _short_pause_at_stream_ends(monkeypatch) -> None:
    """datasets sleeps 5 s wherever a multi-shard parquet stream ends (apache/arrow#45214); tests end many."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.01)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two parquet shards per split, transcripts numbered so that every example is told apart by its text."""
    root = tmp_path_factory.mktemp("stream") / "speech"
    build_hub_repo(root, SIZES, shards=2, duration_column="seconds", texts=lambda text, n: f"{n:03d} {text}")
    return root


def _datamodule(root: Path, collator: WhisperCollator, rank: int | None = None, **kwargs) -> ASRDataModule:
    settings = dict(
        path=str(root),
        name="hi",
        train_split="train+validation",
        validation_split="test",
        test_split="test",
        text_column="sentence",
        global_batch_size=4,
        streaming=True,
        shuffle_buffer_size=0,
        collator=collator,
    )
    datamodule = ASRDataModule(**(settings | kwargs))
    if rank is not None:  # what Lightning's DDP gives the datamodule before setup
        datamodule.trainer = SimpleNamespace(global_rank=rank, world_size=2)
    datamodule.setup("fit")
    return datamodule


def _one_pass(stream: streaming.AudioTextStream) -> list[str]:
    """The references of the examples of the first pass over an (endless) training stream."""
    texts = []
    for example, position, _ in stream:
        if position is not None and position["pass"] > 0:
            break
        texts.append(example["reference"])
    return texts


def _number(text: str) -> int:
    return int(text.split()[0])


def test_evaluation_streams_read_each_example_once_in_order(repo: Path, collator) -> None:
    streamed = _datamodule(repo, collator)
    indexed = _datamodule(repo, collator, streaming=False)
    references = [r for batch in streamed.val_dataloader() for r in batch["references"]]
    assert references == [r for batch in indexed.val_dataloader() for r in batch["references"]]
    assert len(references) == SIZES["test"] and "stream_position" not in next(iter(streamed.val_dataloader()))


def test_the_first_examples_of_a_split_are_the_same_streamed_or_indexed(repo: Path, collator) -> None:
    """What the validation report plays back: the split's first usable examples, decoded, in the loaders' order."""
    streamed = _datamodule(repo, collator).examples("validation", 3)
    indexed = _datamodule(repo, collator, streaming=False).examples("validation", 3)
    first = [r for batch in _datamodule(repo, collator).val_dataloader() for r in batch["references"]][:3]
    assert [example["reference"] for example in streamed] == [example["reference"] for example in indexed] == first
    for a, b in zip(streamed, indexed, strict=True):
        assert a["sampling_rate"] == b["sampling_rate"] == 16000 and a["audio"].shape == b["audio"].shape
        assert (a["audio"] == b["audio"]).all() and a["audio"].size > 0


def test_training_never_runs_out_and_reshuffles_every_pass(repo: Path, collator) -> None:
    stream = _datamodule(repo, collator, shuffle_buffer_size=5).splits.datasets["train"]
    passes: dict[int, list[int]] = {}
    for example, position, _ in stream:
        if position["pass"] == 3:
            break
        passes.setdefault(position["pass"], []).append(_number(example["reference"]))
    everything = SIZES["train"] + SIZES["validation"]
    assert all(sorted(numbers) == list(range(everything)) for numbers in passes.values())
    assert len({tuple(numbers) for numbers in passes.values()}) == 3, passes  # three different orders


def test_a_worker_moving_to_its_next_pass_leaves_the_epoch_other_workers_read(repo: Path, collator) -> None:
    """datasets keeps the epoch in a tensor shared by all DataLoader workers; a worker that wrote its own pass
    there made a slower worker (re)start with the wrong epoch: a resumed stream then loaded its saved state into
    the wrong pass or failed to load it (seen in CI as an IndexError in a worker)."""
    stream = _datamodule(repo, collator).splits.datasets["train"]
    for _, position, _ in stream:
        if position["pass"] == 2:
            break
    assert stream.dataset.epoch == 0


@pytest.mark.parametrize("split", ["train+validation", "test"], ids=["whole-shards", "every-other-example"])
def test_two_ddp_ranks_read_disjoint_parts(repo: Path, collator, split: str) -> None:
    """4 shards split by shard between 2 ranks; 2 shards of 5 examples need the per-example split."""
    parts = []
    for rank in (0, 1):
        datamodule = _datamodule(repo, collator, rank=rank, train_split=split, shuffle_buffer_size=4)
        train_part = [_number(t) for t in _one_pass(datamodule.splits.datasets["train"])]
        parts.append((train_part, [_number(r) for b in datamodule.val_dataloader() for r in b["references"]]))
    (train0, val0), (train1, val1) = parts
    assert train0 and train1 and not set(train0) & set(train1)
    full = _one_pass(_datamodule(repo, collator, train_split=split).splits.datasets["train"])
    assert sorted(train0 + train1) == sorted(_number(t) for t in full)
    assert val0 and val1 and not set(val0) & set(val1) and len(val0 + val1) == SIZES["test"]


def _consume(datamodule: ASRDataModule, batches: int) -> list[list[str]]:
    """Train on ``batches`` batches as Lightning does: each goes through on_before_batch_transfer."""
    loader, seen = iter(datamodule.train_dataloader()), []
    for _ in range(batches):
        batch = datamodule.on_before_batch_transfer(next(loader), 0)
        assert "stream_position" not in batch  # the model never sees it
        seen.append(batch["references"])
    return seen


def _saved_and_loaded(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)  # as in a Lightning checkpoint
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_at_the_next_unseen_example(repo: Path, collator, monkeypatch, num_workers) -> None:
    uninterrupted = _consume(_datamodule(repo, collator, num_workers=num_workers), 8)  # beyond one pass (18)

    first = _datamodule(repo, collator, num_workers=num_workers)
    assert _consume(first, 2) == uninterrupted[:2]
    state = _saved_and_loaded(copy.deepcopy(first.state_dict()))

    decoded, decode = Counter(), filtering.decode_audio

    def counted_decode(*args, **kwargs):
        decoded["call"] += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(filtering, "decode_audio", counted_decode)
    resumed = _datamodule(repo, collator, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert _consume(resumed, 6) == uninterrupted[2:8]
    if num_workers == 0:  # (workers decode in their own processes, where this counter is not)
        assert decoded["call"] == 6 * 4  # nothing before the saved position was decoded again
    assert resumed.state_dict()["ranks"][0]  # and the positions move on, to be saved again


def test_resume_with_a_shuffle_buffer_repeats_nothing(repo: Path, collator) -> None:
    first = _datamodule(repo, collator, shuffle_buffer_size=6)
    consumed = [_number(r) for batch in _consume(first, 2) for r in batch]
    resumed = _datamodule(repo, collator, shuffle_buffer_size=6)
    resumed.load_state_dict(_saved_and_loaded(first.state_dict()))
    resumed.train_dataloader()  # hands the saved positions to the stream
    rest = [_number(t) for t in _one_pass(resumed.splits.datasets["train"])]
    assert rest and not set(rest) & set(consumed) and len(set(rest)) == len(rest)


def test_a_different_world_size_restarts_the_stream_with_a_warning(repo: Path, collator, caplog) -> None:
    first = _datamodule(repo, collator)
    _consume(first, 1)
    resumed = _datamodule(repo, collator, num_workers=2)
    resumed.load_state_dict(first.state_dict())
    with caplog.at_level(logging.WARNING):
        resumed.train_dataloader()
    assert "starts again from its beginning" in caplog.text and resumed.splits.datasets["train"].resume_from == {}


def test_bad_audio_is_counted_and_skipped(tmp_path: Path, collator, caplog) -> None:
    ids = build_hub_repo(tmp_path, {"train": 6, "test": 2}, corrupt=frozenset({"train_0002.flac"}))
    datamodule = _datamodule(tmp_path, collator, train_split="train")
    with caplog.at_level(logging.WARNING):
        loader = iter(datamodule.train_dataloader())
        batches = [datamodule.on_before_batch_transfer(next(loader), 0) for _ in range(3)]
    assert "train_0002.flac" in ids["hi", "train"]
    assert sum(b["num_skipped"] for b in batches[:2]) == 1 and sum(b["num_samples"] for b in batches[:2]) == 7
    assert "train_0002.flac" in caplog.text and "dropped 1 of 6 examples: unreadable audio" in caplog.text


@pytest.mark.parametrize("duration_column", ["seconds", None], ids=["duration-column", "file-headers"])
def test_durations_are_filtered_on_the_fly(repo: Path, collator, caplog, duration_column) -> None:
    everything = _one_pass(_datamodule(repo, collator, duration_column="seconds").splits.datasets["train"])
    with caplog.at_level(logging.WARNING):
        datamodule = _datamodule(repo, collator, duration_column=duration_column, max_duration_in_seconds=2.0)
        kept = _one_pass(datamodule.splits.datasets["train"])
    assert 0 < len(kept) < len(everything)
    dropped = len(everything) - len(kept)
    assert f"dropped {dropped} of {len(everything)} examples: duration outside [0.0, 2.0] s" in caplog.text


@pytest.mark.slow
def test_a_resumed_streaming_run_continues_the_stream(tmp_path: Path) -> None:
    """Real Lightning runs: the position goes into last.ckpt and the resumed run reads on from it."""
    stream = TINY_RUN + [
        "data.streaming=true",
        "data.shuffle_buffer_size=0",
        "export=false",
        "data.test_split=null",
        "trainer.val_check_interval=100",
    ]
    train(compose_config(stream + ["trainer.max_steps=2"], tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    position = torch.load(last, weights_only=False)["ASRDataModule"]["ranks"][0][0]
    assert (position["pass"], position["count"]) == (0, 2 * 16)

    train(compose_config(stream + ["trainer.max_steps=3", f"resume={last}"], tmp_path / "second"))
    position = torch.load(tmp_path / "second" / "checkpoints" / "last.ckpt", weights_only=False)
    assert (position["ASRDataModule"]["ranks"][0][0]["count"]) == 3 * 16  # not 16: it did not start over


@pytest.mark.slow
def test_two_ddp_processes_stream_their_own_parts_and_save_both_positions(tmp_path: Path) -> None:
    """hw=ddp_cpu: two gloo processes; the checkpoint gathers both ranks' stream positions."""
    changes = {
        "hw": "ddp_cpu",
        "data.streaming": "true",
        "data.shuffle_buffer_size": "0",
        "export": "false",
        "data.test_split": "null",
        "trainer.max_steps": "2",
        "data.per_device_batch_size": "8",
        "data.max_eval_samples": "4",
        "model.generation_max_length": "8",
        "hydra.run.dir": str(tmp_path),
    }
    overrides = dict(item.split("=", 1) for item in TINY_RUN) | changes
    env = subprocess_env()
    command = [sys.executable, "-m", "asrkit", *(f"{key}={value}" for key, value in overrides.items())]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["ASRDataModule"]["ranks"]
    assert [(rank[0]["pass"], rank[0]["count"]) for rank in ranks] == [(0, 2 * 8), (0, 2 * 8)]


def test_a_stream_resumed_at_the_end_of_a_pass_goes_on_to_the_next(repo: Path, collator) -> None:
    stream = _datamodule(repo, collator).splits.datasets["train"]
    for _, position, _ in stream:
        if position["pass"] == 1:
            break
        last = position
    stream.resume_from = {0: last}  # the last example of pass 0 was the last one trained on
    _, position, _ = next(iter(stream))
    assert (position["pass"], position["count"]) == (1, 1)
