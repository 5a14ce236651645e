"""Config-faithful replicas of the CTC-family checkpoints asrkit supports ("wav2vec2 and kin").

``build_ctc_replica(kind, directory)`` writes what the real hub repository ships (``config.json`` with the
published values, ``preprocessor_config.json``, and for CTC checkpoints the tokenizer files ``vocab.json``,
``tokenizer_config.json`` and ``special_tokens_map.json`` in the format they were published in), with only
the sizes made tiny (hidden size, heads, feed-forward, conv channels, layers, quantizer sizes) and random
weights. Everything that decides how audio flows through the model is kept: the conv kernel/stride layout,
group or layer norm in the front end, conv bias, pre- or post-norm transformer, activations, positional
convolution, dropouts, SpecAugment and CTC settings, waveform normalisation and the attention mask.

Provenance (no hub access here): values marked "seen" were read in copies of the published files found in
public GitHub repositories (wav2vec2-base: a fairseq conversion script quoting its config.json; XLS-R 300M:
a full copy of its config.json, transformers 4.12.0.dev0; HuBERT-large-ft: a YAML dump of its config.json up
to ``hidden_dropout``) or in transformers' documentation (wav2vec2-base is fed no attention mask,
wav2vec2-lv60 one). Values not marked "seen" are the ones transformers' config classes document for these
checkpoints or recalled from the hub pages: they could not be confirmed here and are marked "unconfirmed".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import HubertConfig, HubertForCTC, Wav2Vec2Config, Wav2Vec2ForPreTraining, WavLMConfig, WavLMForCTC

CTC_KINDS = ("wav2vec2-base", "wav2vec2-large-lv60", "xls-r-300m", "hubert-large-ft", "wavlm-base-plus-ctc")
HUB_IDS = {
    "wav2vec2-base": "facebook/wav2vec2-base",
    "wav2vec2-large-lv60": "facebook/wav2vec2-large-lv60",
    "xls-r-300m": "facebook/wav2vec2-xls-r-300m",
    "hubert-large-ft": "facebook/hubert-large-ls960-ft",
    "wavlm-base-plus-ctc": "patrickvonplaten/wavlm-libri-clean-100h-base-plus",
}

# the only changes from the published configs: sizes (the real ones in the comments per checkpoint)
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [32] * 7,
    "codevector_dim": 16,
    "proj_codevector_dim": 16,
    "num_codevectors_per_group": 8,
}

# the 7-layer front end of every wav2vec2-family checkpoint (seen in the XLS-R and HuBERT copies)
FRONT_END = {"conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2], "num_feat_extract_layers": 7}

PRETRAINING = {  # the quantizer and contrastive settings the pre-trained (not fine-tuned) checkpoints carry
    "architectures": ["Wav2Vec2ForPreTraining"],
    "num_codevector_groups": 2,
    "num_negatives": 100,
    "contrastive_logits_temperature": 0.1,
    "diversity_loss_weight": 0.1,
    "feat_quantizer_dropout": 0.0,
}

COMMON = {  # seen in the XLS-R copy (and the HuBERT dump, as far as it goes)
    "model_type": "wav2vec2",
    "hidden_act": "gelu",
    "feat_extract_activation": "gelu",
    "layer_norm_eps": 1e-5,
    "initializer_range": 0.02,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "apply_spec_augment": True,
    "mask_time_length": 10,
    "mask_feature_prob": 0.0,
    "mask_feature_length": 10,
    "ctc_loss_reduction": "sum",
    "ctc_zero_infinity": False,
    "vocab_size": 32,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    **FRONT_END,
}

# fmt: off
CONFIGS: dict[str, dict[str, Any]] = {
    # facebook/wav2vec2-base (95M: hidden 768, 12 layers, 12 heads, ffn 3072, conv 512): group norm in the
    # first conv layer, post-norm transformer. Seen: group norm, feat_proj_dropout and attention_dropout 0.1,
    # pad 0, vocab 32, proj_codevector_dim 256. Unconfirmed: no conv bias, layerdrop 0.05, mask_time_prob
    # 0.05, hidden_dropout 0.1 (and COMMON's values, assumed the same as in the later checkpoints).
    "wav2vec2-base": COMMON | PRETRAINING | {
        "feat_extract_norm": "group", "do_stable_layer_norm": False, "conv_bias": False,
        "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "feat_proj_dropout": 0.1,
        "final_dropout": 0.0, "layerdrop": 0.05, "mask_time_prob": 0.05,
    },
    # facebook/wav2vec2-large-lv60 (317M: hidden 1024, 24 layers, 16 heads, ffn 4096, conv 512): layer norm in
    # every conv layer, conv bias, pre-norm ("stable layer norm") transformer. All unconfirmed except the
    # layer norm front end and its attention mask (transformers' docs); the layout is XLS-R's, seen below.
    "wav2vec2-large-lv60": COMMON | PRETRAINING | {
        "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True,
        "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "feat_proj_dropout": 0.1,
        "final_dropout": 0.0, "layerdrop": 0.1, "mask_time_prob": 0.05,
    },
    # facebook/wav2vec2-xls-r-300m (300M, the sizes of large-lv60): every value seen.
    "xls-r-300m": COMMON | PRETRAINING | {
        "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True,
        "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "feat_proj_dropout": 0.1,
        "final_dropout": 0.0, "layerdrop": 0.1, "mask_time_prob": 0.075, "feat_extract_dropout": 0.0,
    },
    # facebook/hubert-large-ls960-ft (316M, HubertForCTC over the 32 LibriSpeech characters): seen up to
    # hidden_dropout (activation_dropout 0.1, final_dropout 0.1, layer norm, stable layer norm, conv bias);
    # unconfirmed: layerdrop 0.1, mask_time_prob 0.05.
    "hubert-large-ft": COMMON | {
        "model_type": "hubert", "architectures": ["HubertForCTC"],
        "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True,
        "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1, "feat_proj_dropout": 0.1,
        "final_dropout": 0.1, "layerdrop": 0.1, "mask_time_prob": 0.05, "feat_extract_dropout": 0.0,
    },
    # patrickvonplaten/wavlm-libri-clean-100h-base-plus (WavLMForCTC, 94M: the sizes of wav2vec2-base),
    # fine-tuned from microsoft/wavlm-base-plus by transformers' run_speech_recognition_ctc.py: group norm, no
    # conv bias, post-norm transformer with gated relative position buckets. Unconfirmed: every value here
    # (the layout is WavLMConfig's documented default, which mirrors wavlm-base), and the vocabulary below.
    # tokenizer_class matters: transformers maps no tokenizer to model_type wavlm.
    "wavlm-base-plus-ctc": COMMON | {
        "model_type": "wavlm", "architectures": ["WavLMForCTC"],
        "feat_extract_norm": "group", "do_stable_layer_norm": False, "conv_bias": False,
        "num_buckets": 320, "max_bucket_distance": 800,
        "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "feat_proj_dropout": 0.1,
        "final_dropout": 0.0, "layerdrop": 0.05, "mask_time_prob": 0.05,
        "vocab_size": 32, "pad_token_id": 29, "tokenizer_class": "Wav2Vec2CTCTokenizer",
    },
}

# fmt: on

# preprocessor_config.json: wav2vec2-base is fed zero padding without a mask, wav2vec2-lv60 a mask (seen in
# transformers' docs); the others unconfirmed. WavLM base+ was pre-trained on unnormalised audio
# (unconfirmed).
PREPROCESSORS = {
    "wav2vec2-base": {"do_normalize": True, "return_attention_mask": False},
    "wav2vec2-large-lv60": {"do_normalize": True, "return_attention_mask": True},
    "xls-r-300m": {"do_normalize": True, "return_attention_mask": True},
    "hubert-large-ft": {"do_normalize": True, "return_attention_mask": True},
    "wavlm-base-plus-ctc": {"do_normalize": False, "return_attention_mask": True},
}

# The LibriSpeech character vocabulary of facebook's fine-tuned English checkpoints (wav2vec2-base-960h,
# hubert-large-ls960-ft): the order fairseq's letter dictionary gives (by frequency).
LIBRISPEECH_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]
# What run_speech_recognition_ctc.py builds from lower-cased LibriSpeech transcripts: the sorted characters
# (space first, renamed "|"), then [UNK] and [PAD]; the tokenizer's <s> and </s> come after them, so the
# model's vocab_size is 32 (unconfirmed for the WavLM checkpoint).
SCRIPT_VOCAB = ["|", "'", *"abcdefghijklmnopqrstuvwxyz", "[UNK]", "[PAD]"]
TOKENIZERS = {
    "hubert-large-ft": (
        LIBRISPEECH_VOCAB,
        {
            "unk_token": "<unk>",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "do_lower_case": False,
            "word_delimiter_token": "|",
        },
    ),
    "wavlm-base-plus-ctc": (
        SCRIPT_VOCAB,
        {
            "unk_token": "[UNK]",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "[PAD]",
            "do_lower_case": False,
            "word_delimiter_token": "|",
            "tokenizer_class": "Wav2Vec2CTCTokenizer",
        },
    ),
}
MODEL_CLASSES = {"hubert-large-ft": (HubertConfig, HubertForCTC), "wavlm-base-plus-ctc": (WavLMConfig, WavLMForCTC)}


def published_config(kind: str) -> dict[str, Any]:
    """The published config.json values of ``kind`` (real sizes not included: see :data:`TINY`)."""
    if kind not in CONFIGS:
        raise ValueError(f"unknown CTC replica {kind!r}: one of {', '.join(CTC_KINDS)}")
    return dict(CONFIGS[kind])


def build_ctc_replica(kind: str, directory: Path) -> Path:
    """Write the tiny random-weight replica of ``kind`` (one of :data:`CTC_KINDS`) to ``directory``."""
    values = published_config(kind) | TINY
    config_class, model_class = MODEL_CLASSES.get(kind, (Wav2Vec2Config, Wav2Vec2ForPreTraining))
    if kind in MODEL_CLASSES:  # the fine-tuned checkpoints carry no quantizer settings
        values = {k: v for k, v in values.items() if "codevector" not in k}
    if values.pop("model_type") != config_class.model_type:
        raise AssertionError(f"{kind}: the published model_type is not {config_class.model_type}")
    directory = Path(directory)
    torch.manual_seed(0)
    model_class(config_class(**values)).save_pretrained(directory)
    preprocessor = {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "padding_side": "right",
        "padding_value": 0.0,
        "sampling_rate": 16_000,
        **PREPROCESSORS[kind],
    }
    _write_json(directory / "preprocessor_config.json", preprocessor)
    if kind in TOKENIZERS:
        symbols, settings = TOKENIZERS[kind]
        _write_json(directory / "vocab.json", {symbol: index for index, symbol in enumerate(symbols)})
        _write_json(directory / "tokenizer_config.json", settings)
        special = ("unk_token", "bos_token", "eos_token", "pad_token")
        _write_json(directory / "special_tokens_map.json", {key: settings[key] for key in special})
    return directory


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
