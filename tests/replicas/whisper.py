"""Config-faithful replicas of published Whisper checkpoints: their files, tiny dimensions, random weights.

``build_whisper_replica(kind, directory)`` writes with ``save_pretrained`` what the checkpoint ships:
``config.json``, ``generation_config.json``, ``preprocessor_config.json`` and the tokenizer (the bundled
asset of the same layout, ``asrkit/assets/whisper_tokenizer*``), with the published token ids, prompt maps,
suppression lists, mel bins, window and lengths. Only the widths are tiny (``d_model`` 64, ffn 128, 2 heads)
and the layer counts are 2, except where the layout is the point (large-v3-turbo's 4 decoder layers, the
distilled 2). Nothing is downloaded.

Where the values come from: the token ids are those of the bundled tokenizers, which
``asrkit/assets/build_whisper_tokenizer.py`` checks against the published ids and against openai-whisper's
tiktoken encodings. ``suppress_tokens`` are what openai-whisper 20250625's decoder suppresses by default
(``Tokenizer.non_speech_tokens`` plus ``<|startoftranscript|>``, the task, ``<|startoflm|>``,
``<|startofprev|>`` and no-speech tokens), computed once with its ``whisper/tokenizer.py`` and tiktoken for
each vocabulary; that is how the published lists were made, and the multilingual and large-v3 lists equal
copies of the published ``generation_config.json`` files seen in other repositories. Generation keys follow
transformers' ``WhisperGenerationConfig`` as the hub checkpoints carry them. Not confirmed from the published
files (no hub access here), each marked where it is set: ``max_initial_timestamp_index`` (50; older uploads
said 1), the ``bos_token_id`` of the English-only configs, large-v3's ``pad_token_id`` 50256 in
``config.json`` (50257 in its generation config) and whether turbo and distil keep ``forced_decoder_ids``.
``alignment_heads`` are left out: they name layers and heads of the full-size models.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizer,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from asrkit.config import asset_path

WHISPER_KINDS = ("multilingual", "large-v3", "large-v3-turbo", "english", "distil-english")

# openai-whisper 20250625's default suppression list (see the module docstring), per vocabulary
_NON_SPEECH = (1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93)
SUPPRESS_MULTILINGUAL = (
    *_NON_SPEECH,
    359,
    503,
    522,
    542,
    873,
    893,
    902,
    918,
    922,
    931,
    1350,
    1853,
    1982,
    2460,
    2627,
    3246,
    3253,
    3268,
    3536,
    3846,
    3961,
    4183,
    4667,
    6585,
    6647,
    7273,
    9061,
    9383,
    10428,
    10929,
    11938,
    12033,
    12331,
    12562,
    13793,
    14157,
    14635,
    15265,
    15618,
    16553,
    16604,
    18362,
    18956,
    20075,
    21675,
    22520,
    26130,
    26161,
    26435,
    28279,
    29464,
    31650,
    32302,
    32470,
    36865,
    42863,
    47425,
    49870,
    50254,
)
SUPPRESS_ENGLISH = (
    *_NON_SPEECH,
    357,
    366,
    438,
    532,
    685,
    705,
    796,
    930,
    1058,
    1220,
    1267,
    1279,
    1303,
    1343,
    1377,
    1391,
    1635,
    1782,
    1875,
    2162,
    2361,
    2488,
    3467,
    4008,
    4211,
    4600,
    4808,
    5299,
    5855,
    6329,
    7203,
    9609,
    9959,
    10563,
    10786,
    11420,
    11709,
    11907,
    13163,
    13697,
    13700,
    14808,
    15306,
    16410,
    16791,
    17992,
    19203,
    19510,
    20724,
    22305,
    22935,
    27007,
    30109,
    30420,
    33409,
    34949,
    40283,
    40493,
    40549,
    47282,
    49146,
)

# kind: (published checkpoint, bundled tokenizer, mel bins, decoder layers, published config.json pad id)
_LAYOUTS = {
    "multilingual": ("openai/whisper-small", "whisper_tokenizer", 80, 2, None),
    "large-v3": ("openai/whisper-large-v3", "whisper_tokenizer_v3", 128, 2, 50256),  # pad: not confirmed
    "large-v3-turbo": ("openai/whisper-large-v3-turbo", "whisper_tokenizer_v3", 128, 4, None),
    "english": ("openai/whisper-small.en", "whisper_tokenizer_en", 80, 2, None),
    # the English-only distil-whisper with a 2-layer decoder is distil-medium.en (distil-small.en has 4
    # decoder layers: that is what its published 166M parameters come to)
    "distil-english": ("distil-whisper/distil-medium.en", "whisper_tokenizer_en", 80, 2, None),
}
TINY = {
    "d_model": 64,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_layers": 2,
}


def published_checkpoint(kind: str) -> str:
    """The hub id whose layout ``kind`` replicates."""
    return _LAYOUTS[kind][0]


def _generation_config(kind: str, token_id: Any, eot: int, multilingual: bool) -> GenerationConfig:
    sot, no_timestamps = token_id("<|startoftranscript|>"), token_id("<|notimestamps|>")
    no_speech = token_id("<|nospeech|>" if kind.startswith("large-v3") else "<|nocaptions|>")
    controls = [
        sot,
        *(token_id(t) for t in ("<|translate|>", "<|transcribe|>", "<|startoflm|>")),
        token_id("<|startofprev|>"),
        no_speech,
    ]
    suppress = [*(SUPPRESS_MULTILINGUAL if multilingual else SUPPRESS_ENGLISH), *sorted(controls)]
    settings: dict[str, Any] = {
        "bos_token_id": eot,
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "begin_suppress_tokens": [220, eot],
        "suppress_tokens": suppress,
        "is_multilingual": multilingual,
        "max_initial_timestamp_index": 50,  # not confirmed: some uploads say 1
        "max_length": 448,
        "no_timestamps_token_id": no_timestamps,
        "prev_sot_token_id": token_id("<|startofprev|>"),
        "return_timestamps": False,
    }
    if multilingual:
        languages = list(LANGUAGES)[: 100 if kind.startswith("large-v3") else 99]
        settings["lang_to_id"] = {f"<|{code}|>": token_id(f"<|{code}|>") for code in languages}
        settings["task_to_id"] = {task: token_id(f"<|{task}|>") for task in ("translate", "transcribe")}
        settings["forced_decoder_ids"] = [[1, None], [2, token_id("<|transcribe|>")]]
    else:
        settings["bos_token_id"] = sot  # not confirmed (unused by Whisper's generate())
        settings["forced_decoder_ids"] = [[1, no_timestamps]]
    if kind.startswith("distil"):  # distil-whisper's create_student_model.py drops them (not confirmed)
        settings["forced_decoder_ids"] = None
    return GenerationConfig(**settings)


def build_whisper_replica(kind: str, directory: Path) -> Path:
    """Write a tiny random-weight replica of ``published_checkpoint(kind)`` into ``directory``; return it."""
    if kind not in _LAYOUTS:
        raise ValueError(f"kind={kind!r}: one of {', '.join(WHISPER_KINDS)}")
    _, asset, mel_bins, decoder_layers, config_pad = _LAYOUTS[kind]
    tokenizer = WhisperTokenizer.from_pretrained(asset_path(asset))
    token_id = tokenizer.convert_tokens_to_ids
    eot = tokenizer.eos_token_id
    multilingual = len(tokenizer) >= 51865
    generation_config = _generation_config(kind, token_id, eot, multilingual)
    config = WhisperConfig(
        **TINY,
        decoder_layers=decoder_layers,
        vocab_size=len(tokenizer),
        num_mel_bins=mel_bins,
        max_source_positions=1500,
        max_target_positions=448,
        architectures=["WhisperForConditionalGeneration"],
        bos_token_id=generation_config.bos_token_id,
        eos_token_id=eot,
        pad_token_id=config_pad or eot,
        decoder_start_token_id=generation_config.decoder_start_token_id,
        suppress_tokens=generation_config.suppress_tokens,
        begin_suppress_tokens=[220, eot],
    )
    torch.manual_seed(0)  # the same random weights whatever ran before (they decide how long generate() runs)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = generation_config
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    # preprocessor_config.json: the defaults are the published values (30 s, 16 kHz, hop 160, n_fft 400)
    WhisperFeatureExtractor(feature_size=mel_bins).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    spelling = Path(asset_path(asset)) / "normalizer.json"  # .en checkpoints ship the English spelling map
    if spelling.is_file():
        shutil.copyfile(spelling, directory / "normalizer.json")
    return directory
