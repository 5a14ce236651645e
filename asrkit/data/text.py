"""Text preparation for labels, and the normalisers that scores are computed on.

Whisper's ``BasicTextNormalizer`` replaces every character whose Unicode category starts with
M (mark), S (symbol) or P (punctuation) by a space. Devanagari and the other Brahmic scripts
write their vowel signs (matras), virama and nukta as combining marks (Mn/Mc), so
"प्राचीन" becomes "प र च न": one word turns into four and WER is computed on fragments.
:func:`normalize_text` keeps combining marks and removes only symbols and punctuation.

English is scored as the Whisper paper and the Open ASR Leaderboard score it: Whisper's
``EnglishTextNormalizer`` (numbers written as digits, British spellings mapped to American ones with
OpenAI's spelling map, contractions and titles standardised), whose spelling map is bundled with the
English-only tokenizer (``asrkit/assets/whisper_tokenizer_en/normalizer.json``, as the .en checkpoints
ship it). :func:`text_normalizer` picks one by name; ``auto`` means English for ``en``, basic otherwise.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

NORMALIZERS = ("basic", "english")
ENGLISH_SPELLING_MAP = "whisper_tokenizer_en/normalizer.json"  # under asrkit/assets

_BRACKETED = re.compile(r"[<\[][^>\]]*[>\]]|\([^)]*\)")
_SPACES = re.compile(r"\s+")


def _strip_symbols_and_punctuation(text: str) -> str:
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cf":  # zero-width joiners and other format controls: invisible, not word breaks
            continue
        out.append(" " if category[0] in "SP" else char)
    return "".join(out)


def normalize_text(text: str) -> str:
    """Whisper-style basic normalisation that keeps combining marks (for WER/CER on any script).

    NFKC, lower case, drop ``[...]``, ``<...>`` and ``(...)`` spans, replace punctuation and symbols
    (including the danda ``।``) by spaces, and collapse whitespace.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _BRACKETED.sub(" ", text)
    text = _strip_symbols_and_punctuation(text)
    return _SPACES.sub(" ", text).strip()


def prepare_label_text(text: str, do_lower_case: bool = False, do_remove_punctuation: bool = False) -> str:
    """The transcript a model is trained on: NFC, optionally lower-cased and without punctuation."""
    text = unicodedata.normalize("NFC", text)
    if do_lower_case:
        text = text.lower()
    if do_remove_punctuation:
        text = _strip_symbols_and_punctuation(text)
    return _SPACES.sub(" ", text).strip()


def chars_to_ignore_pattern(chars_to_ignore: str | Sequence[str] | None) -> re.Pattern[str] | None:
    """``data.chars_to_ignore`` as one pattern: list items are matched literally; a string is a regex.

    The CTC recipes join a character list into ``[...]``, where ``-`` between two characters becomes a
    range (``!-;`` also removes digits and ``'``); here every listed character is escaped.
    """
    if chars_to_ignore is None or len(chars_to_ignore) == 0:
        return None
    if isinstance(chars_to_ignore, str):
        return re.compile(chars_to_ignore)
    items = sorted({str(item) for item in chars_to_ignore}, key=len, reverse=True)
    return re.compile("|".join(re.escape(item) for item in items))


def prepare_label_text_ignoring(
    text: str,
    chars_to_ignore: re.Pattern[str] | None = None,
    do_lower_case: bool = False,
    do_remove_punctuation: bool = False,
) -> str:
    """:func:`prepare_label_text` after deleting ``chars_to_ignore`` (deleted, not turned into spaces)."""
    text = unicodedata.normalize("NFC", text)
    if chars_to_ignore is not None:
        text = chars_to_ignore.sub("", text)
    return prepare_label_text(text, do_lower_case=do_lower_case, do_remove_punctuation=do_remove_punctuation)


def resolve_normalizer(name: str, language: str | None) -> str:
    """``evaluation.normalizer`` as a concrete normaliser name: ``auto`` is english for ``en``, else basic."""
    if name == "auto":
        return "english" if (language or "").lower() in ("en", "english") else "basic"
    if name not in NORMALIZERS:
        raise ValueError(f"evaluation.normalizer={name!r}: choose auto, {' or '.join(NORMALIZERS)}")
    return name


@functools.cache
def _english_normalizer() -> Callable[[str], str]:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    from asrkit.config import asset_path

    spelling = json.loads(Path(asset_path(ENGLISH_SPELLING_MAP)).read_text(encoding="utf-8"))
    return EnglishTextNormalizer(spelling)


def text_normalizer(name: str) -> Callable[[str], str]:
    """The normalising function of ``basic`` or ``english`` (see :func:`resolve_normalizer`)."""
    if name == "basic":
        return normalize_text
    if name == "english":
        return _english_normalizer()
    raise ValueError(f"no text normaliser {name!r}: choose {' or '.join(NORMALIZERS)}")
