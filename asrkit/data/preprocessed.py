"""Preprocessed rows (``preprocess_only=true``): which rows of a split survive the drop rule, with their durations,
saved under a key made of every setting that decides it, so that a later run (on any number of ranks) reads that
instead of measuring and filtering again (:class:`asrkit.data.indexed.IndexedSplits`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from asrkit.data.collator import Collator
from asrkit.data.columns import DURATION
from asrkit.data.options import DataOptions
from asrkit.data.reading import read_role

log = logging.getLogger(__name__)

ROW = "_asrkit_row"  # the source row of a kept example, in preprocessed rows


def rows_path(options: DataOptions, role: str, collator: Collator, prepare_text: Callable[[str], str]) -> Path:
    """``<preprocessed_dir>/<role>-<hash of every setting that decides which rows survive>``."""
    source = options.source
    settings = {
        "source": source.load_kwargs(),
        "split": source.split_name(role),
        "sources": source.sources if source.sources else None,
        "max_samples": source.max_samples(role),
        "rules": dataclasses.asdict(options.filters.rules(role, collator)),
        "text": prepare_text.keywords,
        "collator": type(collator).__qualname__,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = source.cache_dir or datasets.config.HF_DATASETS_CACHE
    return Path(source.preprocessed_dir or Path(cache) / "asrkit_preprocessed") / f"{role}-{key}"


def save_rows(
    path: Path, kept: datasets.Dataset, durations: list[float], source: datasets.Dataset, excluded: dict[str, Any]
) -> None:
    """Save the kept rows' indices into ``source`` (the unfiltered split) and durations: small
    (``datasets.Dataset.save_to_disk``), never a second copy of the audio; beside them the source's fingerprint
    and length, and what was dropped, so that a run that loads the rows still reports it in metrics.json."""
    rows = datasets.Dataset.from_dict({"index": kept[ROW], DURATION: durations})
    rows.save_to_disk(str(path))
    saved = {"fingerprint": source._fingerprint, "rows": len(source), "excluded": excluded}
    (path / "asrkit.json").write_text(json.dumps(saved) + "\n")


def load_rows(
    options: DataOptions, role: str, prepare_text: Callable[[str], str], path: Path
) -> tuple[datasets.Dataset, list[float], dict[str, Any] | None] | None:
    """The split's kept rows, their durations and what was dropped (None where the rows predate that record),
    read from ``path``; None where nothing was saved there or the split changed since."""
    if not path.is_dir():
        return None
    rows = datasets.load_from_disk(str(path))
    dataset = read_role(options, role, prepare_text)
    saved = json.loads((path / "asrkit.json").read_text())
    source = {key: saved.get(key) for key in ("fingerprint", "rows")}
    if source != {"fingerprint": dataset._fingerprint, "rows": len(dataset)}:
        log.warning(
            "%s split changed since %s was preprocessed (%s): reading and filtering it again; "
            "run preprocess_only=true to refresh",
            role,
            path,
            source,
        )
        return None
    durations = [float(d) for d in rows[DURATION]]
    log.info("%s split: %d examples, %.2f h of audio (preprocessed: %s)", role, len(rows), sum(durations) / 3600, path)
    return dataset.select(rows["index"]), durations, saved.get("excluded")
