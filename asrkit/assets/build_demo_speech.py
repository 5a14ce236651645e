"""Build the small synthetic Hindi speech set shipped in ``asrkit/assets/demo_speech/``.

The set is a Hugging Face ``audiofolder``: ``train/``, ``validation/`` and ``test/`` each hold
16 kHz mono 16-bit FLAC files and a ``metadata.csv`` with the columns ``file_name,text,duration``.
Every utterance is 2-5 words drawn from a closed vocabulary of common Devanagari words (with
matras, nuktas, chandrabindu and conjuncts), spoken by espeak-ng's Hindi voice at a random rate
and pitch, trimmed of silence, peak-normalised and no longer than the demo model's input window.
Sentences are unique across all splits, so no test sentence is seen in training.

Regenerate it (deletes and rewrites the output folder; deterministic for a given ``--seed``)::

    uv run python -m asrkit.assets.build_demo_speech

The ``espeak-ng`` command (Debian/Ubuntu package ``espeak-ng``) is needed only to regenerate the
set; nothing in asrkit calls it at run time.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

DEFAULT_OUT = Path(__file__).resolve().parent / "demo_speech"
SAMPLE_RATE = 16_000
ESPEAK_VOICE = "hi"
RATE_RANGE = (140, 180)  # espeak -s, words per minute
PITCH_RANGE = (30, 70)  # espeak -p, 0-99
WORDS_RANGE = (2, 5)
MIN_SECONDS = 0.8
MAX_SECONDS = 2.7  # the demo model's input window is 3 s; stay well inside it
TRIM_MARGIN_SECONDS = 0.05
TRIM_THRESHOLD = 0.02  # fraction of the peak amplitude that counts as speech
PEAK_LEVEL = 0.95
MAX_TRIES = 200  # re-draws per utterance before giving up

VOCABULARY: tuple[str, ...] = tuple(
    unicodedata.normalize("NFC", w)
    for w in (
        # everyday words
        "पानी",
        "घर",
        "आज",
        "कल",
        "बहुत",
        "अच्छा",
        "खाना",
        "किताब",
        "दोस्त",
        "बच्चा",
        "सुबह",
        "शाम",
        "रात",
        "दिन",
        "समय",
        "काम",
        "माता",
        "पिता",
        "भाई",
        "बहन",
        "फूल",
        "सूरज",
        "हवा",
        "बारिश",
        "छोटा",
        "नया",
        "पुराना",
        "सुंदर",
        # nukta / chandrabindu
        "लड़की",
        "सड़क",
        "बाज़ार",
        "गाँव",
        "यहाँ",
        # conjuncts
        "प्राचीन",
        "स्कूल",
        "नमस्ते",
        "धन्यवाद",
        "विद्यालय",
        "क्षेत्र",
        "ज्ञान",
        "प्रश्न",
        "मित्र",
    )
)
SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class Utterance:
    file_name: str
    text: str
    duration: float


def synthesize(text: str, rate: int, pitch: int, workdir: Path) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return 16 kHz mono float32 audio, trimmed and normalised."""
    wav_path = workdir / "espeak.wav"
    subprocess.run(
        ["espeak-ng", "-v", ESPEAK_VOICE, "-s", str(rate), "-p", str(pitch), "-w", str(wav_path), text],
        check=True,
        capture_output=True,
    )
    audio, sr = sf.read(wav_path, dtype="float32", always_2d=True)
    mono = torch.from_numpy(audio.mean(axis=1))
    if sr != SAMPLE_RATE:
        mono = AF.resample(mono, orig_freq=sr, new_freq=SAMPLE_RATE)
    return _normalise(_trim(mono.numpy()))


def _trim(audio: np.ndarray) -> np.ndarray:
    peak = float(np.abs(audio).max(initial=0.0))
    if peak == 0.0:
        return audio
    voiced = np.flatnonzero(np.abs(audio) > TRIM_THRESHOLD * peak)
    margin = int(TRIM_MARGIN_SECONDS * SAMPLE_RATE)
    start = max(int(voiced[0]) - margin, 0)
    stop = min(int(voiced[-1]) + 1 + margin, len(audio))
    return audio[start:stop]


def _normalise(audio: np.ndarray) -> np.ndarray:
    peak = float(np.abs(audio).max(initial=0.0))
    return audio if peak == 0.0 else (audio * (PEAK_LEVEL / peak)).astype(np.float32)


def build_split(
    split: str, count: int, rng: random.Random, used: set[str], out_dir: Path, workdir: Path
) -> list[Utterance]:
    """Write ``count`` unique utterances plus ``metadata.csv`` into ``out_dir / split``."""
    split_dir = out_dir / split
    split_dir.mkdir(parents=True)
    rows: list[Utterance] = []
    for index in range(count):
        for _ in range(MAX_TRIES):
            text = " ".join(rng.choices(VOCABULARY, k=rng.randint(*WORDS_RANGE)))
            rate, pitch = rng.randint(*RATE_RANGE), rng.randint(*PITCH_RANGE)
            if text in used:
                continue
            audio = synthesize(text, rate, pitch, workdir)
            if MIN_SECONDS <= len(audio) / SAMPLE_RATE <= MAX_SECONDS:
                break
        else:
            raise RuntimeError(f"no usable utterance for {split}[{index}] after {MAX_TRIES} draws")
        used.add(text)
        file_name = f"{split}_{index:04d}.flac"
        path = split_dir / file_name
        sf.write(path, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)
        info = sf.info(path)
        rows.append(Utterance(file_name, text, info.frames / info.samplerate))
    with open(split_dir / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text", "duration"])
        writer.writerows((u.file_name, u.text, f"{u.duration:.3f}") for u in rows)
    return rows


def build(out_dir: Path, counts: dict[str, int], seed: int) -> dict[str, list[Utterance]]:
    """(Re)build the whole set in ``out_dir``; splits are drawn in order so test avoids train."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng not found; install it (Debian/Ubuntu: apt-get install espeak-ng)")
    torch.set_num_threads(1)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    rng = random.Random(seed)
    used: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        return {split: build_split(split, counts[split], rng, used, out_dir, Path(tmp)) for split in SPLITS}


def _dir_megabytes(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (deleted first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=480, help="number of train utterances")
    parser.add_argument("--validation", type=int, default=60, help="number of validation utterances")
    parser.add_argument("--test", type=int, default=100, help="number of test utterances")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    counts = {split: getattr(args, split) for split in SPLITS}
    result = build(args.out, counts, args.seed)
    hours = sum(u.duration for rows in result.values() for u in rows) / 3600
    split_counts = " ".join(f"{split}={len(rows)}" for split, rows in result.items())
    print(
        f"demo_speech: {split_counts} | vocab={len(VOCABULARY)} | {hours:.3f} h | "
        f"{_dir_megabytes(args.out):.1f} MB | {time.perf_counter() - start:.0f} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
