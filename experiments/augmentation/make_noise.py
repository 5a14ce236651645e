"""Noise for the augmentation experiment: a folder of training noise, and noisy copies of the demo's evaluation splits.

    python experiments/augmentation/make_noise.py --out outputs/augmentation [--snr-db 5] [--seed 0]

writes

    <out>/noise/                           training noise, for augment.waveform.noise.dir: white, pink and brown
                                           noise and babble, --noise-files of each kind, --noise-seconds long
    <out>/noisy_demo/{validation,test}/    the bundled demo's validation and test splits with noise mixed in at
                                           --snr-db, in the demo's audiofolder layout (metadata.csv: file_name, text,
                                           duration, and noise: the kind mixed into that file)

The evaluation noise is none of the training noise, so that a model trained with noise is tested on noise it has
not heard: its coloured noise is drawn from another seed, and its babble is made of other training utterances (the
training babble mixes the first half of the demo's training split, the evaluation babble the second half; no
validation or test utterance is in either). The kinds take turns over the utterances. Babble is --talkers
utterances at once, each talker's utterances one after another. Everything is drawn from --seed: the same command
writes the same files. A mix that would clip is scaled down as a whole, which keeps its SNR.

Evaluate a model on the noisy test split (the demo's data config, pointed at the copy):

    python -m asrkit.evaluate checkpoint=<run>/export data=demo data.data_dir=<out>/noisy_demo
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile

from asrkit.config import asset_path

RATE = 16_000
COLOURS = ("white", "pink", "brown")
KINDS = ("babble", *COLOURS)
NOISE_RMS = 0.05  # level the noise files are written at (mixing scales noise to the SNR anyway)


def coloured_noise(colour: str, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls as 1/f**0 (white), 1/f (pink) or 1/f**2 (brown), at RMS 1."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    frequencies = np.fft.rfftfreq(samples, d=1 / RATE)
    frequencies[0] = frequencies[1]  # no infinite gain at 0 Hz
    spectrum /= frequencies ** {"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]
    noise = np.fft.irfft(spectrum, n=samples)
    noise -= noise.mean()
    return noise / np.sqrt(np.mean(noise**2))


def babble(pool: list[np.ndarray], talkers: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``talkers`` voices at once, each a random run of ``pool``'s utterances (each at RMS 1), at RMS 1."""
    mix = np.zeros(samples)
    for _ in range(talkers):
        voice = [np.zeros(int(rng.integers(0, RATE // 2)))]  # each talker starts at another moment
        while sum(len(part) for part in voice) < samples:
            voice.append(pool[int(rng.integers(len(pool)))])
        mix += np.concatenate(voice)[:samples]
    return mix / np.sqrt(np.mean(mix**2))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` scaled to ``snr_db``; scaled down together where the sum would clip."""
    scale = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    noisy = clean + scale * noise
    peak = np.abs(noisy).max()
    return noisy * (0.99 / peak) if peak > 0.99 else noisy


def demo_split(split: str) -> tuple[Path, list[dict[str, str]]]:
    folder = Path(asset_path("demo_speech")) / split
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as f:
        return folder, list(csv.DictReader(f))


def read(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(path, dtype="float64")
    if rate != RATE:
        raise ValueError(f"{path}: {rate} Hz, expected {RATE}")
    return audio / np.sqrt(np.mean(audio**2))


def write_training_noise(out: Path, pool: list[np.ndarray], args: argparse.Namespace) -> None:
    rng = np.random.default_rng([args.seed, 0])
    out.mkdir(parents=True, exist_ok=True)
    samples = int(args.noise_seconds * RATE)
    for kind in KINDS:
        for number in range(args.noise_files):
            if kind == "babble":
                noise = babble(pool, args.talkers, samples, rng)
            else:
                noise = coloured_noise(kind, samples, rng)
            soundfile.write(out / f"{kind}_{number:02d}.wav", NOISE_RMS * noise, RATE, subtype="PCM_16")
    print(
        f"training noise  {out}: {len(KINDS) * args.noise_files} files of {args.noise_seconds:g} s "
        f"({', '.join(KINDS)}; babble of {len(pool)} training utterances)"
    )


def write_noisy_split(out: Path, split: str, pool: list[np.ndarray], args: argparse.Namespace) -> None:
    rng = np.random.default_rng([args.seed, 1, ("validation", "test").index(split)])
    folder, rows = demo_split(split)
    (out / split).mkdir(parents=True, exist_ok=True)
    kinds: Counter[str] = Counter()
    with open(out / split / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["file_name", "text", "duration", "noise"])
        writer.writeheader()
        for number, row in enumerate(rows):
            clean, rate = soundfile.read(folder / row["file_name"], dtype="float64")
            kind = KINDS[number % len(KINDS)]
            if kind == "babble":
                noise = babble(pool, args.talkers, len(clean), rng)
            else:
                noise = coloured_noise(kind, len(clean), rng)
            noisy = mix_at_snr(clean, noise, args.snr_db)
            soundfile.write(out / split / row["file_name"], noisy.astype(np.float32), rate, subtype="PCM_16")
            writer.writerow(row | {"noise": kind})
            kinds[kind] += 1
    print(
        f"noisy {split:<10} {out / split}: {len(rows)} utterances at {args.snr_db:g} dB SNR "
        f"({', '.join(f'{kind} {count}' for kind, count in kinds.items())}; babble of {len(pool)} other utterances)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write noise/ and noisy_demo/ into")
    parser.add_argument("--snr-db", type=float, default=5.0, help="SNR of the noisy evaluation copies (dB)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw")
    parser.add_argument("--noise-files", type=int, default=4, help="training noise files of each kind")
    parser.add_argument("--noise-seconds", type=float, default=30.0, help="length of each training noise file (s)")
    parser.add_argument("--talkers", type=int, default=6, help="voices in babble")
    args = parser.parse_args(argv)
    train_folder, train_rows = demo_split("train")
    utterances = [read(train_folder / row["file_name"]) for row in train_rows]
    half = len(utterances) // 2  # training babble from the first half, evaluation babble from the second
    write_training_noise(args.out / "noise", utterances[:half], args)
    for split in ("validation", "test"):
        write_noisy_split(args.out / "noisy_demo", split, utterances[half:], args)
    print(
        f"evaluate: python -m asrkit.evaluate checkpoint=<run>/export data=demo data.data_dir={args.out / 'noisy_demo'}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
