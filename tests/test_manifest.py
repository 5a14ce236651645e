"""fairseq-style manifests: written from a folder of audio, read back as a dataset, used by the datamodule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from asrkit.data.datamodule import ASRDataModule
from asrkit.data.manifest import load_manifest, main, read_manifest, write_manifests
from asrkit.data.sources import load_split

LENGTHS = {"a/1.flac": 16_000, "a/2.flac": 24_000, "b/c/3.flac": 8_000, "b/4.flac": 40_000, "b/5.flac": 3_200}


class _AudioOnlyCollator:
    """What the datamodule asks of a collator when it filters (asrkit.data.collator.Collator), with no labels."""

    sampling_rate = 16_000
    max_input_seconds = None
    max_label_length = None

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        return [[] for _ in texts]


def _audio_folder(root: Path) -> Path:
    for relative, samples in LENGTHS.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        noise = np.random.default_rng(samples).uniform(-0.1, 0.1, samples).astype(np.float32)
        soundfile.write(root / relative, noise, 16_000, format="FLAC")
    (root / "b" / "notes.txt").write_text("not audio")
    return root


def test_manifests_round_trip_paths_and_sample_counts(tmp_path: Path) -> None:
    audio = _audio_folder(tmp_path / "audio")
    written = write_manifests(audio, tmp_path / "manifest", ext="flac", valid_percent=0.4, seed=3)
    assert sum(written.values()) == len(LENGTHS) and set(written) == {"train", "valid"}
    rows = {}
    for name in ("train", "valid"):
        root, entries = read_manifest(tmp_path / "manifest" / f"{name}.tsv")
        assert root == audio.resolve()
        rows |= dict(entries)
    assert rows == LENGTHS  # every file once, with its exact sample count
    again = write_manifests(audio, tmp_path / "again", ext="flac", valid_percent=0.4, seed=3)
    assert again == written
    assert (tmp_path / "again" / "valid.tsv").read_text() == (tmp_path / "manifest" / "valid.tsv").read_text()

    dataset = load_split("manifest", "train+valid", data_dir=str(tmp_path / "manifest"))
    assert dataset.column_names == ["audio", "text", "duration"] and len(dataset) == len(LENGTHS)
    for row in dataset:
        relative = Path(row["audio"]["path"]).relative_to(audio.resolve()).as_posix()
        assert row["duration"] == pytest.approx(LENGTHS[relative] / 16_000) and row["text"] == ""
        assert soundfile.info(row["audio"]["path"]).frames == LENGTHS[relative]


def test_no_validation_manifest_at_zero_percent_and_bad_arguments(tmp_path: Path) -> None:
    audio = _audio_folder(tmp_path / "audio")
    assert write_manifests(audio, tmp_path / "m", valid_percent=0.0) == {"train": len(LENGTHS)}
    assert not (tmp_path / "m" / "valid.tsv").exists()
    with pytest.raises(ValueError, match="valid-percent"):
        write_manifests(audio, tmp_path / "m", valid_percent=5)
    with pytest.raises(ValueError, match=r"no \*\.wav file"):
        write_manifests(audio, tmp_path / "m", ext="wav")


def test_command_line_writes_train_and_valid(tmp_path: Path, capsys) -> None:
    audio = _audio_folder(tmp_path / "audio")
    dest = tmp_path / "m"
    main([str(audio), "--dest", str(dest), "--ext", "flac", "--valid-percent", "0.2", "--seed", "42"])
    printed = capsys.readouterr().out
    assert "train.tsv" in printed and "valid.tsv" in printed
    listed = [len(read_manifest(dest / f"{name}.tsv")[1]) for name in ("train", "valid")]
    assert sum(listed) == len(LENGTHS)


def test_transcripts_from_wrd_or_ltr_files(tmp_path: Path) -> None:
    audio = _audio_folder(tmp_path / "audio")
    write_manifests(audio, tmp_path, valid_percent=0.0)
    count = len(LENGTHS)
    (tmp_path / "train.ltr").write_text("".join(f"W O R D {i} | T W O |\n" for i in range(count)))
    assert load_manifest(tmp_path, "train")["text"] == [f"WORD{i} TWO" for i in range(count)]
    (tmp_path / "train.wrd").write_text("".join(f"word {i}\n" for i in range(count)))  # .wrd wins
    assert load_manifest(tmp_path, "train")["text"] == [f"word {i}" for i in range(count)]
    (tmp_path / "train.wrd").write_text("one line only\n")
    with pytest.raises(ValueError, match="train.wrd has 1 lines"):
        load_manifest(tmp_path, "train")


def test_malformed_manifest_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("/audio\nx.flac\t100\ny.flac 200\n")
    with pytest.raises(ValueError, match=r"train.tsv:3"):
        read_manifest(tmp_path / "train.tsv")
    with pytest.raises(FileNotFoundError, match="valid.tsv"):
        load_manifest(tmp_path, "valid")


def test_text_free_data_is_kept_only_when_text_is_not_required(tmp_path: Path) -> None:
    audio = _audio_folder(tmp_path / "audio")
    write_manifests(audio, tmp_path / "m", valid_percent=0.0)
    settings = dict(
        path="manifest",
        data_dir=str(tmp_path / "m"),
        train_split="train",
        validation_split="train",
        global_batch_size=2,
        collator=_AudioOnlyCollator(),
    )
    datamodule = ASRDataModule(require_text=False, **settings)
    datamodule.setup("fit")
    assert len(datamodule.splits.datasets["train"]) == len(LENGTHS)
    expected = sorted(samples / 16_000 for samples in LENGTHS.values())
    assert sorted(datamodule.splits.durations["train"]) == pytest.approx(expected)  # from the manifest alone
    with pytest.raises(ValueError, match="no example is left"):
        ASRDataModule(require_text=True, **settings).setup("fit")
