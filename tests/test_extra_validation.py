"""``data.extra_validation``: other sets scored at every validation (a forgetting monitor), each logged as
``val/<name>/...`` beside the primary set, which alone picks the best checkpoint; and the one-line errors of a
malformed entry."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from asrkit.config_check import ConfigError, check_config
from asrkit.summary import summary_lines
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config, logged_messages

# "same": the primary validation set again (TINY_RUN scores its first 8 utterances), so its scores must equal the
# primary's at every validation; "heard": 5 test utterances, read as a stream, under another name
EXTRA = (
    "data.extra_validation={same: {config: demo, max_eval_samples: 8},"
    " heard: {config: demo, validation_split: test, max_eval_samples: 5, streaming: true}}"
)
VALIDATIONS = [2, 4]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    run_dir = tmp_path_factory.mktemp("run")
    with logged_messages() as messages:
        best = train(compose_config([*TINY_RUN, EXTRA], run_dir))
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return SimpleNamespace(
        dir=run_dir, best=best, metrics=json.loads((run_dir / "metrics.json").read_text()), events=events, log=messages
    )


def _scalars(run: SimpleNamespace, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in run.events.Scalars(tag)}


def test_each_extra_set_is_logged_under_its_name_at_every_validation(run: SimpleNamespace) -> None:
    tags = set(run.events.Tags()["scalars"])
    for name in ("same", "heard"):
        assert {f"val/{name}/{metric}" for metric in ("wer", "wer_raw", "cer", "num_samples")} <= tags
        assert sorted(_scalars(run, f"val/{name}/wer")) == VALIDATIONS
    assert set(_scalars(run, "val/heard/num_samples").values()) == {5.0}  # its own set, not the primary's
    assert set(_scalars(run, "val/num_samples").values()) == {8.0}  # the primary kept its own
    for metric in ("wer", "wer_raw", "cer"):  # the same utterances scored the same way: equal, step by step
        assert _scalars(run, f"val/same/{metric}") == _scalars(run, f"val/{metric}"), metric


def test_the_primary_set_alone_picks_the_best_checkpoint(run: SimpleNamespace) -> None:
    primary = _scalars(run, "val/wer")
    assert run.best == pytest.approx(min(primary.values()))
    assert run.metrics["best_val_wer"] == pytest.approx(min(primary.values()))
    best_step = min(primary, key=lambda step: (primary[step], step))
    assert f"best-step{best_step:06d}" in Path(run.metrics["best_checkpoint"]).name


def test_the_log_and_the_summary_show_the_extra_sets(run: SimpleNamespace) -> None:
    for step in VALIDATIONS:
        at = run.log.index(next(line for line in run.log if line.startswith(f"validation at step {step}:")))
        assert run.log[at + 1].startswith("  heard: WER ") and run.log[at + 2].startswith("  same: WER ")
    best = run.metrics["summary"]["best"]
    assert best["heard/num_samples"] == 5 and best["same/wer"] == best["wer"]
    lines = summary_lines(run.metrics["summary"])
    assert any(line.strip().startswith("heard then") and "WER" in line for line in lines), lines
    assert "validation/same" in run.metrics["left_out"]  # what its reading left out, as the primary's
    assert any("extra validation set heard:" in line and "split test" in line for line in run.log)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.extra_validation={general: nosuch}", "data.extra_validation.general=nosuch: not a data config option"),
        ("data.extra_validation={wer: demo}", "data.extra_validation.wer: name a set"),
        ("data.extra_validation={general: {config: demo, max_eval_sampels: 3}}", "general.max_eval_sampels: not a key"),
        ("data.extra_validation={general: {max_eval_samples: 3}}", "data.extra_validation.general: a data config"),
        ("data.extra_validation={general: {config: demo, max_eval_samples: many}}", "general.max_eval_samples='many'"),
        ("data.extra_validation=demo", "data.extra_validation='demo': a mapping"),
    ],
)
def test_a_malformed_entry_is_a_one_line_error_naming_it(tmp_path: Path, override: str, message: str) -> None:
    cfg = compose_config(["experiment=demo", override], tmp_path)
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_pre_training_refuses_extra_sets(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=demo_pretrain", "data.extra_validation={general: demo}"], tmp_path)
    with pytest.raises(ConfigError, match=r"^data.extra_validation: pre-training scores no transcripts"):
        check_config(cfg)
