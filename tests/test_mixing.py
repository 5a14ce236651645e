"""Mixing sources: interleaving probabilities, concatenation, per-source settings, convention warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import pytest

from asrkit.data.datamodule import ASRDataModule
from asrkit.data.mixing import mix, source_settings, transcript_convention, warn_on_mixed_conventions
from asrkit.data.text import prepare_label_text
from tests.conftest import compose_config
from tests.hub_repo import build_hub_repo

DRAWS = 2_000


@pytest.fixture(autouse=True)
def _short_pause_at_stream_ends(monkeypatch) -> None:
    """datasets sleeps 5 s wherever a multi-shard parquet stream ends (apache/arrow#45214)."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.01)


def _source(label: str, size: int = 3 * DRAWS) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"audio": [None] * size, "text": [f"{label} {i}" for i in range(size)]})


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
@pytest.mark.parametrize("probabilities", [(0.5, 0.5), (0.8, 0.2), (0.1, 0.6, 0.3)])
def test_interleaving_honours_the_probabilities(streaming: bool, probabilities: tuple[float, ...]) -> None:
    parts = {f"s{i}": _source(f"s{i}") for i in range(len(probabilities))}
    if streaming:
        parts = {name: part.to_iterable_dataset(num_shards=4) for name, part in parts.items()}
    mixed = mix(parts, list(probabilities), seed=7)
    drawn = [row["text"].split()[0] for _, row in zip(range(DRAWS), mixed, strict=False)]
    assert len(drawn) == DRAWS
    for name, probability in zip(parts, probabilities, strict=True):
        share = drawn.count(name) / DRAWS
        assert share == pytest.approx(probability, abs=0.035), (name, share)  # > 3.5 standard deviations
    for name in parts:  # each source's examples come in their own order, none twice
        numbers = [
            int(row["text"].split()[1])
            for _, row in zip(range(DRAWS), mixed, strict=False)
            if row["text"].startswith(name + " ")
        ]
        assert numbers == list(range(len(numbers)))


def test_concatenation_keeps_every_example_once_in_order() -> None:
    mixed = mix({"a": _source("a", 3), "b": _source("b", 2)}, strategy="concatenate")
    assert mixed["text"] == ["a 0", "a 1", "a 2", "b 0", "b 1"]
    with pytest.raises(ValueError, match="data.mixing='shuffle'"):
        mix({"a": _source("a", 3)}, strategy="shuffle")


def test_sources_inherit_columns_and_splits_but_not_the_dataset() -> None:
    defaults = {"path": "mix", "name": "hi", "text_column": "sentence", "train_split": "train"}
    settings = source_settings({"x": {"path": "/data/x", "test_split": None}}, defaults)["x"]
    assert settings["text_column"] == "sentence" and settings["train_split"] == "train"
    assert settings["name"] is None and settings["test_split"] is None
    with pytest.raises(ValueError, match="data.sources.x: unknown key.*'weight'"):
        source_settings({"x": {"path": "/data/x", "weight": 2}}, defaults)
    with pytest.raises(ValueError, match="data.sources.x.path is required"):
        source_settings({"x": {"name": "hi"}}, defaults)


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["Hello, world.", "It's fine!"], ("mixed case", "punctuated")),
        (["hello world", "it's fine"], ("lower case", "unpunctuated")),
        (["HELLO WORLD", "IT'S FINE"], ("upper case", "unpunctuated")),
        (["गाँव पिता सुबह।", "छोटा क्षेत्र।"], ("uncased script", "punctuated")),
    ],
)
def test_transcript_conventions(texts: list[str], expected: tuple[str, str]) -> None:
    assert transcript_convention(texts) == expected


def test_a_source_with_another_convention_is_named(caplog) -> None:
    cased = datasets.Dataset.from_dict({"text": ["Good morning, sir.", "See you at Noon!"] * 5})
    plain = datasets.Dataset.from_dict({"text": ["good morning sir", "see you at noon"] * 5})
    with caplog.at_level(logging.WARNING):
        assert warn_on_mixed_conventions({"fleurs": cased, "voxpopuli": plain}, prepare_label_text)
    assert "data.sources.voxpopuli: its transcripts are lower case and unpunctuated" in caplog.text
    assert "those of fleurs are mixed case and punctuated" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # one convention after the datamodule's text preparation
        same = warn_on_mixed_conventions(
            {"fleurs": cased, "voxpopuli": plain},
            lambda t: prepare_label_text(t, do_lower_case=True, do_remove_punctuation=True),
        )
    assert not same and not caplog.text


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_data_mix_through_the_datamodule(tmp_path: Path, collator, caplog, streaming: bool) -> None:
    """conf/data/mix.yaml with two local hub repositories: one cased and punctuated, one plain."""
    build_hub_repo(
        tmp_path / "a",
        {"train": 6, "dev": 3},
        text_column="sentence",
        texts=lambda text, n: f"Number {n}, said {text}.",
    )
    build_hub_repo(
        tmp_path / "b",
        {"train": 4, "test": 2},
        text_column="transcription",
        texts=lambda text, n: f"number {n} said {text}",
    )
    a = f"a: {{path: '{tmp_path / 'a'}', name: hi, validation_split: dev, test_split: null, probability: .5}}"
    b = (
        f"b: {{path: '{tmp_path / 'b'}', name: hi, text_column: transcription, validation_split: null, "
        "probability: .5}"
    )
    overrides = [
        "data=mix",
        "~data.sources",
        f"+data.sources={{{a}, {b}}}",
        f"data.streaming={streaming}",
        "data.shuffle_buffer_size=0",
        "data.num_workers=0",
    ]
    cfg = compose_config(overrides, tmp_path / "run")
    data = {key: value for key, value in cfg.data.items() if key != "_target_"}
    datamodule = ASRDataModule(**data | {"cache_dir": str(tmp_path / "cache")}, collator=collator)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
        datamodule.setup("test")
    assert "data.sources.b: its transcripts are lower case and unpunctuated" in caplog.text
    if streaming:
        stream = datamodule.splits.datasets["train"]
        train = [example["reference"] for (example, _, _), _ in zip(stream, range(10), strict=False)]
        validation = [r for batch in datamodule.val_dataloader() for r in batch["references"]]
        test = [r for batch in datamodule.test_dataloader() for r in batch["references"]]
    else:
        train, validation, test = (
            list(datamodule.splits.datasets[split].dataset["text"]) for split in ("train", "validation", "test")
        )
    assert {text.split()[0] for text in train} == {"Number", "number"}  # both sources in training
    assert len(validation) == 3 and all(text.startswith("Number") for text in validation)  # a's dev only
    assert len(test) == 2 and all(text.startswith("number") for text in test)  # b's test only
