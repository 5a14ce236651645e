"""WhisperModule options on the tiny random-init model (built from WhisperConfig; nothing downloaded)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from transformers import (
    GenerationConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizer,
    pipeline,
)

from asrkit.models.whisper import WhisperModule, label_token_loss
from asrkit.recognizer import Recognizer
from asrkit.transcribe import transcribe
from tests.conftest import compose_config
from tests.hub_repo import demo_rows
from tests.replicas.whisper import WHISPER_KINDS, build_whisper_replica


def _module(tmp_path, *overrides: str) -> WhisperModule:
    """The demo's WhisperModule (shrunk by ``overrides``), in eval mode as Lightning evaluates it."""
    cfg = compose_config(["experiment=demo", *overrides], tmp_path)
    return instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False).eval()


def test_demo_model_window_and_prompt(tmp_path) -> None:
    module = _module(tmp_path)
    assert module.feature_extractor.chunk_length == 3 and module.feature_extractor.nb_max_frames == 300
    assert module.collator.max_input_seconds == 3
    prompts = []
    module.model.model.decoder.register_forward_pre_hook(
        lambda _, args, kwargs: prompts.append(kwargs["input_ids"]), with_kwargs=True
    )
    texts = module.transcribe(torch.randn(2, 80, 300))
    assert len(texts) == 2 and all(isinstance(text, str) for text in texts)
    first_call = module.tokenizer.convert_ids_to_tokens(prompts[0][0].tolist())
    assert first_call == ["<|startoftranscript|>", "<|hi|>", "<|transcribe|>", "<|notimestamps|>"]
    with pytest.raises(ValueError, match="3000 mel input features|timestamp"):
        module.transcribe(torch.randn(1, 80, 600))  # longer than the 3 s window


def test_freeze_encoder_trains_the_decoder_only(tmp_path) -> None:
    module = _module(tmp_path, "model.freeze_encoder=true")
    encoder = [p.requires_grad for p in module.model.model.encoder.parameters()]
    decoder = [p.requires_grad for p in module.model.model.decoder.parameters()]
    assert not any(encoder) and all(decoder)


def test_gradient_checkpointing_and_attention_options(tmp_path) -> None:
    module = _module(tmp_path, "model.gradient_checkpointing=true", "model.attn_implementation=eager")
    assert module.model.is_gradient_checkpointing
    assert module.model.config._attn_implementation == "eager"


@pytest.mark.parametrize("adapters", ["none", "lora"])
def test_the_label_token_loss_equals_transformers_loss_and_gradients(tmp_path, adapters: str) -> None:
    """The training loss projects only the label tokens onto the vocabulary; loss and every gradient must equal
    transformers' own (labels=...), which projects the padded positions too (this failed with a wrong shift)."""
    no_dropout = ["model.random_init.dropout=0.0"] + (["peft.dropout=0.0"] if adapters == "lora" else [])
    module = _module(tmp_path, f"peft={adapters}", *no_dropout).train()
    torch.manual_seed(0)
    features = torch.randn(3, 80, 300)
    labels = torch.randint(0, 5000, (3, 9))
    labels[0, 4:], labels[2, 7:] = -100, -100  # three lengths: 4, 9, 7 tokens
    trained = [p for p in module.model.parameters() if p.requires_grad]

    def loss_and_grads(compute) -> tuple[torch.Tensor, list[torch.Tensor]]:
        module.model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in trained]

    ours, our_grads = loss_and_grads(lambda: label_token_loss(module.model, features, None, labels))
    theirs, their_grads = loss_and_grads(lambda: module.model(input_features=features, labels=labels).loss)
    torch.testing.assert_close(ours, theirs)
    for mine, reference in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-6)
    batch = {"input_features": features, "labels": labels, "num_samples": 3, "num_skipped": 0}
    torch.testing.assert_close(module.training_step(batch, 0).detach(), theirs)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lang=xx", "lang='xx'"),
        ("model.random_init=null", "model.random_init"),
        ("model.tokenizer=null", "model.tokenizer"),
    ],
)
def test_bad_model_settings_name_the_key(tmp_path, override: str, message: str) -> None:
    with pytest.raises(InstantiationException, match=message):
        _module(tmp_path, override)


# English-only checkpoints --------------------------------------------------------------------------------
def _english_module(tmp_path: Path, source: str, *overrides: str) -> WhisperModule:
    """An English-only WhisperModule: a replica of whisper-small.en, or random init from its tokenizer."""
    if source == "checkpoint":
        replica = build_whisper_replica("english", tmp_path / "small.en")
        init = [f"model.name_or_path={replica}", "model.tokenizer=null", "model.random_init=null"]
    else:
        init = ["model.tokenizer=${asset:whisper_tokenizer_en}"]
    return _module(tmp_path, *init, "lang=en", "model.generation_max_length=8", *overrides)


@pytest.mark.parametrize("source", ["checkpoint", "random init"])
def test_english_only_whisper_has_no_language_or_task_prompt(tmp_path, source: str) -> None:
    module = _english_module(tmp_path, source)
    labels = module.tokenizer.convert_ids_to_tokens(module.collator.encode_text(["hello world"])[0])
    assert labels[0] == "<|notimestamps|>" and labels[-1] == "<|endoftext|>"
    assert not {"<|en|>", "<|transcribe|>"} & set(labels)
    prompts = []
    module.model.model.decoder.register_forward_pre_hook(
        lambda _, args, kwargs: prompts.append(kwargs["input_ids"]), with_kwargs=True
    )
    frames = module.feature_extractor.nb_max_frames
    texts = module.transcribe(torch.randn(2, 80, frames))  # raised "Cannot specify `task` or `language`"
    assert len(texts) == 2
    assert module.tokenizer.convert_ids_to_tokens(prompts[0][0].tolist()) == [
        "<|startoftranscript|>",
        "<|notimestamps|>",
    ]
    assert module.model.generation_config.is_multilingual is False  # as transformers writes .en checkpoints
    assert not hasattr(module.model.generation_config, "lang_to_id")


@pytest.mark.parametrize(
    ("override", "message"),
    [("lang=hi", r"lang=hi \(model.language\)"), ("model.task=translate", "model.task=translate")],
)
def test_english_only_whisper_refuses_another_language_or_task(tmp_path, override: str, message: str) -> None:
    with pytest.raises(InstantiationException, match=message + ".*English-only"):
        _english_module(tmp_path, "random init", override)


def test_evaluate_and_pipeline_decode_an_english_only_export_as_training(tmp_path) -> None:
    module = _english_module(tmp_path, "checkpoint")
    module.export(tmp_path / "export")
    examples = _demo_examples(range(4))
    expected = module.transcribe(module.collator(examples)["input_features"])
    recognizer = Recognizer(str(tmp_path / "export"), language="en", generation_max_length=None)
    batch = recognizer.collator()(examples)
    assert recognizer(batch["inputs"], batch["lengths"]) == expected
    assert _pipeline_texts(tmp_path / "export", examples) == [text.strip() for text in expected]
    with pytest.raises(ValueError, match="language=hi.*English-only"):
        Recognizer(str(tmp_path / "export"), language="hi")


# the export decodes as training's evaluation ----------------------------------------------------------
def test_export_generation_config_carries_evaluation_settings(tmp_path) -> None:
    module = _module(tmp_path, "model.num_beams=2")
    before = module.model.generation_config.to_dict()
    module.export(tmp_path / "export")
    exported = GenerationConfig.from_pretrained(tmp_path / "export")
    assert (exported.max_length, exported.num_beams) == (48, 2)
    assert (exported.language, exported.task, exported.forced_decoder_ids) == ("hi", "transcribe", None)
    assert module.model.generation_config.to_dict() == before  # the module's own settings are left alone
    examples = _demo_examples(range(3))
    expected = module.transcribe(module.collator(examples)["input_features"])
    assert _pipeline_texts(tmp_path / "export", examples) == [text.strip() for text in expected]
    # asrkit.evaluate with num_beams/generation_max_length null takes them from the export as well
    recognizer = Recognizer(str(tmp_path / "export"), language="hi", num_beams=None, generation_max_length=None)
    batch = recognizer.collator()(examples)
    assert recognizer(batch["inputs"], batch["lengths"]) == expected


def test_a_static_key_value_cache_decodes_the_same_texts(tmp_path) -> None:
    """evaluate's cache_implementation=static: generate() with a preallocated cache, the same greedy texts."""
    torch.manual_seed(0)
    _module(tmp_path).export(tmp_path / "export")
    examples = _demo_examples(range(4))
    texts = {}
    for cache in (None, "static"):
        recognizer = Recognizer(str(tmp_path / "export"), language="hi", cache_implementation=cache)
        assert recognizer.generate_kwargs.get("cache_implementation") == cache
        batch = recognizer.collator()(examples)
        texts[cache] = recognizer(batch["inputs"], batch["lengths"])
    assert texts["static"] == texts[None] and any(text.strip() for text in texts[None])


# utterances longer than the window ------------------------------------------------------------------
def _demo_examples(numbers: Iterable[int]) -> list[dict[str, Any]]:
    rows = demo_rows("test")
    examples = []
    for number in numbers:
        audio, _ = soundfile.read(rows[number]["file_name"], dtype="float32")
        examples.append(
            {"index": number, "audio": audio, "text": rows[number]["text"], "reference": rows[number]["text"]}
        )
    return examples


def _joined(index: int, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One utterance made of several demo clips."""
    text = " ".join(part["text"] for part in parts)
    return {"index": index, "audio": np.concatenate([part["audio"] for part in parts]), "text": text, "reference": text}


def _pipeline_texts(export: Path, examples: list[dict[str, Any]]) -> list[str]:
    recognizer = pipeline("automatic-speech-recognition", model=str(export))
    return [recognizer({"raw": e["audio"], "sampling_rate": 16000})["text"].strip() for e in examples]


def test_long_utterances_are_decoded_long_form_by_training_evaluate_and_transcribe(tmp_path) -> None:
    torch.manual_seed(0)
    module = _module(tmp_path, "model.generation_max_length=16")
    short = _demo_examples([0, 1])
    long = _joined(100, _demo_examples(range(2, 6)))
    seconds = len(long["audio"]) / 16000
    assert seconds > 2 * module.feature_extractor.chunk_length
    examples = [short[0], long, short[1]]

    batch = module.collator(examples)
    assert batch["input_features"].shape == (3, 80, 300)  # training's inputs: the 3 s window
    whole = batch["long_form"]
    assert whole["rows"] == [1] and whole["input_features"].shape[-1] == int(whole["attention_mask"].sum())
    assert whole["input_features"].shape[-1] >= len(long["audio"]) // module.feature_extractor.hop_length

    calls, encoded = [], []
    generate = module.model.generate
    module.model.generate = lambda **kwargs: calls.append(kwargs) or generate(**kwargs)
    module.model.model.encoder.register_forward_hook(lambda *_: encoded.append(len(calls)))
    predictions = module._eval_step(batch)  # what training's validation and test run
    assert [p[0] for p in predictions] == [0, 100, 1] and predictions[1][1] == long["reference"]
    hypotheses = [p[2] for p in predictions]
    assert hypotheses[1].strip(), "the long utterance is transcribed"
    long_call = calls[1]  # the whole utterance, its frames and timestamps: transformers' long-form decoding
    assert long_call["return_timestamps"] and long_call["input_features"].shape[-1] == whole["input_features"].shape[-1]
    assert encoded.count(2) >= 2, "long-form decoding moved past the first window"
    module.model.generate = generate
    alone = module.collator(short)  # short utterances decode exactly as they did without the long one
    assert module.transcribe(alone["input_features"]) == [hypotheses[0], hypotheses[2]]

    module.export(tmp_path / "export")  # asrkit.evaluate's recogniser, with the export's generation settings
    recognizer = Recognizer(str(tmp_path / "export"), language="hi", generation_max_length=None)
    inputs = recognizer.collator()(examples)
    assert recognizer(inputs["inputs"], inputs["lengths"]) == hypotheses

    folder = tmp_path / "audio"  # asrkit.transcribe hears the long file whole, not in hard windows
    folder.mkdir()
    for name, example in (("a_short.flac", short[0]), ("b_long.flac", long)):
        soundfile.write(folder / name, example["audio"], 16000)
    overrides = [f"checkpoint={tmp_path / 'export'}", f"audio={folder}", "generation_max_length=null"]
    with contextlib.redirect_stdout(io.StringIO()):
        results = transcribe(compose_config(overrides, tmp_path / "out", config_name="transcribe"))
    assert [r["text"] for r in results] == [hypotheses[0].strip(), hypotheses[1].strip()]
    assert results[1]["seconds"] == pytest.approx(seconds)


# config-faithful replicas of the published checkpoints -------------------------------------------------
# kind: vocabulary, mel bins, decoder layers, languages (0: English-only), and the ids of
# <|startoftranscript|>, <|endoftext|>, <|transcribe|>, <|notimestamps|>, as published for that checkpoint
PUBLISHED = {
    "multilingual": (51865, 80, 2, 99, 50258, 50257, 50359, 50363),
    "large-v3": (51866, 128, 2, 100, 50258, 50257, 50360, 50364),
    "large-v3-turbo": (51866, 128, 4, 100, 50258, 50257, 50360, 50364),
    "english": (51864, 80, 2, 0, 50257, 50256, 50358, 50362),
    "distil-english": (51864, 80, 2, 0, 50257, 50256, 50358, 50362),
}


@pytest.mark.parametrize("kind", WHISPER_KINDS)
def test_a_replica_has_the_published_layout(kind: str, tmp_path: Path) -> None:
    vocabulary, mels, decoder_layers, languages, sot, eot, transcribe_id, no_timestamps = PUBLISHED[kind]
    directory = build_whisper_replica(kind, tmp_path / "replica")
    model = WhisperForConditionalGeneration.from_pretrained(directory)
    config, generation = model.config, model.generation_config
    assert (config.vocab_size, config.num_mel_bins, config.decoder_layers) == (vocabulary, mels, decoder_layers)
    assert (config.max_source_positions, config.max_target_positions, generation.max_length) == (1500, 448, 448)
    assert (generation.decoder_start_token_id, generation.eos_token_id, generation.pad_token_id) == (sot, eot, eot)
    assert generation.no_timestamps_token_id == no_timestamps and generation.begin_suppress_tokens == [220, eot]
    assert generation.is_multilingual is bool(languages)
    assert len(getattr(generation, "lang_to_id", {})) == languages
    if languages:
        assert generation.task_to_id == {"translate": transcribe_id - 1, "transcribe": transcribe_id}
    controls = [sot, transcribe_id - 1, transcribe_id, transcribe_id + 1, transcribe_id + 2, no_timestamps - 1]
    assert generation.suppress_tokens[:3] == [1, 2, 7] and generation.suppress_tokens[-6:] == controls
    extractor = WhisperFeatureExtractor.from_pretrained(directory)
    assert (extractor.feature_size, extractor.chunk_length, extractor.n_samples) == (mels, 30, 480000)
    tokenizer = WhisperTokenizer.from_pretrained(directory)
    assert len(tokenizer) == vocabulary and tokenizer.convert_tokens_to_ids("<|notimestamps|>") == no_timestamps
    assert (tokenizer.english_spelling_normalizer is not None) is (not languages)  # .en ships normalizer.json
