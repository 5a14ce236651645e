"""Sources: the real load_dataset(path, config, split) path on a local hub-layout repository, column
mapping, language-code resolvers and the hints for gated or script-based hub datasets."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError
from huggingface_hub.utils import httpx  # the HTTP client huggingface_hub and datasets use
from omegaconf.errors import InterpolationResolutionError

from asrkit.data.languages import common_voice_config, fleurs_config, mls_config, voxpopuli_config
from asrkit.data.sources import load_split
from tests.conftest import compose_config
from tests.hub_repo import DEMO, build_hub_repo, demo_rows

SIZES = {"train": 5, "validation": 3, "test": 2}


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("hub") / "speech"
    ids = build_hub_repo(root, SIZES, configs=("hi", "ta"), duration_column="seconds", shards=2)
    return root, ids


def _ids(dataset: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    return [row["audio"]["path"] for row in dataset]


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_hub_layout_repo_by_config_and_joined_split(hub_repo, tmp_path: Path, streaming: bool) -> None:
    root, ids = hub_repo
    dataset = load_split(
        str(root),
        "train+validation",
        name="ta",
        text_column="sentence",
        duration_column="seconds",
        cache_dir=str(tmp_path),
        streaming=streaming,
    )
    assert isinstance(dataset, datasets.IterableDataset if streaming else datasets.Dataset)
    assert dataset.column_names == ["audio", "text", "duration"]
    assert _ids(dataset) == ids["ta", "train"] + ids["ta", "validation"]
    row = next(iter(dataset))
    assert row["audio"]["bytes"][:4] == b"fLaC" and isinstance(row["text"], str) and row["duration"] > 0
    texts = {Path(r["file_name"]).name: r["text"] for r in demo_rows("train")}
    assert [r["text"] for r in dataset] == [texts[i] for i in ids["ta", "train"] + ids["ta", "validation"]]


def test_the_config_name_picks_the_config(hub_repo, tmp_path: Path) -> None:
    root, ids = hub_repo
    hindi = load_split(str(root), "test", name="hi", text_column="sentence", cache_dir=str(tmp_path))
    assert _ids(hindi) == ids["hi", "test"] and set(ids["hi", "test"]).isdisjoint(ids["ta", "test"])


def test_a_missing_column_names_the_setting(hub_repo, tmp_path: Path) -> None:
    root, _ = hub_repo
    with pytest.raises(KeyError, match=r"data.text_column.*sentence|sentence.*data.text_column"):
        load_split(str(root), "test", name="hi", text_column="transcription", cache_dir=str(tmp_path))


def test_audiofolder_streams_the_same_examples() -> None:
    kwargs = {"data_dir": str(DEMO), "duration_column": "duration"}
    indexed = load_split("audiofolder", "validation", **kwargs)
    streamed = load_split("audiofolder", "validation", streaming=True, **kwargs)
    assert [r["text"] for r in streamed] == indexed["text"]


def _gated(status: int) -> GatedRepoError:
    request = httpx.Request("GET", "https://huggingface.co/datasets/someone/gated/resolve/main/README.md")
    response = httpx.Response(status, request=request)
    return GatedRepoError("Access to this dataset is restricted.", response=response)


@pytest.mark.parametrize("status", [401, 403])
def test_gated_dataset_without_access_is_a_one_line_hint(monkeypatch, status: int) -> None:
    """What datasets raises for a gated repo (DatasetNotFoundError, its GatedRepoError cause dropped)."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    def refuse(*args, **kwargs):
        raise _gated(status)

    monkeypatch.setattr(HfApi, "hf_hub_download", refuse)
    with pytest.raises(RuntimeError, match="gated") as caught:
        load_split("someone/gated", "train", name="hi")
    message = str(caught.value)
    assert "\n" not in message and "HF_TOKEN" in message and "hf auth login" in message
    assert "https://huggingface.co/datasets/someone/gated" in message


def test_script_datasets_get_a_hint(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "legacy.py").write_text("# a loading script\n")
    with pytest.raises(RuntimeError, match="refs/convert/parquet"):
        load_split(str(tmp_path / "legacy"), "train")


def test_language_codes_map_to_each_corpus_configs() -> None:
    assert fleurs_config("hi") == "hi_in" and fleurs_config("ta") == "ta_in"
    assert fleurs_config("zh") == "cmn_hans_cn" and fleurs_config("pt_br") == "pt_br"
    assert voxpopuli_config("de") == "de" and mls_config("de") == "german"
    assert mls_config("polish") == "polish"
    assert common_voice_config("zh") == "zh-CN" and common_voice_config("hi") == "hi"
    for resolver in (fleurs_config, voxpopuli_config, mls_config):
        with pytest.raises(ValueError, match="lang='xx'"):
            resolver("xx")
    with pytest.raises(ValueError, match="lang='hi'.*VoxPopuli"):
        voxpopuli_config("hi")


@pytest.mark.parametrize(
    ("option", "lang", "expected"),
    [
        ("fleurs", "ta", ("google/fleurs", "ta_in", "raw_transcription")),
        ("voxpopuli", "de", ("facebook/voxpopuli", "de", "normalized_text")),
        ("mls", "fr", ("facebook/multilingual_librispeech", "french", "transcript")),
        ("common_voice", "zh", ("mozilla-foundation/common_voice_11_0", "zh-CN", "sentence")),
    ],
)
def test_data_configs_resolve_lang(tmp_path: Path, option: str, lang: str, expected: tuple) -> None:
    data = compose_config([f"data={option}", f"lang={lang}"], tmp_path).data
    assert (data.path, data.name, data.text_column) == expected


def test_an_unsupported_lang_is_an_error_naming_it(tmp_path: Path) -> None:
    data = compose_config(["data=mls", "lang=hi"], tmp_path).data
    with pytest.raises(InterpolationResolutionError, match="lang='hi'"):
        _ = data.name
