"""wav2vec2 + CTC: text preparation, vocabulary and its cache, collator, pre-training exports, loss, decoding,
whole runs, and replicas of the published checkpoints of the family (wav2vec2, XLS-R, HuBERT, WavLM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoProcessor,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForPreTraining,
    pipeline,
)

from asrkit.config import asset_path
from asrkit.data.padding import IGNORE_INDEX
from asrkit.data.text import chars_to_ignore_pattern, prepare_label_text_ignoring
from asrkit.models.ctc import Wav2Vec2CTCCollator, ctc_loss, greedy_decode
from asrkit.models.ctc_vocab import build_ctc_tokenizer, build_vocabulary, cached_vocabulary
from asrkit.models.wav2vec2_ctc import Wav2Vec2CTCModule
from asrkit.train import steppable, train
from tests.conftest import TINY_RUN, compose_config
from tests.replicas.ctc import CTC_KINDS, PREPROCESSORS, TOKENIZERS, build_ctc_replica, published_config

RECIPE_CHARS = [",", "?", ".", "!", "-", ";", ":", '"', "“", "%", "‘", "”", "�"]  # run_speech_recognition_ctc


def _ctc_run(tmp: Path, *extra: str) -> list[str]:
    return ["experiment=demo_ctc", *TINY_RUN[1:], f"model.vocab_cache_dir={tmp / 'vocab_cache'}", *extra]


# text and vocabulary ------------------------------------------------------------------------------
def test_chars_to_ignore_are_deleted_literally_before_lower_casing() -> None:
    pattern = chars_to_ignore_pattern(RECIPE_CHARS)
    text = 'He said: "Well-known, 42%!" ‘ok’?'
    # joined into one [...] class, "!-;" would be a range that also deletes the digits and "'"
    assert prepare_label_text_ignoring(text, pattern, do_lower_case=True) == "he said wellknown 42 ok’"
    assert prepare_label_text_ignoring("it's 3", pattern) == "it's 3"
    assert prepare_label_text_ignoring("a1b22c", chars_to_ignore_pattern(r"\d+")) == "abc"  # a string: regex
    assert chars_to_ignore_pattern(None) is None and chars_to_ignore_pattern([]) is None


def test_vocabulary_is_the_training_characters_then_delimiter_unk_pad() -> None:
    vocabulary = build_vocabulary(["ba c", "ca b"])
    assert vocabulary == {"a": 0, "b": 1, "c": 2, "|": 3, "[UNK]": 4, "[PAD]": 5}
    assert build_vocabulary(["one"])["|"] == 3  # the delimiter is there even without a space
    with pytest.raises(ValueError, match="word delimiter"):
        build_vocabulary(["a|b"])


def test_tokenizer_maps_spaces_to_the_delimiter_and_unknown_characters_to_unk(tmp_path: Path) -> None:
    tokenizer = build_ctc_tokenizer(["मित्र हवा", "नया"], cache_dir=tmp_path)
    vocabulary = tokenizer.get_vocab()
    ids = tokenizer(["हवा नया", "हवाई"]).input_ids
    assert ids[0][3] == vocabulary["|"] and ids[1][-1] == vocabulary["[UNK]"]  # ई is not in training
    assert tokenizer.pad_token_id == vocabulary["[PAD]"] == len(vocabulary) - 1 == len(tokenizer) - 1
    # greedy CTC output: repeats merge, blanks ([PAD]) separate a doubled letter and are dropped
    h, v, a, n, y = (vocabulary[c] for c in "हवानय")
    blank, space = tokenizer.pad_token_id, vocabulary["|"]
    assert tokenizer.decode([h, h, blank, v, v, a, space, space, n, y, blank, a]) == "हवा नया"


def test_greedy_decoding_of_a_batch_spells_each_utterance_as_its_best_path_alone(tmp_path: Path) -> None:
    """greedy_decode merges and drops symbols over the whole batch at once; each text must be byte for byte what
    the tokenizer makes of that utterance's own best path (as asrkit decoded before), at any length, for tensors
    and arrays, and for ids past the vocabulary (a head wider than the tokenizer: all its unknown token)."""
    tokenizer = build_ctc_tokenizer(["मित्र हवा", "नया दिन", "ab ba"], cache_dir=tmp_path)
    generator = torch.Generator().manual_seed(0)
    width = len(tokenizer) + 3
    for trial in range(40):
        lengths = torch.randint(0, 60, (int(torch.randint(1, 9, (1,), generator=generator)),), generator=generator)
        logits = [torch.randn(int(n), width, generator=generator) for n in lengths]
        for row in logits:
            row[:, tokenizer.pad_token_id] += 1.5  # mostly blanks, as a trained model's
            row[: len(row) // 3, -2:] += 3.0 * (trial % 2)  # runs of unknown ids, half the trials
        alone = [tokenizer.decode(row.argmax(dim=-1)) for row in logits]
        assert greedy_decode(tokenizer, logits) == alone
        assert greedy_decode(tokenizer, [row.numpy() for row in logits]) == alone
    assert any(text for text in alone) and greedy_decode(tokenizer, []) == []


def test_vocabulary_cache_is_reused_for_the_same_data_and_rebuilt_when_it_changes(tmp_path: Path) -> None:
    texts = ["the cat", "a dog"]
    first, built = cached_vocabulary(texts, tmp_path)
    assert built and json.loads(first.read_text())["|"] == len(set("thecatadog"))
    first.write_text(json.dumps({"sentinel": 0}))  # a reused file is read, not rebuilt
    again, built = cached_vocabulary(list(texts), tmp_path)
    assert again == first and not built and json.loads(again.read_text()) == {"sentinel": 0}
    changed, built = cached_vocabulary(texts + ["a cow"], tmp_path)
    assert built and changed != first and "w" in json.loads(changed.read_text())
    other_tokens, built = cached_vocabulary(texts, tmp_path, word_delimiter="_")
    assert built and other_tokens not in (first, changed)


def test_collator_normalises_like_the_feature_extractor_and_pads_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    waves = [(0.3 * rng.standard_normal(n) + 0.1).astype(np.float32) for n in (16_000, 6_000)]
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    collator = Wav2Vec2CTCCollator(extractor, build_ctc_tokenizer(["ab", "b a"], cache_dir=tmp_path))
    texts = ["ab a", "b"]
    examples = [{"index": i, "audio": waves[i], "text": texts[i], "reference": texts[i]} for i in range(2)]
    batch = collator([examples[0], None, examples[1]])
    expected = extractor(waves, sampling_rate=16_000, padding=True, return_tensors="pt")
    torch.testing.assert_close(batch["input_values"], expected.input_values, atol=1e-5, rtol=1e-5)
    assert torch.equal(batch["attention_mask"], expected.attention_mask.long())
    assert batch["labels"].shape == (2, 4) and (batch["labels"][1, 1:] == IGNORE_INDEX).all()
    assert batch["padding_fraction"] == pytest.approx(10_000 / 32_000)
    assert batch["num_skipped"] == 1 and batch["indices"] == [0, 1]
    with pytest.raises(ValueError, match="tokenizer or a vocabulary"):
        Wav2Vec2CTCCollator(extractor)


# loading a pre-training export --------------------------------------------------------------------
def test_a_pretraining_save_pretrained_dir_loads_its_encoder_with_a_new_ctc_head(tmp_path: Path) -> None:
    cfg = compose_config(_ctc_run(tmp_path), tmp_path)
    settings = OmegaConf.to_container(cfg.model.random_init)  # the demo's tiny network
    pretrained = Wav2Vec2ForPreTraining(Wav2Vec2Config(**settings, num_negatives=10))
    pretrained.save_pretrained(tmp_path / "pretrained")

    overrides = [f"model.name_or_path={tmp_path / 'pretrained'}", "model.tokenizer_dir=null"]
    cfg = compose_config(_ctc_run(tmp_path, *overrides), tmp_path)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    module.collator.build_vocabulary(["मित्र हवा", "नया"])  # what the datamodule does when it sets up training
    module.configure_model()

    loaded = module.model.wav2vec2.state_dict()
    for name, weight in pretrained.wav2vec2.state_dict().items():
        assert torch.equal(loaded[name], weight), name
    assert module.model.lm_head.out_features == len(module.collator.tokenizer)
    assert module.model.config.pad_token_id == module.collator.tokenizer.pad_token_id
    assert module.model.config.ctc_zero_infinity and module.model.config.layerdrop == 0.0
    batch = module.collator(
        [{"index": 0, "audio": np.zeros(16_000, np.float32) + 0.01, "text": "हवा नया", "reference": "हवा नया"}]
    )
    inputs = {key: batch[key] for key in ("input_values", "attention_mask", "labels")}
    assert torch.isfinite(module.model(**inputs).loss)


# loss and decoding --------------------------------------------------------------------------------
TEXTS = ["मित्र हवा", "नया", "हवा नया मित्र"]
GROUP_NORM = [
    f"model.random_init.{key}={value}"
    for key, value in (("feat_extract_norm", "group"), ("do_stable_layer_norm", "false"))
]


def _module(tmp_path: Path, *overrides: str) -> Wav2Vec2CTCModule:
    cfg = compose_config(_ctc_run(tmp_path, "model.tokenizer_dir=null", *overrides), tmp_path)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    module.collator.build_vocabulary(TEXTS)  # what the datamodule does when it sets up training
    module.configure_model()
    return module


def _examples(lengths: tuple[int, ...]) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "index": i,
            "audio": (0.1 * rng.standard_normal(n) + 0.02).astype(np.float32),
            "text": TEXTS[i % 3],
            "reference": TEXTS[i % 3],
        }
        for i, n in enumerate(lengths)
    ]


def test_the_ctc_loss_runs_in_float32_under_bf16_autocast_as_transformers_computes_it(tmp_path: Path) -> None:
    module = _module(tmp_path, "model.mask_time_prob=0.0")  # no SpecAugment: the same forward every time
    batch = module.collator(_examples((16_000, 6_400, 11_000)))
    logits: list[torch.Tensor] = []
    module.model.lm_head.register_forward_hook(lambda _module, _inputs, output: logits.append(output))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = module.training_step(batch, 0)
    assert logits[-1].dtype == torch.bfloat16  # the network ran in bf16...
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)  # ...the loss did not
    frames = module.model._get_feat_extract_output_lengths(batch["input_lengths"])
    blank = module.collator.tokenizer.pad_token_id
    again = ctc_loss(logits[-1].float(), batch["labels"], frames, blank)  # autocast off, float32 logits
    assert torch.equal(mixed, again)
    (gradient,) = torch.autograd.grad(mixed, logits[-1])
    assert gradient.dtype == torch.bfloat16 and torch.isfinite(gradient).all()

    full = module.training_step(batch, 0)  # float32 throughout: transformers' own loss, same settings
    inputs = {key: batch[key] for key in ("input_values", "attention_mask", "labels")}
    reference = module.model(**inputs)
    assert module.model.config.ctc_loss_reduction == "mean" and module.model.config.pad_token_id == blank
    torch.testing.assert_close(full, reference.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed, full, rtol=0.05, atol=0.05)


def test_a_module_readied_outside_a_trainer_saves_its_vocabulary_as_train_does(tmp_path: Path) -> None:
    # benchmarks/gpu_check.py readies a run's own config (model.tokenizer_dir set) with no Trainer attached
    cfg = compose_config(["experiment=demo_ctc", f"model.tokenizer_dir={tmp_path / 'tokenizer'}"], tmp_path)
    module, datamodule = steppable(cfg)
    vocabulary = json.loads((tmp_path / "tokenizer" / "vocab.json").read_text())
    assert vocabulary == module.collator.tokenizer.get_vocab()
    module.training_step(next(iter(datamodule.train_dataloader())), 0).backward()


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_validation_decodes_each_utterance_as_it_decodes_alone(norm: str, tmp_path: Path) -> None:
    """A group-norm front end fed no mask (wav2vec2-base's layout) would hear the batch's padding."""
    module = _module(tmp_path, *(GROUP_NORM if norm == "group" else []))
    assert module.feature_extractor.return_attention_mask == (norm == "layer")
    module.eval()
    examples = _examples((16_000, 6_400, 11_000, 6_400))

    def transcribe(batch: dict) -> list[str]:
        return module.transcribe(batch["input_values"], batch["input_lengths"], batch.get("attention_mask"))

    together = transcribe(module.collator(examples))
    alone = [text for example in examples for text in transcribe(module.collator([example]))]
    assert together == alone and sum(map(bool, alone)) >= 2  # the random model does say something


# whole runs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four steps of experiment=demo_ctc, with a test before training (the vocabulary must exist by then)."""
    out = tmp_path_factory.mktemp("ctc_run")
    train(compose_config(_ctc_run(out, "test_before_training=true"), out))
    return out


def test_short_run_writes_checkpoints_metrics_vocabulary_and_a_working_export(short_run: Path) -> None:
    checkpoints = sorted(p.name for p in (short_run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("best-step") for name in checkpoints)
    results = json.loads((short_run / "metrics.json").read_text())
    assert results["global_step"] == 4
    for stage in ("test_before", "test"):
        assert set(results[stage]) == {"wer_raw", "wer", "cer", "num_samples"}
        assert results[stage]["num_samples"] == 8
    scalars = EventAccumulator(str(short_run / "tensorboard")).Reload().Tags()["scalars"]
    assert {"train/loss", "train/padding_fraction", "val/wer", "val/cer"} <= set(scalars)

    export = short_run / "export"
    vocabulary = json.loads((export / "vocab.json").read_text())
    assert vocabulary == json.loads((short_run / "tokenizer" / "vocab.json").read_text())
    size = len(vocabulary)
    assert [vocabulary[s] for s in ("|", "[UNK]", "[PAD]")] == [size - 3, size - 2, size - 1]
    assert "म" in vocabulary
    assert "Optimizer steps: 4" in (export / "README.md").read_text()
    recognizer = pipeline("automatic-speech-recognition", model=str(export))
    audio, rate = soundfile.read(Path(asset_path("demo_speech")) / "test" / "test_0000.flac", dtype="float32")
    text = recognizer({"raw": audio, "sampling_rate": rate})["text"]
    assert isinstance(text, str) and set(text.replace("[UNK]", "")) <= set(vocabulary) | {" "}
    assert type(recognizer.model).__name__ == "Wav2Vec2ForCTC"


def test_load_from_checkpoint_rebuilds_the_network_from_the_stored_vocabulary(short_run: Path) -> None:
    best = next((short_run / "checkpoints").glob("best-step*.ckpt"))
    module = Wav2Vec2CTCModule.load_from_checkpoint(best, map_location="cpu")
    exported = json.loads((short_run / "export" / "vocab.json").read_text())
    assert module.collator.tokenizer.get_vocab() == exported
    state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(module.model.lm_head.weight, state["model.lm_head.weight"])


def test_resume_continues_at_the_saved_global_step(short_run: Path, tmp_path: Path) -> None:
    last = short_run / "checkpoints" / "last.ckpt"
    train(
        compose_config(
            _ctc_run(short_run, "export=false", "data.test_split=null", "trainer.max_steps=7", f"resume={last}"),
            tmp_path,
        )
    )
    assert json.loads((tmp_path / "metrics.json").read_text())["global_step"] == 7
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    steps = [event.step for event in events.Scalars("train/loss")]
    assert steps and min(steps) >= 4, f"the resumed run logged steps {steps}: it restarted from scratch"


def test_resuming_on_data_that_gives_another_vocabulary_is_an_error(short_run: Path, tmp_path: Path) -> None:
    last = short_run / "checkpoints" / "last.ckpt"
    changed = _ctc_run(
        short_run,
        "export=false",
        "data.test_split=null",
        "trainer.max_steps=7",
        f"resume={last}",
        "data.chars_to_ignore=['म']",
        "resume_force=true",  # past the config check, which stops this first: the vocabulary check still holds
    )
    with pytest.raises(ValueError, match="vocabulary"):
        train(compose_config(changed, tmp_path))


def test_random_init_takes_another_family_and_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    module = _module(tmp_path, "+model.random_init.model_type=hubert", "model.layerdrop=0.1")
    assert type(module.model).__name__ == "HubertForCTC" and module.model.config.layerdrop == 0.1
    assert module.model.lm_head.out_features == len(module.collator.tokenizer)
    for model_type, key in (("bert", "model.random_init.model_type"), ("wavlm", "model.attn_implementation")):
        cfg = compose_config(_ctc_run(tmp_path, f"+model.random_init.model_type={model_type}"), tmp_path)
        with pytest.raises(Exception, match=key):
            instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)


# config-faithful replicas of published checkpoints -----------------------------------------------
LAYOUT = (
    "model_type",
    "feat_extract_norm",
    "do_stable_layer_norm",
    "conv_bias",
    "conv_kernel",
    "conv_stride",
    "feat_extract_activation",
    "hidden_act",
    "num_conv_pos_embeddings",
)


@pytest.mark.parametrize("kind", CTC_KINDS)
def test_a_replica_has_the_published_layout(kind: str, tmp_path: Path) -> None:
    replica = build_ctc_replica(kind, tmp_path / "replica")
    published, config = published_config(kind), AutoConfig.from_pretrained(replica)
    for key in (*LAYOUT, "mask_time_prob", "layerdrop", "ctc_loss_reduction", "architectures"):
        value = getattr(config, key)
        assert (list(value) if isinstance(value, tuple) else value) == published[key], key
    extractor = AutoFeatureExtractor.from_pretrained(replica)
    assert {key: getattr(extractor, key) for key in PREPROCESSORS[kind]} == PREPROCESSORS[kind]
    if kind in TOKENIZERS:  # the tokenizer files load as the published ones do
        tokenizer = AutoProcessor.from_pretrained(replica).tokenizer
        assert tokenizer.pad_token_id == config.pad_token_id
        space = tokenizer.word_delimiter_token_id
        assert tokenizer.decode([5, 5, space, 6]).count(" ") == 1  # repeats merged, "|" a space
