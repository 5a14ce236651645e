"""Text normalisation that is safe for Indic scripts.

Whisper's ``BasicTextNormalizer`` replaces every character whose Unicode category starts with
M (mark), S (symbol) or P (punctuation) by a space. Devanagari and the other Brahmic scripts
write their vowel signs (matras), virama and nukta as combining marks (Mn/Mc), so
"प्राचीन" becomes "प र च न": one word turns into four and WER is computed on fragments.
:func:`normalize_text` keeps combining marks and removes only symbols and punctuation.
"""

from __future__ import annotations

import re
import unicodedata

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
