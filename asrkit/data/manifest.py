"""fairseq-style audio manifests: write them for a folder of audio, read them as a ``datasets.Dataset``.

A manifest ``<split>.tsv`` (fairseq's ``wav2vec_manifest.py`` format) holds the audio root directory
on its first line, then one ``relative_path<TAB>num_samples`` line per file. Transcripts, when there
are any, sit alongside as ``<split>.wrd`` (one line of words per audio line) or ``<split>.ltr``
(letters separated by spaces, ``|`` between words), as fairseq's ``libri_labels.py`` writes them.
Pre-training needs no transcript: without either file every text is empty.

Sample counts are at :data:`~asrkit.data.audio.TARGET_SAMPLING_RATE` (16 kHz), as fairseq's audio
tasks require of their input, so durations come from the manifest without opening any audio file.

Write manifests (reads file headers only, never decodes)::

    python -m asrkit.data.manifest /data/LibriSpeech/train-960 --dest /data/manifest --ext flac \\
        --valid-percent 0.01 --seed 42
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

import datasets
import soundfile

from asrkit.data.audio import TARGET_SAMPLING_RATE
from asrkit.data.columns import AUDIO, DURATION, TEXT

log = logging.getLogger(__name__)

TRANSCRIPT_SUFFIXES = (".wrd", ".ltr")  # tried in this order next to <split>.tsv


def read_manifest(path: str | Path) -> tuple[Path, list[tuple[str, int]]]:
    """The root directory and the ``(relative_path, num_samples)`` rows of one manifest file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest {path} (write one with `python -m asrkit.data.manifest`)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}: the first line must be the audio root directory")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[1].strip().isdigit():
            raise ValueError(f"{path}:{number}: expected 'relative_path<TAB>num_samples', got {line!r}")
        rows.append((fields[0], int(fields[1])))
    return Path(lines[0].strip()), rows


def _letters_to_words(line: str) -> str:
    """fairseq letter targets to words: ``"H E L L O | W O R L D |"`` -> ``"HELLO WORLD"``."""
    return " ".join(line.replace(" ", "").replace("|", " ").split())


def _transcripts(manifest: Path, count: int) -> list[str]:
    for suffix in TRANSCRIPT_SUFFIXES:
        labels = manifest.with_suffix(suffix)
        if labels.is_file():
            lines = labels.read_text(encoding="utf-8").splitlines()
            if len(lines) != count:
                raise ValueError(f"{labels} has {len(lines)} lines but {manifest} lists {count} files")
            return [_letters_to_words(line) if suffix == ".ltr" else line.strip() for line in lines]
    return [""] * count


def load_manifest(data_dir: str | Path, split: str) -> datasets.Dataset:
    """``<data_dir>/<split>.tsv`` (``+``-joined splits concatenated) with columns audio, text, duration."""
    if not data_dir:
        raise ValueError("data.data_dir must name the folder holding the manifests (<split>.tsv)")
    audio, texts, durations = [], [], []
    for name in split.split("+"):
        manifest = Path(data_dir) / f"{name}.tsv"
        root, rows = read_manifest(manifest)
        audio += [str(root / relative) for relative, _ in rows]
        durations += [samples / TARGET_SAMPLING_RATE for _, samples in rows]
        texts += _transcripts(manifest, len(rows))
    if not audio:
        raise ValueError(f"data.data_dir={data_dir} split={split}: the manifest lists no audio file")
    dataset = datasets.Dataset.from_dict({AUDIO: audio, TEXT: texts, DURATION: durations})
    return dataset.cast_column(AUDIO, datasets.Audio(decode=False))


def write_manifests(
    root: str | Path,
    dest: str | Path,
    ext: str = "flac",
    valid_percent: float = 0.01,
    seed: int = 42,
    path_must_contain: str | None = None,
) -> dict[str, int]:
    """Write ``train.tsv`` (and ``valid.tsv`` when ``valid_percent > 0``) for every ``*.ext`` under ``root``.

    Each file goes to validation with probability ``valid_percent`` (a seeded draw per file, in sorted
    path order, so the split is reproducible). Sample counts come from the file headers. Returns the
    number of files written per manifest.
    """
    if not 0.0 <= valid_percent <= 1.0:
        raise ValueError(f"--valid-percent={valid_percent}: a fraction in [0, 1] (0.01 = one file in 100)")
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no audio directory {root}")
    files = sorted(p for p in root.rglob(f"*.{ext.lstrip('.')}") if p.is_file())
    if path_must_contain:
        files = [p for p in files if path_must_contain in str(p)]
    if not files:
        raise ValueError(f"no *.{ext} file under {root}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    draw = random.Random(seed)
    lines: dict[str, list[str]] = {"train": [], "valid": []}
    unreadable = 0
    for path in files:
        to_valid = draw.random() < valid_percent
        try:
            info = soundfile.info(str(path))
        except Exception as error:  # soundfile raises several types for unreadable input
            log.warning("skipping unreadable %s: %s", path, error)
            unreadable += 1
            continue
        if info.samplerate != TARGET_SAMPLING_RATE:
            log.warning(
                "%s is %d Hz: sample counts are at the file's rate, training expects %d Hz",
                path,
                info.samplerate,
                TARGET_SAMPLING_RATE,
            )
        lines["valid" if to_valid else "train"].append(f"{path.relative_to(root).as_posix()}\t{info.frames}")
    written = {}
    for name, rows in lines.items():
        if name == "valid" and valid_percent == 0.0:
            continue
        (dest / f"{name}.tsv").write_text("\n".join([str(root), *rows]) + "\n", encoding="utf-8")
        written[name] = len(rows)
    if unreadable:
        log.warning("skipped %d unreadable files of %d", unreadable, len(files))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m asrkit.data.manifest",
        description="Write fairseq-style train.tsv/valid.tsv manifests for a folder of audio (headers only).",
    )
    parser.add_argument("root", help="folder searched recursively for audio files")
    parser.add_argument("--dest", required=True, help="folder to write train.tsv and valid.tsv into")
    parser.add_argument("--ext", default="flac", help="audio file extension (default: flac)")
    parser.add_argument(
        "--valid-percent",
        type=float,
        default=0.01,
        help="fraction of files drawn into valid.tsv, in [0, 1] (default: 0.01)",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/valid draw (default: 42)")
    parser.add_argument("--path-must-contain", default=None, help="keep only paths containing this text")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    written = write_manifests(args.root, args.dest, args.ext, args.valid_percent, args.seed, args.path_must_contain)
    for name, count in written.items():
        print(f"{Path(args.dest) / f'{name}.tsv'}: {count} files")


if __name__ == "__main__":
    main()
