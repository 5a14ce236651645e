"""WhisperModule options on the tiny random-init model (built from WhisperConfig; nothing downloaded)."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from asrkit.models.whisper import WhisperModule
from tests.conftest import compose_config


def _module(tmp_path, *overrides: str) -> WhisperModule:
    cfg = compose_config(["experiment=demo", *overrides], tmp_path)
    return instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)


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
