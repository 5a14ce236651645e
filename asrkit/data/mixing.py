"""Several sources as one dataset (``data=mix``): interleaved with given probabilities, or concatenated.

Each entry of ``data.sources`` is a source as the single-dataset configs describe one (``path``, ``name``,
``data_dir``, ``revision``, column names, ``train_split`` / ``validation_split`` / ``test_split``); a key it
leaves out is null, but for the column names, the split names and ``cache_dir``, which default to the
values at the top of ``data``. Its columns are mapped onto the common
schema (``audio``, ``text``[, ``duration``]) before the sources are combined, and the datamodule then
applies one text preparation (``data.do_lower_case``, ``data.do_remove_punctuation``) to every example.

Training data is interleaved (``datasets.interleave_datasets``): each example comes from source ``i`` with
probability ``probability_i``, drawn with ``data.shuffle_seed``; with ``stopping_strategy``
``first_exhausted`` a pass ends when one source runs out (no example is repeated), with ``all_exhausted``
when every source has been seen whole (the smaller ones are repeated, that is oversampled).
``mixing: concatenate`` instead appends the sources one after the other (probabilities unused).
Validation and test splits are always concatenated: every evaluation example is scored once.

Transcription conventions differ between corpora (LibriSpeech is upper case without punctuation, FLEURS'
``raw_transcription`` is cased and punctuated). A model trained on both learns both; the training
transcripts of each source are sampled, and a source whose casing or punctuation differs from the
first source's (after the text preparation) is a warning that names it.
"""

from __future__ import annotations

import itertools
import logging
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import datasets

from asrkit.data.columns import DURATION, TEXT
from asrkit.data.sources import Split, load_split

log = logging.getLogger(__name__)

SOURCE_KEYS = {
    "path",
    "name",
    "data_dir",
    "revision",
    "cache_dir",
    "audio_column",
    "text_column",
    "duration_column",
    "train_split",
    "validation_split",
    "test_split",
    "probability",
}
# what a source takes from the top of ``data`` when it does not set it (the rest is its own or null)
INHERITED_KEYS = {
    "cache_dir",
    "audio_column",
    "text_column",
    "duration_column",
    "train_split",
    "validation_split",
    "test_split",
}
STRATEGIES = ("interleave", "concatenate")
CONVENTION_SAMPLE = 200  # training transcripts read per source to tell its casing and punctuation
_INWORD_MARKS = set("'’-")  # apostrophes and hyphens are spelling, not punctuation, for this purpose


def _harmonise(dataset: Split) -> Split:
    """Same feature types from every source, so that they can be combined."""
    if dataset.features is None:
        return dataset
    if dataset.features[TEXT] != datasets.Value("string"):
        dataset = dataset.cast_column(TEXT, datasets.Value("string"))
    if DURATION in dataset.features and dataset.features[DURATION] != datasets.Value("float64"):
        dataset = dataset.cast_column(DURATION, datasets.Value("float64"))
    return dataset


def source_settings(sources: Mapping[str, Mapping[str, Any]], defaults: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each source's settings: its own, else (:data:`INHERITED_KEYS`) the top-level ``data`` keys."""
    if not sources:
        raise ValueError("data.sources is empty: give at least one source (see conf/data/mix.yaml)")
    settings = {}
    for name, own in sources.items():
        unknown = set(own) - SOURCE_KEYS
        if unknown:
            raise ValueError(f"data.sources.{name}: unknown key(s) {sorted(unknown)}; allowed: {sorted(SOURCE_KEYS)}")
        settings[name] = {
            key: own.get(key, defaults.get(key) if key in INHERITED_KEYS else None) for key in SOURCE_KEYS
        }
        if not settings[name]["path"]:
            raise ValueError(f"data.sources.{name}.path is required")
    return settings


def _probabilities(settings: dict[str, dict[str, Any]], names: list[str]) -> list[float]:
    probabilities = [settings[name]["probability"] for name in names]
    missing = [name for name, p in zip(names, probabilities, strict=True) if p is None or p < 0]
    if missing:
        raise ValueError(f"data.sources.{missing[0]}.probability: a number >= 0 is required to interleave")
    if abs(sum(probabilities) - 1.0) > 1e-6:
        given = ", ".join(f"{name}={p}" for name, p in zip(names, probabilities, strict=True))
        raise ValueError(f"data.sources.*.probability must sum to 1 over the training sources ({given})")
    return [float(p) for p in probabilities]


def mix(
    parts: Mapping[str, Split],
    probabilities: list[float] | None = None,
    strategy: str = "interleave",
    stopping_strategy: str = "first_exhausted",
    seed: int = 0,
) -> Split:
    """Interleave ``parts`` (all map-style or all streams) with ``probabilities``, or concatenate them."""
    if strategy not in STRATEGIES:
        raise ValueError(f"data.mixing={strategy!r}: one of {', '.join(STRATEGIES)}")
    values = [_harmonise(part) for part in parts.values()]
    with_duration = [DURATION in (part.column_names or []) for part in values]
    if any(with_duration) and not all(with_duration):  # header reads for all, rather than two schemas
        values = [
            part.remove_columns([DURATION]) if has else part for part, has in zip(values, with_duration, strict=True)
        ]
    if len(values) == 1 or strategy == "concatenate" or probabilities is None:
        return datasets.concatenate_datasets(values)
    return datasets.interleave_datasets(
        values, probabilities=probabilities, seed=seed, stopping_strategy=stopping_strategy
    )


def load_mixture(
    sources: Mapping[str, Mapping[str, Any]],
    role: str,
    defaults: Mapping[str, Any],
    streaming: bool = False,
    strategy: str = "interleave",
    stopping_strategy: str = "first_exhausted",
    seed: int = 0,
    prepare_text: Callable[[str], str] | None = None,
) -> Split:
    """The ``role`` split (train, validation or test) of every source that has one, combined."""
    settings = source_settings(sources, defaults)
    parts = {}
    for name, source in settings.items():
        split = source[f"{role}_split"]
        if split:
            keys = SOURCE_KEYS - {"train_split", "validation_split", "test_split", "probability"}
            parts[name] = load_split(split=split, streaming=streaming, **{key: source[key] for key in keys})
    if not parts:
        raise ValueError(f"data.sources: no source has a {role} split ({role}_split is null everywhere)")
    if role != "train":
        return mix(parts, strategy="concatenate")
    if prepare_text is not None and len(parts) > 1:
        warn_on_mixed_conventions(parts, prepare_text)
    probabilities = _probabilities(settings, list(parts)) if strategy == "interleave" else None
    log.info(
        "training on %s: %s",
        strategy,
        ", ".join(
            f"{name} ({settings[name][f'{role}_split']}{f', p={p}' if p is not None else ''})"
            for name, p in zip(parts, probabilities or [None] * len(parts), strict=True)
        ),
    )
    return mix(parts, probabilities, strategy, stopping_strategy, seed)


def transcript_convention(texts: Iterable[str]) -> tuple[str, str]:
    """``(casing, punctuation)`` of a sample of transcripts.

    casing: ``upper case``, ``lower case``, ``mixed case`` (above 90%, below 1% or between the two of the
    cased letters are capitals) or ``uncased script`` (Devanagari, Han...); punctuation: ``punctuated``
    when at least half the transcripts contain punctuation other than apostrophes and hyphens.
    """
    upper = cased = punctuated = total = 0
    for text in texts:
        total += 1
        letters = [char for char in text if char.lower() != char.upper()]
        cased += len(letters)
        upper += sum(char.isupper() for char in letters)
        punctuated += any(unicodedata.category(char).startswith("P") and char not in _INWORD_MARKS for char in text)
    if not cased:
        casing = "uncased script"
    else:
        share = upper / cased
        casing = "upper case" if share > 0.9 else "lower case" if share < 0.01 else "mixed case"
    return casing, "punctuated" if total and punctuated / total >= 0.5 else "unpunctuated"


def _sample_texts(dataset: Split, count: int) -> list[str]:
    if isinstance(dataset, datasets.Dataset):
        return list(dataset.select(range(min(count, len(dataset))))[TEXT])
    return [row[TEXT] for row in itertools.islice(dataset.select_columns([TEXT]), count)]


def warn_on_mixed_conventions(parts: Mapping[str, Split], prepare_text: Callable[[str], str]) -> bool:
    """Log a warning naming each source whose prepared transcripts differ in casing or punctuation from
    the first source's; return whether there was one."""
    conventions = {
        name: transcript_convention(prepare_text(text or "") for text in _sample_texts(part, CONVENTION_SAMPLE))
        for name, part in parts.items()
    }
    (first, (first_case, first_punct)), *others = conventions.items()
    differing = []
    for name, (case, punct) in others:
        case_differs = "uncased script" not in (case, first_case) and case != first_case
        if case_differs or punct != first_punct:
            differing.append(name)
            log.warning(
                "data.sources.%s: its transcripts are %s and %s, but those of %s are %s and %s; the "
                "model will learn both conventions (set data.do_lower_case=true and "
                "data.do_remove_punctuation=true to train on one)",
                name,
                case,
                punct,
                first,
                first_case,
                first_punct,
            )
    return bool(differing)
