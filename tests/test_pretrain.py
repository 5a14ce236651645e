"""wav2vec2 pre-training: masks and negatives, the Gumbel schedule, the loss normalisation, concatenated
configs x splits, preprocess-once, and a whole short run whose export a CTC model loads."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining

import asrkit.data.datamodule as datamodule_code
from asrkit.config import asset_path
from asrkit.data.datamodule import ASRDataModule
from asrkit.models.wav2vec2_pretrain import Wav2Vec2PretrainModule, gumbel_temperature
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config

SHORT_RUN = ["experiment=demo_pretrain", *TINY_RUN[1:]]  # TINY_RUN with the pre-training demo


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Wav2Vec2PretrainModule:
    cfg = compose_config(["experiment=demo_pretrain"], tmp_path_factory.mktemp("cfg"))
    return instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)


def _examples(lengths: list[int]) -> list[dict]:
    rng = np.random.default_rng(0)
    audio = [rng.uniform(-0.3, 0.3, n).astype(np.float32) for n in lengths]
    return [{"index": i, "audio": a, "text": "", "reference": ""} for i, a in enumerate(audio)]


def test_masks_and_negatives_lie_on_real_frames_and_never_on_the_positive(module) -> None:
    lengths = [16_000, 8_000, 24_000, 12_345]
    batch = module.collator(_examples(lengths))
    frames = int(module.model._get_feat_extract_output_lengths(max(lengths)))
    real = module.model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
    mask, negatives = batch["mask_time_indices"], batch["sampled_negative_indices"]
    assert batch["input_values"].shape == (4, max(lengths))
    assert mask.shape == (4, frames) and mask.dtype == torch.bool
    assert negatives.shape == (4, frames, module.model.config.num_negatives)
    assert batch["num_frames"] == sum(real)
    for row in range(4):
        masked = mask[row].nonzero().flatten()
        assert len(masked) >= module.hparams.mask_time_length and masked.max() < real[row]
        drawn = negatives[row, masked] - row * frames  # the model flattens (batch, frame)
        assert ((drawn >= 0) & (drawn < real[row])).all()  # same utterance, never padding
        assert mask[row, drawn].all()  # distractors are other masked frames...
        assert (drawn != masked[:, None]).all()  # ...and never the positive itself
    assert 0.3 < mask.sum() / sum(real) < 0.8  # mask_time_prob 0.65 with overlapping spans


def test_utterance_shorter_than_a_mask_span_is_dropped_and_counted(module) -> None:
    batch = module.collator([*_examples([16_000, 1_000]), None])
    assert batch["num_samples"] == 1 and batch["num_skipped"] == 2 and batch["indices"] == [0]
    frames, span = module.model._get_feat_extract_output_lengths, module.hparams.mask_time_length
    shortest = next(n for n in range(1_000, 20_000, 10) if frames(n) > span)
    for _ in range(20):  # one span more than the mask: still two masked frames, so negatives can be drawn
        batch = module.collator(_examples([16_000, shortest]))
        assert batch["num_samples"] == 2 and batch["mask_time_indices"][1].sum() >= 2


def test_gumbel_temperature_decays_per_step_to_its_floor() -> None:
    schedule = [gumbel_temperature(step, 2.0, 0.5, 0.999) for step in range(0, 3000, 100)]
    assert schedule[0] == 2.0 and schedule[-1] == 0.5
    assert gumbel_temperature(1000, 2.0, 0.5, 0.999) == pytest.approx(2.0 * 0.999**1000)
    assert all(a >= b for a, b in zip(schedule, schedule[1:], strict=False))
    assert gumbel_temperature(200_000, 2.0, 0.5, 0.999995) == pytest.approx(2.0 * 0.999995**200_000)


def test_loss_is_divided_by_the_masked_frames_of_all_ranks(module, monkeypatch) -> None:
    batch = module.collator(_examples([16_000, 20_000]))
    masked = float(batch["mask_time_indices"].sum())
    other_rank = torch.tensor([3 * masked, 0, 0, 0, 0, 0, 0])  # a second rank with 3x the masked frames

    def step(world_size: int, reduce, global_step: int) -> torch.Tensor:
        strategy = SimpleNamespace(reduce=lambda sums, reduce_op: reduce(sums))
        trainer = SimpleNamespace(world_size=world_size, global_step=global_step, is_global_zero=True,
                                  strategy=strategy)  # fmt: skip
        monkeypatch.setattr(module, "_trainer", trainer)
        torch.manual_seed(0)  # the same Gumbel noise in both calls
        return module.training_step(batch, 0)

    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    module.train()
    alone = step(1, lambda sums: sums, global_step=1000)
    assert module.model.quantizer.temperature == gumbel_temperature(1000, 2.0, 0.5, 0.997)
    shared = step(2, lambda sums: sums + other_rank, global_step=1000)
    # DDP then averages the two ranks' gradients: (2 x L / 4N) / 2 = L / 4N, one weight per masked frame
    assert shared.item() == pytest.approx(alone.item() * 2 * masked / (4 * masked), rel=1e-5)


def _local_hub_repo(root: Path, demo: Path) -> dict[tuple[str, str], list[str]]:
    """A dataset repository in hub layout with two configs, read by datasets.load_dataset(root, config)."""
    with open(demo / "validation" / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    layout = {("clean", "train.100"): rows[0:3], ("clean", "train.360"): rows[3:5],
              ("other", "train.500"): rows[5:9], ("clean", "validation"): rows[9:11]}  # fmt: skip
    card = ["---", "configs:"]
    for config in ("clean", "other"):
        card += [f"- config_name: {config}", "  data_files:"]
        for (name, split), part in layout.items():
            if name == config:
                columns = {"audio": [str(demo / "validation" / r["file_name"]) for r in part],
                           "text": [r["text"] for r in part],
                           "seconds": [float(r["duration"]) for r in part]}  # fmt: skip
                (root / config).mkdir(parents=True, exist_ok=True)
                datasets.Dataset.from_dict(columns).to_parquet(root / config / f"{split}.parquet")
                card += [f"  - split: {split}", f"    path: {config}/{split}.parquet"]
    (root / "README.md").write_text("\n".join([*card, "---", ""]))
    return {key: [r["text"] for r in part] for key, part in layout.items()}


def test_configs_and_splits_are_concatenated_in_order(tmp_path: Path, module) -> None:
    texts = _local_hub_repo(tmp_path / "repo", Path(asset_path("demo_speech")))
    settings = dict(path=str(tmp_path / "repo"), name="clean", validation_split="validation",
                    duration_column="seconds", global_batch_size=2, collator=module.collator)  # fmt: skip
    parts = [("clean", "train.100"), ("clean", "train.360"), ("other", "train.500")]
    configs, splits = [c for c, _ in parts], [s for _, s in parts]
    data = ASRDataModule(train_split=None, configs=configs, splits=splits, **settings)
    data.setup("fit")
    assert list(data.datasets["train"].dataset["text"]) == [t for part in parts for t in texts[part]]
    assert list(data.datasets["validation"].dataset["text"]) == texts[("clean", "validation")]
    with pytest.raises(ValueError, match="data.configs"):
        ASRDataModule(train_split=None, configs=["clean"], splits=["train.100", "train.360"], **settings)
    with pytest.raises(ValueError, match="data.train_split"):
        ASRDataModule(train_split="train.100", configs=["clean"], splits=["train.100"], **settings)


def test_preprocess_only_saves_the_rows_and_a_later_run_reads_no_header(tmp_path: Path, monkeypatch) -> None:
    overrides = ["experiment=demo_pretrain", "data.duration_column=null", "data.max_train_samples=24",
                 "data.max_eval_samples=8", "data.test_split=null",
                 f"+data.preprocessed_dir={tmp_path / 'preprocessed'}"]  # fmt: skip
    assert train(compose_config([*overrides, "preprocess_only=true"], tmp_path / "first")) is None
    saved = sorted(path.name.split("-")[0] for path in (tmp_path / "preprocessed").iterdir())
    assert saved == ["train", "validation"]
    assert not (tmp_path / "first" / "checkpoints").exists()  # it stopped before training

    def no_header_reads(*args, **kwargs):
        raise AssertionError("audio headers were read again")

    monkeypatch.setattr(datamodule_code, "_header_durations", no_header_reads)
    monkeypatch.setattr(ASRDataModule, "_filter", no_header_reads)
    cfg = compose_config(overrides, tmp_path / "second")
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    data = instantiate(cfg.data, collator=module.collator)
    data.prepare_data()
    data.setup("fit")
    assert len(data.datasets["train"]) == 24 and len(data.datasets["validation"]) == 8
    with open(Path(asset_path("demo_speech")) / "train" / "metadata.csv", newline="") as f:
        metadata = {row["file_name"]: float(row["duration"]) for row in csv.DictReader(f)}
    names = [Path(audio["path"]).name for audio in data.datasets["train"].dataset["audio"]]
    assert data.durations["train"] == pytest.approx([metadata[name] for name in names], abs=1e-3)
    changed = instantiate(cfg.data, collator=module.collator, max_train_samples=23)  # other settings: no rows
    with pytest.raises(AssertionError, match="headers were read again"):
        changed.setup("fit")


def test_short_pretraining_run_writes_checkpoint_metrics_and_an_export_ctc_loads(tmp_path: Path) -> None:
    train(compose_config(SHORT_RUN, tmp_path))

    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(n.startswith("best-step") and "-loss" in n for n in checkpoints)
    results = json.loads((tmp_path / "metrics.json").read_text())
    assert results["global_step"] == 4 and results["best_val_loss"] > 0
    assert set(results["test"]) == {"loss", "contrastive_loss", "diversity_loss", "codevector_perplexity",
                                    "percent_masked", "num_samples"}  # fmt: skip
    assert results["test"]["num_samples"] == 8
    assert results["test"]["codevector_perplexity"] > 1

    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    logged = set(events.Tags()["scalars"])
    for name in ("loss", "contrastive_loss", "diversity_loss", "codevector_perplexity", "gumbel_temperature",
                 "percent_masked", "grad_norm"):  # fmt: skip
        assert f"train/{name}" in logged, name
    assert "val/loss" in logged and any(tag.startswith("lr-") for tag in logged)
    for event in events.Scalars("train/gumbel_temperature"):
        assert event.value == pytest.approx(gumbel_temperature(event.step, 2.0, 0.5, 0.997), rel=1e-6)

    export = tmp_path / "export"
    pretrained = Wav2Vec2ForPreTraining.from_pretrained(export)
    assert Wav2Vec2FeatureExtractor.from_pretrained(export).do_normalize
    ctc = Wav2Vec2ForCTC.from_pretrained(export, vocab_size=12)  # what model=wav2vec2_ctc fine-tunes
    encoder = pretrained.wav2vec2.state_dict()
    for name, tensor in ctc.wav2vec2.state_dict().items():
        assert torch.equal(tensor, encoder[name]), name
    card = (export / "README.md").read_text()
    assert "pre-trained with asrkit" in card and "codevector_perplexity" in card
    assert "pipeline_tag" not in card  # not a speech recogniser until fine-tuned


@pytest.mark.slow
def test_two_ranks_sum_the_masked_frames_and_the_evaluation(tmp_path: Path) -> None:
    """hw=ddp_cpu: two gloo processes (Lightning re-runs the command for rank 1)."""
    overrides = [item for item in SHORT_RUN if not item.startswith("test_before")]
    command = [sys.executable, "-m", "asrkit", *overrides, "hw=ddp_cpu", "data.per_device_batch_size=8",
               "test_before_training=true", f"hydra.run.dir={tmp_path}"]  # fmt: skip
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "metrics.json").read_text())
    assert results["global_step"] == 4
    for when in ("test_before", "test"):  # each rank scored half of the 8 utterances; the sums were reduced
        assert results[when]["num_samples"] == 8 and results[when]["codevector_perplexity"] > 1
    assert "global rank 1 stopped at optimizer step 4" in (tmp_path / "train_ddp_process_1.log").read_text()
