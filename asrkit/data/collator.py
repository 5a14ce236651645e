"""What the datamodule needs from a model's collator (one per family, built by the model module)."""

from __future__ import annotations

from typing import Any, Protocol


class Collator(Protocol):
    """Decoded examples in, one model batch out.

    An example is ``{"index", "audio" (mono float32 at sampling_rate), "text" (the prepared label text),
    "reference" (what it is scored against)}``, or ``None`` for one that reading dropped (a file that failed to
    decode, silence; :func:`asrkit.data.filtering.decode_kept`): the collator
    drops those and counts them in the batch's ``num_skipped`` (:func:`asrkit.data.padding.batch_fields`),
    and returns ``None`` when nothing is left.
    """

    #: the rate every file is decoded and resampled to
    sampling_rate: int
    #: the longest audio the model takes in training, in seconds (Whisper's window); None: any length
    max_input_seconds: float | None
    #: the longest training label, in tokens (Whisper's decoder positions); None: not limited
    max_label_length: int | None

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        """Label token ids of each prepared text (the datamodule measures labels against max_label_length)."""
        ...

    def __call__(self, examples: list[dict[str, Any] | None]) -> dict[str, Any] | None:
        """One batch. A collator with ``supports_static_shapes = True`` also takes ``audio_length`` (samples) and
        ``label_length`` (tokens) to pad to (``data.static_shapes``: :mod:`asrkit.data.static_shapes`)."""
        ...
