"""A dataset repository in Hugging Face hub layout on local disk, made of the bundled demo speech.

    <root>/README.md                                  dataset card; its `configs:` section declares the
                                                      data_files of every config and split
    <root>/<config>/<split>-0000i-of-0000n.parquet    rows: id, audio (FLAC bytes + file name), <text column>
                                                      [, <duration column>]

``datasets.load_dataset(str(root), config, split="train+validation"[, streaming=True])`` reads it through
the same code path as a hub id (the card's configs, parquet shards, split arithmetic), with no network.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import datasets

from asrkit.config import asset_path

DEMO = Path(asset_path("demo_speech"))


def demo_rows(split: str = "train") -> list[dict[str, str]]:
    """The bundled demo utterances of one split: file_name, text, duration."""
    with open(DEMO / split / "metadata.csv", newline="", encoding="utf-8") as f:
        return [dict(row, file_name=str(DEMO / split / row["file_name"])) for row in csv.DictReader(f)]


def build_hub_repo(
    root: str | Path,
    sizes: dict[str, int],
    configs: tuple[str, ...] = ("hi",),
    text_column: str = "sentence",
    duration_column: str | None = None,
    shards: int = 1,
    texts: Callable[[str, int], str] | None = None,
    corrupt: frozenset[str] = frozenset(),
) -> dict[tuple[str, str], list[str]]:
    """Write the repository; return the example ids (demo file names) of each ``(config, split)``.

    Every config and split holds ``sizes[split]`` different demo utterances, split into ``shards`` parquet
    files. ``texts(text, number)`` rewrites the transcript of the ``number``-th example of the repository;
    the audio of ids in ``corrupt`` is replaced by bytes that are no audio.
    """
    root = Path(root)
    source = iter(demo_rows("train"))
    features = {
        "id": datasets.Value("string"),
        "audio": datasets.Audio(sampling_rate=16_000),
        text_column: datasets.Value("string"),
    }
    if duration_column:
        features[duration_column] = datasets.Value("float32")
    ids: dict[tuple[str, str], list[str]] = {}
    number = 0
    for config in configs:
        (root / config).mkdir(parents=True, exist_ok=True)
        for split, size in sizes.items():
            rows = [next(source) for _ in range(size)]
            ids[config, split] = [Path(row["file_name"]).name for row in rows]
            for shard in range(shards):
                part = rows[shard::shards]
                table = {
                    "id": [Path(row["file_name"]).name for row in part],
                    "audio": [
                        {
                            "bytes": b"no audio here"
                            if Path(row["file_name"]).name in corrupt
                            else Path(row["file_name"]).read_bytes(),
                            "path": Path(row["file_name"]).name,
                        }
                        for row in part
                    ],
                    text_column: [
                        texts(row["text"], number + i) if texts else row["text"] for i, row in enumerate(part)
                    ],
                }
                number += len(part)
                if duration_column:
                    table[duration_column] = [float(row["duration"]) for row in part]
                dataset = datasets.Dataset.from_dict(table, features=datasets.Features(features))
                dataset.to_parquet(str(root / config / f"{split}-{shard:05d}-of-{shards:05d}.parquet"))
            ids[config, split] = [i for shard in range(shards) for i in ids[config, split][shard::shards]]
    card = ["---", "configs:"]
    for config in configs:
        card += [f"- config_name: {config}", "  data_files:"]
        for split in sizes:
            card += [f"  - split: {split}", f"    path: {config}/{split}-*.parquet"]
    card += ["---", "# A test dataset: demo speech in hub layout", ""]
    (root / "README.md").write_text("\n".join(card), encoding="utf-8")
    return ids
