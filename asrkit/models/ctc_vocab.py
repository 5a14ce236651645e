"""The character vocabulary of a CTC model, built from the training transcripts and cached by their content.

The transcripts arrive prepared (``data.chars_to_ignore`` deleted, lower-cased when
``data.do_lower_case``); every character they use becomes a symbol, the space becomes the word
delimiter ``|``, and ``[UNK]`` (characters seen only outside training) and ``[PAD]`` (also the CTC
blank) come last. The vocabulary is saved under a SHA-256 of the transcripts and these settings, so a
later run on the same data reuses it and a change in the data gives a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from transformers import Wav2Vec2CTCTokenizer

from asrkit.files import write_atomically

log = logging.getLogger(__name__)

WORD_DELIMITER, UNK, PAD = "|", "[UNK]", "[PAD]"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/asrkit/ctc_vocab`` (``~/.cache/asrkit/ctc_vocab`` when XDG_CACHE_HOME is unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "asrkit" / "ctc_vocab"


def build_vocabulary(
    texts: Sequence[str], word_delimiter: str = WORD_DELIMITER, unk_token: str = UNK, pad_token: str = PAD
) -> dict[str, int]:
    """Symbol -> id: the characters of ``texts`` in code-point order (space as ``word_delimiter``), then
    ``unk_token`` and ``pad_token``. The delimiter is always included."""
    characters: set[str] = set()
    for text in texts:
        characters.update(text)
    if word_delimiter in characters:
        raise ValueError(
            f"a training transcript contains the word delimiter {word_delimiter!r}: remove it with "
            f"data.chars_to_ignore or choose another model.word_delimiter_token"
        )
    characters.discard(" ")
    symbols = sorted(characters) + [word_delimiter, unk_token, pad_token]
    return {symbol: index for index, symbol in enumerate(symbols)}


def vocabulary_key(texts: Sequence[str], **settings: str) -> str:
    """SHA-256 of the transcripts (in order) and the vocabulary settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def cached_vocabulary(
    texts: Sequence[str],
    cache_dir: str | Path | None = None,
    word_delimiter: str = WORD_DELIMITER,
    unk_token: str = UNK,
    pad_token: str = PAD,
) -> tuple[Path, bool]:
    """The vocab.json for ``texts`` under ``cache_dir``, and whether it was built now (False: reused)."""
    settings = {"word_delimiter": word_delimiter, "unk_token": unk_token, "pad_token": pad_token}
    directory = Path(cache_dir) if cache_dir else default_cache_dir()
    path = directory / f"{vocabulary_key(texts, **settings)}.json"
    if path.is_file():
        return path, False
    write_atomically(path, json.dumps(build_vocabulary(texts, **settings), ensure_ascii=False, indent=1))
    return path, True


def ctc_tokenizer(
    vocab_file: str | Path, word_delimiter: str = WORD_DELIMITER, unk_token: str = UNK, pad_token: str = PAD
) -> Wav2Vec2CTCTokenizer:
    """A character tokenizer over ``vocab_file``; texts are used as given (already prepared)."""
    return Wav2Vec2CTCTokenizer(
        str(vocab_file),
        unk_token=unk_token,
        pad_token=pad_token,
        word_delimiter_token=word_delimiter,
        bos_token=None,
        eos_token=None,
        do_lower_case=False,  # in Wav2Vec2CTCTokenizer this would *upper*-case texts
    )


def build_ctc_tokenizer(
    texts: list[str],
    cache_dir: str | Path | None = None,
    word_delimiter: str = WORD_DELIMITER,
    unk_token: str = UNK,
    pad_token: str = PAD,
) -> Wav2Vec2CTCTokenizer:
    """The tokenizer of the vocabulary of ``texts``: reused from the cache, or built and cached."""
    tokens = {"word_delimiter": word_delimiter, "unk_token": unk_token, "pad_token": pad_token}
    path, built = cached_vocabulary(texts, cache_dir, **tokens)
    tokenizer = ctc_tokenizer(path, **tokens)
    log.info(
        "CTC vocabulary of %d symbols %s %s (from %d training transcripts)",
        len(tokenizer),
        "built and cached at" if built else "reused from",
        path,
        len(texts),
    )
    return tokenizer


def tokenizer_from_vocabulary(
    vocabulary: dict[str, int],
    cache_dir: str | Path | None = None,
    word_delimiter: str = WORD_DELIMITER,
    unk_token: str = UNK,
    pad_token: str = PAD,
) -> Wav2Vec2CTCTokenizer:
    """The tokenizer of a vocabulary given as a dict (one stored in a checkpoint), via a file in the cache."""
    content = json.dumps(vocabulary, ensure_ascii=False, indent=1)
    directory = Path(cache_dir) if cache_dir else default_cache_dir()
    path = directory / f"vocab-{hashlib.sha256(content.encode()).hexdigest()}.json"
    if not path.is_file():
        write_atomically(path, content)
    return ctc_tokenizer(path, word_delimiter=word_delimiter, unk_token=unk_token, pad_token=pad_token)
