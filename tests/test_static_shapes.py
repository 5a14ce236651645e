"""data.static_shapes: at most one batch shape per bucket per epoch, and padding that leaves the loss as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from asrkit.data.static_shapes import QUANTUM, StaticShapes, audio_edges, batch_shapes
from asrkit.train import steppable
from tests.conftest import compose_config

FAMILIES = {
    "whisper": ["experiment=demo", "data.bucketing.enabled=true", "data.bucketing.num_buckets=4"],
    "ctc": ["experiment=demo_ctc", "model.tokenizer_dir=null"],  # 10 buckets
}


def _built(tmp_path: Path, family: str, *overrides: str) -> tuple[Any, Any]:
    """The family's demo module and datamodule, set up for fitting (CTC: vocabulary built, network made)."""
    cfg = compose_config([*FAMILIES[family], *overrides], tmp_path)
    torch.manual_seed(0)
    return steppable(cfg)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_epoch_has_at_most_one_batch_shape_per_bucket(tmp_path: Path, family: str) -> None:
    buckets = 4 if family == "whisper" else 10
    _, dynamic = _built(tmp_path / "dynamic", family)
    _, static = _built(tmp_path / "static", family, "data.static_shapes=true")
    static_shapes = batch_shapes(static.train_dataloader())
    assert len(static_shapes) <= buckets
    assert len(batch_shapes(dynamic.train_dataloader())) > buckets  # what it bounds: a new shape at most steps
    sizes = {dict(shape)["labels"][0] for shape in static_shapes}
    assert sizes == {16}  # every batch whole: each bucket's incomplete one is left out
    if family == "whisper":  # the window, and the model's label limit
        assert {dict(shape)["labels"][1] for shape in static_shapes} == {448}


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_to_the_bucket_edge_leaves_the_loss_unchanged(tmp_path: Path, family: str) -> None:
    module, datamodule = _built(tmp_path, family)
    dataset = datamodule.splits.datasets["train"]
    examples = [dataset[i] for i in (0, 7, 21, 40)]  # of different lengths
    longest = max(len(example["audio"]) for example in examples)
    edge = longest + 3 * QUANTUM + 17
    module.eval()  # no dropout or masks: the two batches must give the same loss
    with torch.no_grad():
        padded = module.collator(examples)
        static = module.collator(examples, audio_length=edge, label_length=padded["labels"].shape[1] + 9)
        assert static["labels"].shape[1] == padded["labels"].shape[1] + 9
        if family == "ctc":
            assert static["input_values"].shape[1] == edge and padded["input_values"].shape[1] == longest
        loss, static_loss = module.training_step(padded, 0), module.training_step(static, 0)
    torch.testing.assert_close(static_loss, loss, rtol=1e-5, atol=1e-5)


def test_edges_hold_each_bucket_and_a_longer_batch_takes_the_next_one() -> None:
    durations = [1.0, 1.2, 2.0, 2.5, 3.0, 3.2]
    edges = audio_edges(durations, [[0, 1], [2, 3], [4, 5]], 16_000)
    assert len(edges) == 3 and all(edge % QUANTUM == 0 for edge in edges)
    assert [edge >= seconds * 16_000 for edge, seconds in zip(edges, (1.2, 2.5, 3.2), strict=True)] == [True] * 3
    shapes = StaticShapes(edges, 20)
    assert shapes.audio_length(int(1.1 * 16_000)) == edges[0]
    assert shapes.audio_length(edges[0] + 1) == edges[1]  # speed perturbation past its bucket's edge
    with_speed = audio_edges(durations, [[0, 1], [2, 3], [4, 5]], 16_000, max_seconds=3.6)
    assert with_speed[-1] >= 3.6 * 16_000 and with_speed[:2] == edges[:2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.static_shapes=maybe"], "data.static_shapes='maybe': true or false"),
        (["data.static_shapes=true", "data.streaming=true"], "data.static_shapes=true pads to edges"),
    ],
)
def test_bad_static_shape_settings_name_the_key(tmp_path: Path, overrides: list[str], message: str) -> None:
    cfg = compose_config(["experiment=demo", *overrides], tmp_path)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    with pytest.raises((ValueError, InstantiationException), match=message):
        instantiate(cfg.data, collator=module.collator)


def test_a_collator_without_static_shapes_is_refused(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=demo_pretrain", "data.static_shapes=true"], tmp_path)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    datamodule = instantiate(cfg.data, collator=module.collator)
    datamodule.setup("fit")
    with pytest.raises(ValueError, match="data.static_shapes=true: Wav2Vec2PretrainCollator has no static-shape"):
        datamodule.train_dataloader()
