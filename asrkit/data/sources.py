"""Readers that turn a source config into a ``datasets`` dataset with columns ``audio`` and ``text``.

A source is what ``datasets.load_dataset`` takes: a hub id (``mozilla-foundation/common_voice_11_0``),
a local dataset directory in hub layout, or a packaged builder (``audiofolder``) with ``data_dir``.
Splits may be joined with ``+`` (``train+validation``), exactly as ``load_dataset`` reads them, streamed
or not. Each source's own column names (``sentence``, ``transcription``, ``normalized_text``...) are
mapped onto one schema: ``audio``, ``text`` and, where the source has one, ``duration`` in seconds.
Audio stays undecoded (``Audio(decode=False)``): see :mod:`asrkit.data.audio` for why.

Gated hub datasets (Common Voice) use the token ``huggingface_hub`` finds by itself (``HF_TOKEN``, or
the one ``hf auth login`` / ``huggingface-cli login`` stored); without one the error is a one-line hint.
"""

from __future__ import annotations

from typing import Any

import datasets
from huggingface_hub.errors import GatedRepoError

from asrkit.data.columns import AUDIO, DURATION, TEXT

Split = datasets.Dataset | datasets.IterableDataset


def _error_chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def hub_error_hint(path: str, error: BaseException) -> str | None:
    """A one-line remedy for the hub errors users meet, or None.

    ``datasets`` reports a gated repository without a (valid) token as ``DatasetNotFoundError`` ("... is a
    gated dataset on the Hub"), re-raised without its ``GatedRepoError`` cause; file downloads raise
    ``FileNotFoundError`` from ``GatedRepoError``. Both are recognised, as are loading scripts, which
    ``datasets`` 4 and later no longer run.
    """
    chain = _error_chain(error)
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, GatedRepoError) for e in chain) or "gated dataset" in text:
        return (
            f"data.path={path} is gated on the Hugging Face Hub: accept its terms at "
            f"https://huggingface.co/datasets/{path} with your account, then run `hf auth login` "
            "(`huggingface-cli login`) or set HF_TOKEN"
        )
    if "Dataset scripts are no longer supported" in text:
        return (
            f"data.path={path} is a loading-script dataset, which datasets>=4 does not run: point data.path "
            "at a parquet copy, or try the hub's parquet export (data.revision=refs/convert/parquet, "
            "data.name=null, data.data_dir=<config>)"
        )
    return None


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
    streaming: bool = False,
) -> Split:
    """Load one (possibly ``+``-joined) split and map its columns onto ``audio``, ``text``, ``duration``.

    ``streaming=True`` returns a ``datasets.IterableDataset`` that reads examples as they are iterated
    (nothing is downloaded up front); otherwise a map-style ``datasets.Dataset``.
    """
    if path == "manifest":  # fairseq-style <split>.tsv files in data_dir (asrkit.data.manifest)
        from asrkit.data.manifest import load_manifest

        dataset = load_manifest(data_dir, split)
        return dataset.to_iterable_dataset() if streaming else dataset
    try:
        dataset = datasets.load_dataset(
            path, name, split=split, data_dir=data_dir, cache_dir=cache_dir, revision=revision, streaming=streaming
        )
    except Exception as error:
        hint = hub_error_hint(path, error)
        if hint is None:
            raise
        raise RuntimeError(hint) from error
    columns: dict[str, Any] = {audio_column: AUDIO, text_column: TEXT}
    if duration_column:
        columns[duration_column] = DURATION
    present = dataset.column_names
    if present is None:  # a stream whose features are only known once read
        present = list(next(iter(dataset.take(1))))
    missing = [column for column in columns if column not in present]
    if missing:
        raise KeyError(
            f"data.path={path} split={split}: no column {missing} (columns are {present}); "
            "set data.audio_column / data.text_column / data.duration_column"
        )
    # undecoded first: a stream would decode the audio while renaming columns
    dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False)).select_columns(list(columns))
    return dataset.rename_columns({old: new for old, new in columns.items() if old != new})
