"""Readers that turn a source config into a ``datasets.Dataset`` with columns ``audio`` and ``text``.

A source is what ``datasets.load_dataset`` takes: a hub id (``mozilla-foundation/common_voice_11_0``),
a local dataset directory in hub layout, or a packaged builder (``audiofolder``) with ``data_dir``.
Splits may be joined with ``+`` (``train+validation``), exactly as ``load_dataset`` reads them.
Audio stays undecoded (``Audio(decode=False)``): see :mod:`asrkit.data.audio` for why.
"""

from __future__ import annotations

from typing import Any

import datasets
from huggingface_hub.errors import GatedRepoError

AUDIO, TEXT, DURATION = "audio", "text", "duration"


def load_split(
    path: str,
    split: str,
    name: str | None = None,
    data_dir: str | None = None,
    audio_column: str = AUDIO,
    text_column: str = TEXT,
    duration_column: str | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
) -> datasets.Dataset:
    """Load one (possibly ``+``-joined) split and map its columns onto ``audio``, ``text``, ``duration``."""
    try:
        dataset = datasets.load_dataset(
            path, name, split=split, data_dir=data_dir, cache_dir=cache_dir, revision=revision
        )
    except GatedRepoError as error:
        raise RuntimeError(
            f"data.path={path} is a gated dataset: accept its terms on the hub, then set HF_TOKEN "
            "or run `huggingface-cli login`"
        ) from error
    columns: dict[str, Any] = {audio_column: AUDIO, text_column: TEXT}
    if duration_column:
        columns[duration_column] = DURATION
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise KeyError(
            f"data.path={path} split={split}: no column {missing} (columns are {dataset.column_names}); "
            "set data.audio_column / data.text_column / data.duration_column"
        )
    dataset = dataset.select_columns(list(columns)).rename_columns(
        {old: new for old, new in columns.items() if old != new}
    )
    return dataset.cast_column(AUDIO, datasets.Audio(decode=False))
