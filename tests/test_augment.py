"""Training-time augmentation: waveform operations seeded per example on the training split only, SpecAugment."""

from __future__ import annotations

import csv
import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import soundfile
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from asrkit.config_check import ConfigError, check_config
from asrkit.data.augment import WaveformAugment, stream_key
from asrkit.data.augment_options import WaveformOptions
from asrkit.data.datamodule import ASRDataModule
from asrkit.models.spec_augment import spec_augment_settings
from asrkit.models.wav2vec2_pretrain import Wav2Vec2PretrainModule
from asrkit.models.whisper import WhisperModule
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config, subprocess_env
from tests.hub_repo import DEMO, build_hub_repo

REPO = Path(__file__).resolve().parent.parent
RATE = 16_000


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """White noise at 8 kHz (resampled), a 0.25 s burst (looped), a broken file, and a file that is no audio."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    soundfile.write(root / "white_8k.wav", 0.1 * rng.standard_normal(3 * 8000), 8000)
    soundfile.write(root / "sub" / "burst.flac", 0.1 * rng.standard_normal(RATE // 4), RATE)
    (root / "broken.wav").write_bytes(b"no audio here")
    (root / "README.txt").write_text("not a noise file")
    return root


def _options(noise_dir: Path, **changes: Any) -> dict[str, Any]:
    """The preset's options (conf/augment/waveform.yaml), with ``changes`` per operation (None: off)."""
    options = {
        "seed": 7,
        "speed": {"factors": [0.9, 1.0, 1.1], "p": 1.0},
        "noise": {"dir": str(noise_dir), "snr_db": [5.0, 20.0], "p": 0.5},
        "gain": {"db": [-6.0, 6.0], "p": 0.5},
    }
    return options | changes


def _augment(noise_dir: Path, max_seconds: float = 30.0, **changes: Any) -> WaveformAugment:
    return WaveformAugment(WaveformOptions.parse(_options(noise_dir, **changes)), RATE, max_seconds)


def _speech(seconds: float = 2.0) -> np.ndarray:
    audio, rate = soundfile.read(DEMO / "train" / "train_0000.flac", dtype="float32")
    assert rate == RATE
    return np.resize(audio, int(seconds * RATE))  # repeated or cut to length


# each operation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_changes_the_length_by_one_over_the_factor(noise_dir: Path, factor: float) -> None:
    augment = _augment(noise_dir, speed={"factors": [factor], "p": 1.0}, noise=None, gain=None)
    audio = _speech(2.0)
    assert len(augment(audio, key=0, epoch=0)) == pytest.approx(len(audio) / factor, abs=1)


def test_a_speed_factor_that_would_pass_the_window_is_not_drawn(noise_dir: Path) -> None:
    audio = _speech(2.9)  # 2.9 / 0.9 = 3.2 s: past the demo's 3 s window
    slow_only = _augment(noise_dir, max_seconds=3.0, speed={"factors": [0.9], "p": 1.0}, noise=None, gain=None)
    assert all(np.array_equal(slow_only(audio, key, 0), audio) for key in range(5))
    either = _augment(noise_dir, max_seconds=3.0, speed={"factors": [0.9, 1.1], "p": 1.0}, noise=None, gain=None)
    lengths = {len(either(audio, key, 0)) for key in range(8)}
    assert lengths == {math.ceil(len(audio) * 10 / 11)}  # every example gets 1.1, the only factor that fits
    assert {len(either(_speech(1.0), key, 0)) for key in range(16)} == {17_778, 14_546}  # short ones: both


def test_noise_is_mixed_at_the_drawn_snr(noise_dir: Path) -> None:
    audio = _speech(2.0)
    for snr in (0.0, 10.0):
        augment = _augment(
            noise_dir, speed=None, gain=None, noise={"dir": str(noise_dir), "snr_db": [snr, snr], "p": 1}
        )
        for key in range(4):  # either file: the resampled one and the looped burst
            noisy = augment(audio, key, 0)
            measured = 10 * np.log10(np.sum(audio**2) / np.sum((noisy - audio) ** 2))
            assert measured == pytest.approx(snr, abs=0.05)
    drawn = _augment(noise_dir, speed=None, gain=None, noise={"dir": str(noise_dir), "snr_db": [5.0, 20.0], "p": 1})
    snrs = [10 * np.log10(np.sum(audio**2) / np.sum((drawn(audio, key, 0) - audio) ** 2)) for key in range(12)]
    assert 5.0 - 0.05 <= min(snrs) and max(snrs) <= 20.0 + 0.05 and max(snrs) - min(snrs) > 3


def test_gain_scales_by_the_drawn_decibels(noise_dir: Path) -> None:
    audio = _speech(1.0)
    augment = _augment(noise_dir, speed=None, noise=None, gain={"db": [6.0, 6.0], "p": 1.0})
    np.testing.assert_allclose(augment(audio, 3, 0), audio * 10 ** (6 / 20), rtol=1e-5)
    off = _augment(noise_dir, speed=None, noise=None, gain={"db": [6.0, 6.0], "p": 0.0})
    assert np.array_equal(off(audio, 3, 0), audio)


def test_draws_depend_on_seed_epoch_and_example_only(noise_dir: Path) -> None:
    audio = _speech(2.0)
    augment = _augment(noise_dir)
    again = _augment(noise_dir)
    assert all(np.array_equal(augment(audio, key, 1), again(audio, key, 1)) for key in range(6))
    assert not np.array_equal(augment(audio, 2, 0), augment(audio, 2, 1))  # another epoch
    other_seed = WaveformAugment(WaveformOptions.parse(_options(noise_dir, seed=8)), RATE, 30.0)
    assert any(not np.array_equal(augment(audio, key, 0), other_seed(audio, key, 0)) for key in range(6))
    # turning an operation off leaves the others' draws as they were
    gain_only = _augment(noise_dir, speed=None, noise=None)
    no_noise = _augment(noise_dir, speed=None, noise={"dir": str(noise_dir), "snr_db": [5.0, 20.0], "p": 0})
    assert all(np.array_equal(gain_only(audio, key, 0), no_noise(audio, key, 0)) for key in range(6))


def test_noise_files_are_found_recursively_and_unreadable_ones_skipped_with_a_warning(noise_dir, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        augment = _augment(noise_dir)
    assert sorted(Path(f.path).name for f in augment.noise_files) == ["burst.flac", "white_8k.wav"]
    assert "skipping 1 of 3 noise files" in caplog.text and "broken.wav" in caplog.text
    assert "2 files in" in augment.describe() and "x0.9/1/1.1" in augment.describe()


# bad settings -------------------------------------------------------------------------------------------------
BAD_WAVEFORM = [
    ({"noise": {"snr_db": [20, 5]}}, r"augment\.waveform\.noise\.snr_db=\[20, 5\]: low must be <= high"),
    ({"noise": {"dir": "/no/such/dir"}}, r"augment\.waveform\.noise\.dir=/no/such/dir: no such directory"),
    ({"noise": {"dir": "EMPTY"}}, r"augment\.waveform\.noise\.dir=.*empty: holds no audio file"),
    ({"gain": {"p": 1.5}}, r"augment\.waveform\.gain\.p=1\.5: a probability"),
    ({"speed": {"factors": [0.9, 0]}}, r"augment\.waveform\.speed\.factors=\[0\.9, 0\]: factors must be > 0"),
    ({"speed": {"factor": [0.9]}}, r"augment\.waveform\.speed\.factor: not an option of augment\.waveform\.speed"),
    ({"gain": {"db": 6}}, r"augment\.waveform\.gain\.db=6: expected \[low, high\]"),
    ({"seed": "x"}, r"augment\.waveform\.seed='x': expected an integer"),
]


@pytest.mark.parametrize(("change", "message"), BAD_WAVEFORM, ids=[m.split(":")[0][:40] for _, m in BAD_WAVEFORM])
def test_bad_waveform_options_are_one_line_errors_naming_the_key(tmp_path, noise_dir, change, message) -> None:
    (tmp_path / "empty").mkdir()
    options = _options(noise_dir)
    for op, values in change.items():
        if isinstance(values, dict):
            values = {k: str(tmp_path / "empty") if v == "EMPTY" else v for k, v in values.items()}
            options[op] = options[op] | values
        else:
            options[op] = values
    with pytest.raises(ValueError, match=message) as error:
        WaveformOptions.parse(options)
    assert "\n" not in str(error.value)


def test_the_config_check_names_a_missing_noise_folder_and_bad_spec_augment_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^augment\.waveform\.noise\.dir=\?\?\?: expected a value"):
        check_config(compose_config(["experiment=demo", "augment=waveform"], tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=rf"^augment\.waveform\.noise\.dir={empty}: holds no audio file"):
        check_config(
            compose_config(["experiment=demo", "augment=waveform", f"augment.waveform.noise.dir={empty}"], tmp_path)
        )
    bad = [("augment.spec_augment.mask_time_prob=1.5", r"mask_time_prob=1\.5: a share of the time axis")]
    bad += [("augment.spec_augment.mask_time_length=0", r"mask_time_length=0: an integer >= 1")]
    bad += [("+augment.spec_augment.mask_frequency=3", r"augment\.spec_augment\.mask_frequency: not a SpecAugment")]
    for override, message in bad:
        with pytest.raises(ConfigError, match=message):
            check_config(compose_config(["experiment=demo", "augment=specaugment", override], tmp_path))


def test_augment_options_combine_and_noise_can_be_turned_off(tmp_path: Path, noise_dir: Path) -> None:
    both = compose_config(
        ["experiment=demo", "augment=[waveform,specaugment]", f"augment.waveform.noise.dir={noise_dir}"], tmp_path
    )
    check_config(both)
    assert both.augment.waveform.seed == both.seed and both.augment.spec_augment.mask_time_prob == 0.05
    assert set(compose_config(["augment=specaugment"], tmp_path).augment) == {"spec_augment"}
    quiet = compose_config(["experiment=demo", "augment=waveform", "augment.waveform.noise=null"], tmp_path)
    check_config(quiet)  # no folder needed
    options = WaveformOptions.parse(quiet.augment.waveform)
    assert options.noise is None and options.speed is not None and options.gain is not None


# the data paths -----------------------------------------------------------------------------------------------
class RawAudio:
    """A collator that hands the decoded audio on (what the augmentation did, before any features)."""

    sampling_rate = RATE
    max_input_seconds = 3.0
    max_label_length = None

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        return [[0] * len(text) for text in texts]

    def __call__(self, examples: list[dict[str, Any] | None]) -> dict[str, Any]:
        kept = [example for example in examples if example is not None]
        return {"indices": [e["index"] for e in kept], "audio": [e["audio"] for e in kept]}


def _demo_datamodule(tmp_path: Path, augment: dict[str, Any] | None, **keys: Any) -> ASRDataModule:
    """The demo data (its first 24 training utterances), augmented by ``augment`` (the datamodule's argument)."""
    cfg = compose_config(["experiment=demo", "data.max_train_samples=24", "data.max_eval_samples=6"], tmp_path)
    data = OmegaConf.to_container(cfg.data, resolve=True) | {"global_batch_size": 8, "per_device_batch_size": 8}
    del data["_target_"]
    datamodule = ASRDataModule(collator=RawAudio(), augment=augment, **(data | keys))
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


def _epoch(datamodule: ASRDataModule, epoch: int) -> dict[int, np.ndarray]:
    loader = datamodule.train_dataloader()
    loader.batch_sampler.set_epoch(epoch)  # what Lightning does before each epoch
    return {i: audio for batch in loader for i, audio in zip(batch["indices"], batch["audio"], strict=True)}


def test_training_audio_is_augmented_the_same_with_any_number_of_workers(tmp_path: Path, noise_dir: Path) -> None:
    clean = _epoch(_demo_datamodule(tmp_path, None), 0)
    in_process = _demo_datamodule(tmp_path, _options(noise_dir))
    workers = _demo_datamodule(tmp_path, _options(noise_dir), num_workers=2)  # persistent: made once
    first, again = _epoch(in_process, 0), _epoch(workers, 0)
    assert first.keys() == again.keys() == clean.keys() and len(first) == 24
    assert all(np.array_equal(first[i], again[i]) for i in first)
    assert sum(not np.array_equal(first[i], clean[i]) for i in first) >= 20  # speed p 1: all but the 1.0 draws
    second, second_again = _epoch(in_process, 1), _epoch(workers, 1)
    assert all(np.array_equal(second[i], second_again[i]) for i in second)
    assert sum(not np.array_equal(first[i], second[i]) for i in first) >= 12  # new draws in a new epoch
    reseeded = _epoch(_demo_datamodule(tmp_path, _options(noise_dir, seed=8)), 0)
    assert sum(not np.array_equal(first[i], reseeded[i]) for i in first) >= 12


def test_evaluation_audio_and_the_report_examples_are_never_augmented(tmp_path: Path, noise_dir: Path) -> None:
    clean = _demo_datamodule(tmp_path, None)
    augmented = _demo_datamodule(tmp_path, _options(noise_dir))
    assert augmented.augment is not None and clean.augment is None
    for loader in ("val_dataloader", "test_dataloader"):
        plain, other = list(getattr(clean, loader)()), list(getattr(augmented, loader)())
        assert [b["indices"] for b in plain] == [b["indices"] for b in other]
        for a, b in zip(plain, other, strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(a["audio"], b["audio"], strict=True))
    for role in ("validation", "train"):
        for a, b in zip(clean.examples(role, 4), augmented.examples(role, 4), strict=True):
            assert np.array_equal(a["audio"], b["audio"])


def test_streamed_training_examples_are_augmented_by_their_file_whatever_their_order(
    tmp_path: Path, noise_dir: Path, monkeypatch
) -> None:
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.01)  # see tests/test_streaming.py
    root = tmp_path / "speech"
    build_hub_repo(root, {"train": 8, "validation": 3}, shards=2, texts=lambda text, n: f"{n:03d} {text}")
    keys = {"path": str(root), "name": "hi", "train_split": "train", "validation_split": "validation"}
    keys |= {"text_column": "sentence", "global_batch_size": 4, "streaming": True, "max_duration_in_seconds": 3.0}

    def passes(augment: dict | None, **more: Any) -> list[dict[str, np.ndarray]]:
        datamodule = ASRDataModule(collator=RawAudio(), augment=augment, **(keys | more))
        datamodule.setup("fit")
        seen: list[dict[str, np.ndarray]] = [{}, {}]
        for example, position, _ in datamodule.splits.datasets["train"]:
            if position["pass"] == 2:
                break
            seen[position["pass"]][example["reference"]] = example["audio"]
        validation = {e["reference"]: e["audio"] for e, _, _ in datamodule.splits.datasets["validation"]}
        played = {e["reference"]: e["audio"] for e in datamodule.examples("train", 8)}  # the report's kind
        return [*seen, validation | played]

    clean, _, clean_unaugmented = passes(None)
    first, second, unaugmented = passes(_options(noise_dir))
    reordered, _, _ = passes(_options(noise_dir), shuffle_buffer_size=8, shuffle_seed=3)
    assert first.keys() == clean.keys() == reordered.keys() and len(first) == 8
    assert list(reordered) != list(first)  # another order, the same audio for each example
    assert all(np.array_equal(first[text], reordered[text]) for text in first)
    assert sum(not np.array_equal(first[text], clean[text]) for text in first) >= 6
    assert sum(not np.array_equal(first[text], second[text]) for text in first) >= 4  # a new pass: new draws
    assert len(unaugmented) == 11 and all(np.array_equal(unaugmented[t], clean_unaugmented[t]) for t in unaugmented)


def test_a_stream_key_is_the_file_name_else_the_bytes() -> None:
    assert stream_key({"path": "a.flac", "bytes": b"1"}) == stream_key({"path": "a.flac", "bytes": b"2"})
    assert stream_key({"path": None, "bytes": b"1"}) != stream_key({"path": None, "bytes": b"2"})


# SpecAugment ------------------------------------------------------------------------------------------------
MASKS = {"mask_time_prob": 0.3, "mask_time_length": 5, "mask_feature_prob": 0.175, "mask_feature_length": 14}


def _whisper(tmp_path: Path, spec_augment: dict | None) -> WhisperModule:
    cfg = compose_config(["experiment=demo", "model.random_init.dropout=0.0"], tmp_path)
    torch.manual_seed(0)
    return instantiate(cfg.model, optimizer=cfg.optimizer, spec_augment=spec_augment, _recursive_=False)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a training step outside a Trainer
def test_spec_augment_masks_whisper_inputs_within_the_audio_in_training_mode_only(tmp_path: Path) -> None:
    plain, masked = _whisper(tmp_path, None), _whisper(tmp_path, MASKS)
    assert torch.equal(next(plain.parameters()), next(masked.parameters()))  # the same weights
    assert masked.model.config.apply_spec_augment and masked.model.config.mask_time_prob == 0.3
    assert not plain.model.config.apply_spec_augment
    examples = [{"index": i, "audio": _speech(s), "text": "नया", "reference": "नया"} for i, s in enumerate((1.0, 2.5))]
    assert "attention_mask" not in plain.collator(examples)
    batch = masked.collator(examples)
    assert batch["attention_mask"].shape == (2, 300) and batch["attention_mask"].sum(1).tolist() == [100, 250]

    def encoded(module: WhisperModule, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        features = batch["input_features"].clone()  # transformers masks them in place
        module.train(training)
        with torch.no_grad():
            out = module.model(input_features=features, attention_mask=batch["attention_mask"], labels=batch["labels"])
        return out.encoder_last_hidden_state, features

    np.random.seed(0)  # transformers draws the masks from numpy's global generator
    trained, features = encoded(masked, True)
    assert not torch.allclose(trained, encoded(plain, True)[0])
    assert torch.equal(encoded(masked, False)[0], encoded(plain, False)[0])
    zeroed = (features == 0).all(dim=1) & ~(batch["input_features"] == 0).all(dim=1)  # whole frames masked
    assert zeroed[0, :100].any() and not zeroed[0, 100:].any()  # the 1 s utterance's frames only
    assert zeroed[1, :250].any() and not zeroed[1, 250:].any()
    channels = (features == 0).all(dim=2) & ~(batch["input_features"] == 0).all(dim=2)
    assert channels.sum(1).tolist() == [14, 14]  # one mask of 14 of 80 mel channels each
    frames = []  # what a training step hands the masking: the batch's attention mask
    masking = masked.model.model._mask_input_features

    def spy(input_features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        frames.append(attention_mask)
        return masking(input_features, attention_mask)

    masked.model.model._mask_input_features = spy
    masked.train()
    assert torch.isfinite(masked.training_step(batch | {"num_samples": 2, "num_skipped": 0}, 0))
    assert torch.equal(frames[0], batch["attention_mask"])


def test_the_whisper_export_keeps_the_checkpoints_own_spec_augment_settings(tmp_path: Path) -> None:
    module = _whisper(tmp_path, MASKS)
    module.export(tmp_path / "export")
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    assert exported["apply_spec_augment"] is False and exported["mask_time_prob"] == 0.05
    assert module.model.config.apply_spec_augment and module.model.config.mask_time_prob == 0.3


def test_spec_augment_overrides_the_ctc_masks_and_pretraining_refuses_it(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=demo_ctc", "model.tokenizer_dir=null"], tmp_path)
    masks = {"mask_time_prob": 0.3, "mask_feature_prob": 0.175, "mask_time_min_masks": 1}
    module = instantiate(cfg.model, optimizer=cfg.optimizer, spec_augment=masks, _recursive_=False)
    module.collator.build_vocabulary(["नया हवा"])
    module.configure_model()
    config = module.model.config
    assert (config.mask_time_prob, config.mask_feature_prob, config.mask_time_min_masks) == (0.3, 0.175, 1)
    assert config.mask_time_length == cfg.model.mask_time_length == 10  # not named: the module's own
    with pytest.raises(ValueError, match=r"^augment\.spec_augment: pre-training masks time steps as its objective"):
        Wav2Vec2PretrainModule(spec_augment=MASKS)  # before it builds anything
    with pytest.raises(ConfigError, match=r"^augment\.spec_augment: pre-training"):  # and before the run loads
        check_config(compose_config(["experiment=demo_pretrain", "augment=specaugment"], tmp_path))
    with pytest.raises(ValueError, match=r"augment\.spec_augment\.mask_feature_prob=2"):
        spec_augment_settings({"mask_feature_prob": 2})


# a whole run -------------------------------------------------------------------------------------------------
def test_a_short_run_with_waveform_augmentation_and_spec_augment(tmp_path: Path, noise_dir: Path, caplog) -> None:
    overrides = ["augment=[waveform,specaugment]", f"augment.waveform.noise.dir={noise_dir}", "export=false"]
    overrides += ["data.test_split=null", "trainer.max_steps=2", "trainer.val_check_interval=2"]
    with caplog.at_level(logging.INFO):
        train(compose_config(TINY_RUN + overrides, tmp_path))
    assert "training audio augmentation: speed x0.9/1/1.1 (p 1); noise at 5-20 dB SNR from 2 files" in caplog.text
    assert "SpecAugment in training mode (augment.spec_augment): mask_time_prob=0.05 (was 0.05)" in caplog.text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 2
    module = WhisperModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")
    assert module.model.config.apply_spec_augment and module.model.config.mask_feature_length == 14


# noise for the experiment ------------------------------------------------------------------------------------
def test_make_noise_writes_training_noise_and_noisy_evaluation_copies_the_demo_config_reads(tmp_path: Path) -> None:
    script = REPO / "experiments" / "augmentation" / "make_noise.py"
    command = [sys.executable, str(script), "--out", str(tmp_path), "--noise-files", "1", "--noise-seconds", "2"]
    run = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), check=True)
    assert "training noise" in run.stdout and "noisy test" in run.stdout and "data=demo data.data_dir=" in run.stdout
    assert sorted(p.name for p in (tmp_path / "noise").iterdir()) == [
        "babble_00.wav",
        "brown_00.wav",
        "pink_00.wav",
        "white_00.wav",
    ]
    for split, count in (("validation", 60), ("test", 100)):
        with open(tmp_path / "noisy_demo" / split / "metadata.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        with open(DEMO / split / "metadata.csv", newline="", encoding="utf-8") as f:
            originals = list(csv.DictReader(f))
        assert len(rows) == count and [{k: r[k] for k in originals[0]} for r in rows] == originals
        for row in rows[:4]:  # one of each kind
            clean, _ = soundfile.read(DEMO / split / row["file_name"], dtype="float64")
            noisy, _ = soundfile.read(tmp_path / "noisy_demo" / split / row["file_name"], dtype="float64")
            scale = np.dot(noisy, clean) / np.dot(clean, clean)  # (a mix that would clip is scaled down)
            snr = 10 * np.log10(np.sum((scale * clean) ** 2) / np.sum((noisy - scale * clean) ** 2))
            assert snr == pytest.approx(5.0, abs=0.6), row
    again = subprocess.run([*command[:3], str(tmp_path / "again"), *command[4:]], env=subprocess_env(), check=True)
    assert again.returncode == 0
    for path in ("noise/babble_00.wav", "noisy_demo/test/test_0003.flac"):  # seeded
        assert (tmp_path / path).read_bytes() == (tmp_path / "again" / path).read_bytes()
    cfg = compose_config(
        ["checkpoint=x", "data=demo", f"data.data_dir={tmp_path / 'noisy_demo'}"], tmp_path, "evaluate"
    )
    datamodule = instantiate(cfg.data, collator=RawAudio(), test_split=cfg.split)  # as asrkit.evaluate builds it
    datamodule.setup("test")
    assert len(datamodule.splits.datasets["test"]) == 100 and datamodule.augment is None
