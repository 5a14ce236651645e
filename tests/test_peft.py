"""LoRA adapters through peft (peft=lora, asrkit.adapters): what trains, what checkpoints keep, how runs resume,
what the export holds and who can load it, and the one-line errors of what cannot work (QLoRA on this CPU)."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from peft import PeftModel
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoConfig, AutoModelForCTC, WhisperConfig, WhisperForConditionalGeneration

from asrkit import adapters, optim
from asrkit.config_check import ConfigError, check_config
from asrkit.evaluate import evaluate
from asrkit.model_card import write_model_card
from asrkit.models.wav2vec2_ctc import Wav2Vec2CTCModule
from asrkit.models.whisper import WhisperModule
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config, transcribe_demo_test_files
from tests.test_distributed import _asrkit, _metrics, _overrides
from tests.test_model_card import _export

UTTERANCES = 4  # test utterances, one per forward pass, heard by training's test and by the export
# four optimizer steps with LoRA; ParameterChanges writes what the fit changed to <run dir>/changes.json
SHORT = [
    *TINY_RUN[1:],
    f"data.max_eval_samples={UTTERANCES}",
    "data.eval_batch_size=1",
    "peft=lora",
    "+callbacks.parameter_changes._target_=tests.test_peft.ParameterChanges",
    "+callbacks.parameter_changes.path=${paths.output_dir}/changes.json",
]
LORA = adapters.AdapterOptions(method="lora", r=4, alpha=8, dropout=0.0, bias="none")


class ParameterChanges(L.Callback):
    """Writes which parameters could train and which the fit changed to ``path`` (JSON)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = {name: p.detach().clone() for name, p in module.named_parameters()}

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainable = sorted(name for name, p in module.named_parameters() if p.requires_grad)
        changed = sorted(name for name, p in module.named_parameters() if not torch.equal(p, self.start[name]))
        self.path.write_text(json.dumps({"trainable": trainable, "changed": changed}))


def _changes(run: Path) -> dict[str, set[str]]:
    return {key: set(names) for key, names in json.loads((run / "changes.json").read_text()).items()}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    """The model's output on a fixed random input (Whisper: a 3 s window and a two-token prompt)."""
    model.eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if model.config.model_type == "whisper":
            features = torch.randn(1, model.config.num_mel_bins, 300, generator=generator)
            return model(input_features=features, decoder_input_ids=torch.tensor([[50258, 50276]])).logits
        return model(input_values=torch.randn(1, 16_000, generator=generator)).logits


def _exported_keys(export: Path) -> set[str]:
    return set(load_file(export / "model.safetensors"))


def _steps(run: Path) -> list[int]:
    return [event.step for event in EventAccumulator(str(run / "tensorboard")).Reload().Scalars("train/loss")]


def _resume(overrides: list[str], last: Path, run: Path) -> None:
    more = ["export=false", "data.test_split=null", "trainer.max_steps=6", f"resume={last}"]
    train(compose_config([*overrides, *more], run))
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 6
    assert min(_steps(run)) >= 4, "the resumed run restarted from step 0"


# the tiny Whisper fine-tuned from saved weights: checkpoints keep the adapters alone ------------------------
@pytest.fixture(scope="module")
def whisper_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's random-init Whisper written by save_pretrained: a pre-trained checkpoint for model.name_or_path."""
    base = tmp_path_factory.mktemp("whisper_base")
    cfg = compose_config(["experiment=demo"], base)
    instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False).export(base)
    return base


def _whisper_run(base: Path) -> list[str]:
    model = [f"model.name_or_path={base}", "model.tokenizer=null", "model.generation_max_length=12"]
    return ["experiment=demo", *SHORT, *model]


@pytest.fixture(scope="module")
def whisper_run(whisper_base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[str]]]:
    run = tmp_path_factory.mktemp("whisper_lora")
    train(compose_config([*_whisper_run(whisper_base), "export_adapter_only=true"], run))
    return run, _changes(run)


def test_whisper_lora_trains_the_adapters_alone(whisper_run: tuple[Path, dict[str, set[str]]]) -> None:
    run, changes = whisper_run
    assert changes["trainable"] and all(".lora_" in name for name in changes["trainable"])
    assert changes["changed"] == changes["trainable"]  # every frozen weight bit-identical, every adapter moved
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in changes["trainable"]} == set(adapters.ATTENTION)
    norms = EventAccumulator(str(run / "tensorboard")).Reload().Scalars("train/grad_norm")  # the guard's, of adapters
    assert len(norms) == 4 and all(0 < event.value < float("inf") for event in norms)


def test_whisper_lora_checkpoints_keep_the_trained_weights_and_resume(
    whisper_base: Path, whisper_run: tuple[Path, dict[str, set[str]]], tmp_path: Path
) -> None:
    run, changes = whisper_run
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert set(checkpoint["state_dict"]) == changes["trainable"]  # the frozen weights are name_or_path's
    assert len(checkpoint["optimizer_states"][0]["state"]) == len(changes["trainable"])  # AdamW moments: adapters
    assert last.stat().st_size < (whisper_base / "model.safetensors").stat().st_size / 4
    _resume(_whisper_run(whisper_base), last, tmp_path)


def test_whisper_lora_export_is_a_merged_plain_model_that_hears_what_training_heard(
    whisper_base: Path, whisper_run: tuple[Path, dict[str, set[str]]], tmp_path: Path
) -> None:
    run, _ = whisper_run
    export = run / "export"
    assert not (export / "adapter_config.json").exists()
    assert not {key for key in _exported_keys(export) if "lora_" in key or "base_layer" in key}
    assert _exported_keys(export) == _exported_keys(whisper_base)
    trained = [json.loads(line)["hypothesis"] for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    _, heard = transcribe_demo_test_files(export, count=UTTERANCES)
    assert [text.strip() for text in heard] == [text.strip() for text in trained]
    card = (export / "README.md").read_text()
    assert "LoRA of rank 32" in card and "q_proj, k_proj, v_proj, out_proj" in card and "merged" in card

    best = next((run / "checkpoints").glob("best-step*.ckpt"))
    module = WhisperModule.load_from_checkpoint(best, map_location="cpu")  # the base read from name_or_path
    plain = WhisperForConditionalGeneration.from_pretrained(export)
    assert torch.allclose(_logits(module.model), _logits(plain), atol=1e-5)
    overrides = [f"checkpoint={best}", "data=demo", f"max_eval_samples={UTTERANCES}", "batch_size=1"]
    with contextlib.redirect_stdout(io.StringIO()):  # a .ckpt: rebuilt, exported, then evaluated
        evaluate(compose_config([*overrides, "generation_max_length=12"], tmp_path, config_name="evaluate"))
    rows = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(row)["hypothesis"] for row in rows] == trained


def test_export_adapter_only_saves_an_adapter_that_peft_loads_onto_the_base(
    whisper_base: Path, whisper_run: tuple[Path, dict[str, set[str]]]
) -> None:
    export = Path(whisper_run[0]) / "export"
    adapted = PeftModel.from_pretrained(
        WhisperForConditionalGeneration.from_pretrained(whisper_base), export / "adapter"
    )
    assert json.loads((export / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        whisper_base
    )
    plain = WhisperForConditionalGeneration.from_pretrained(export)
    assert torch.allclose(_logits(adapted), _logits(plain), atol=1e-5)


# the tiny wav2vec2 CTC from random init: checkpoints keep every weight --------------------------------------
@pytest.fixture(scope="module")
def ctc_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[str]]]:
    run = tmp_path_factory.mktemp("ctc_lora")
    train(compose_config(["experiment=demo_ctc", *SHORT, f"model.vocab_cache_dir={run / 'vocab'}"], run))
    return run, _changes(run)


def test_ctc_lora_trains_the_adapters_and_the_output_layer(ctc_run: tuple[Path, dict[str, set[str]]]) -> None:
    _, changes = ctc_run
    head = {name for name in changes["trainable"] if ".lm_head.modules_to_save." in name}
    assert head and all(".lora_" in name for name in changes["trainable"] - head)
    assert changes["changed"] == changes["trainable"]
    layers = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in changes["trainable"] - head}
    assert layers == set(adapters.ATTENTION + adapters.FEED_FORWARD)


def test_ctc_lora_resumes_and_exports_a_merged_plain_model(
    ctc_run: tuple[Path, dict[str, set[str]]], tmp_path: Path
) -> None:
    run, changes = ctc_run
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert changes["trainable"] < set(state)  # random init: the frozen weights travel too
    _resume(["experiment=demo_ctc", *SHORT, f"model.vocab_cache_dir={run / 'vocab'}"], last, tmp_path)

    export = run / "export"
    assert not {key for key in _exported_keys(export) if "lora_" in key or "modules_to_save" in key}
    module = Wav2Vec2CTCModule.load_from_checkpoint(next((run / "checkpoints").glob("best-step*.ckpt")))
    plain = AutoModelForCTC.from_pretrained(export)
    assert type(plain).__name__ == "Wav2Vec2ForCTC"
    assert torch.allclose(_logits(module.model), _logits(plain), atol=1e-5)
    trained = [json.loads(line)["hypothesis"] for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    _, heard = transcribe_demo_test_files(export, count=UTTERANCES)
    assert [text.strip() for text in heard] == [text.strip() for text in trained]


def test_a_ctc_checkpoint_of_the_trained_weights_alone_loads_onto_its_base(tmp_path: Path) -> None:
    """load_from_checkpoint builds the network from name_or_path, then loads the adapters and lm_head."""
    overrides = ["experiment=demo_ctc", "model.tokenizer_dir=null", f"model.vocab_cache_dir={tmp_path / 'vocab'}"]
    cfg = compose_config(overrides, tmp_path)
    base = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    base.build_vocabulary(["नमस्ते दुनिया", "एक दो तीन"])
    base.configure_model()
    base.export(tmp_path / "base")
    cfg = compose_config([*overrides, "peft=lora", f"model.name_or_path={tmp_path / 'base'}"], tmp_path)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, tokenizer=str(tmp_path / "base"), _recursive_=False)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.1)  # as if trained
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == {name for name, p in module.named_parameters() if p.requires_grad}
    torch.save(checkpoint | {"pytorch-lightning_version": L.__version__}, tmp_path / "trained.ckpt")

    loaded = Wav2Vec2CTCModule.load_from_checkpoint(tmp_path / "trained.ckpt")
    assert torch.equal(_logits(loaded.model), _logits(module.model))
    loaded.export(tmp_path / "export")
    assert torch.allclose(
        _logits(AutoModelForCTC.from_pretrained(tmp_path / "export")), _logits(module.model), atol=1e-5
    )


@pytest.mark.slow
def test_a_ddp_lora_run_reduces_the_adapters_gradients_alone(tmp_path: Path) -> None:
    """Two CPU processes: DDP reduces only what trains, and every adapter gets a gradient each step (without
    find_unused_parameters, one that did not would stop the second step), so the run ends and exports."""
    run = tmp_path / "run"
    log = _asrkit(_overrides(hw="ddp_cpu", peft="lora", hydra__run__dir=run), tmp_path, tmp_path / "ddp.log")
    assert _metrics(run)["global_step"] == 2 and "find_unused_parameters" not in log
    assert "global rank 1 stopped at optimizer step 2" in (run / "train_ddp_process_1.log").read_text()
    assert "trainable 393,216 of 17,768,192 parameters (2.21 %)" in log
    assert not {key for key in _exported_keys(run / "export") if "lora_" in key}


# what the adapters attach to, and what the optimizer holds ---------------------------------------------------
def _tiny(model_type: str) -> torch.nn.Module:
    if model_type == "whisper":
        sizes = {"encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2}
        tokens = {
            "vocab_size": 64,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 1,
            "decoder_start_token_id": 2,
        }
        config = WhisperConfig(d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, **tokens, **sizes)
        return WhisperForConditionalGeneration(config)
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    conv = {"conv_dim": [16, 16], "conv_stride": [5, 4], "conv_kernel": [10, 8], "num_conv_pos_embeddings": 16}
    config = AutoConfig.for_model(
        model_type, vocab_size=10, layerdrop=0.0, num_conv_pos_embedding_groups=2, **sizes, **conv
    )
    return AutoModelForCTC.from_config(config, attn_implementation="eager")


@pytest.mark.parametrize("model_type", sorted(adapters.DEFAULT_TARGETS))
def test_every_default_adapter_of_each_family_gets_a_gradient(model_type: str) -> None:
    """An adapter beside a layer whose weight the forward reads directly (WavLM's attention) never would."""
    torch.manual_seed(0)
    keep = () if model_type == "whisper" else ("lm_head",)
    model = adapters.wrap(_tiny(model_type), LORA, keep=keep)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)  # B starts at zero, which leaves A without a gradient
    if model_type == "whisper":
        features = torch.randn(1, 80, 3000)
        loss = model(input_features=features, decoder_input_ids=torch.tensor([[1, 2]])).logits.sum()
    else:
        loss = model(input_values=torch.randn(2, 8000)).logits.sum()
    loss.backward()
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert len(trained) >= 4 * len(adapters.DEFAULT_TARGETS[model_type])
    assert [name for name, p in trained.items() if p.grad is None or not p.grad.any()] == []


def test_naming_a_bypassed_or_unknown_layer_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match=r"peft.target_modules=.*wavlm's forward reads the weights of q_proj") as bad:
        adapters.wrap(_tiny("wavlm"), adapters.AdapterOptions(**{**LORA.__dict__, "target_modules": ("q_proj",)}))
    assert "\n" not in str(bad.value)
    typo = adapters.AdapterOptions(**{**LORA.__dict__, "target_modules": ("q_proj", "v_porj")})
    with pytest.raises(ValueError, match=r"peft.target_modules=\['q_proj', 'v_porj'\]: v_porj names no linear") as bad:
        adapters.wrap(_tiny("whisper"), typo)
    assert "close: k_proj, q_proj, v_proj" in str(bad.value) and "\n" not in str(bad.value)


def test_the_optimizer_holds_the_adapters_alone(tmp_path: Path) -> None:
    model = adapters.wrap(_tiny("whisper"), LORA)
    trained = {id(p) for p in model.parameters() if p.requires_grad}
    optimizer = optim.build_optimizer(model, compose_config(["experiment=demo"], tmp_path).optimizer)
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == trained
    model(input_features=torch.randn(1, 80, 3000), decoder_input_ids=torch.tensor([[1, 2]])).logits.sum().backward()
    optimizer.step()
    assert {id(p) for p in optimizer.state} == trained  # moments for the adapters only


@pytest.mark.cpu_precision
def test_the_card_of_a_qlora_ctc_run_names_the_adapters_the_head_and_the_bits(tmp_path: Path) -> None:
    export = _export(tmp_path / "run", "wav2vec2", "Wav2Vec2ForCTC")
    cfg = compose_config(["model=wav2vec2_ctc", "peft=qlora", "peft.r=8"], tmp_path / "run")
    card = write_model_card(export, cfg, {"global_step": 10}).read_text()
    adapted = "on q_proj, k_proj, v_proj, out_proj, intermediate_dense, output_dense and the output layer (lm_head)"
    assert "LoRA of rank 8 (alpha 64, dropout 0.05)" in card and adapted in card
    assert "loaded in 4 bit by bitsandbytes (QLoRA)" in card and "a plain `Wav2Vec2ForCTC`, no peft needed" in card
    assert "tags:\n- asrkit\n- wav2vec2\n- lora\n" in card  # a Hub tag


# what cannot work stops before anything loads, in one line ---------------------------------------------------
ERRORS = {
    ("peft=qlora",): "peft=qlora: model.name_or_path is null (random init), so there are no pre-trained weights",
    ("peft=qlora", "model=whisper_small"): "peft=qlora: bitsandbytes 4-bit weights need a CUDA GPU, and "
    "hw.accelerator=cpu has none here; use peft=lora",
    ("model=wav2vec2_pretrain_demo", "peft=lora"): "peft=lora: asrkit.models.wav2vec2_pretrain.Wav2Vec2PretrainModule"
    " takes no adapters",
    ("export_adapter_only=true",): "export_adapter_only=true: peft=none trains no adapter",
    ("peft=lora", "export_adapter_only=true"): "export_adapter_only=true: model.name_or_path is null",
    ("peft=lora", "peft.r=0"): "peft.r=0: the adapters' rank, an integer > 0",
    ("peft=lora", "peft.dropout=abc"): "peft.dropout='abc': a probability in [0, 1)",
    ("peft=lora", "peft.bias=some"): "peft.bias='some': choose none, all or lora_only",
    ("peft=lora", "+peft.load_in_bits=4"): "peft.load_in_bits=4: only peft=qlora loads weights in k bit",
    ("peft=qlora", "model=whisper_small", "peft.load_in_bits=3"): "peft.load_in_bits=3: 4 or 8",
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU messages")
@pytest.mark.parametrize("overrides", list(ERRORS), ids=[" ".join(o) for o in ERRORS])
def test_what_cannot_work_is_a_config_error_naming_the_key(overrides: tuple[str, ...], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(["experiment=demo", *overrides], tmp_path))
    assert str(error.value).startswith(ERRORS[overrides]) and "\n" not in str(error.value)


def test_peft_without_the_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now fails
    with pytest.raises(ImportError) as error:
        check_config(compose_config(["experiment=demo", "peft=lora"], tmp_path))
    assert "pip install 'asrkit[peft]'" in str(error.value) and "\n" not in str(error.value)
    check_config(compose_config(["experiment=demo"], tmp_path))  # peft=none never imports it


def test_a_qlora_checkpoint_is_read_with_the_same_adapters_on_full_precision_weights() -> None:
    qlora: dict[str, Any] = {**LORA.__dict__, "method": "qlora", "load_in_bits": 8}
    assert adapters.AdapterOptions.parse(adapters.AdapterOptions.parse(qlora).unquantized()) == LORA
