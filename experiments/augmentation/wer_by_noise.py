"""WER per kind of noise of evaluations on the noisy demo copy (make_noise.py's ``noise`` column).

    python experiments/augmentation/wer_by_noise.py <noisy copy>/test outputs/evaluate/<run>-noisy ...

Each evaluation directory is one ``python -m asrkit.evaluate ... data.data_dir=<noisy copy>`` run: its
``predictions.jsonl`` ids are row indices of the split's ``metadata.csv``, whose ``noise`` column names the kind mixed
into that file. Scored by ``asrkit.metrics.error_rates`` with the basic normaliser, as evaluate scores.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from asrkit.metrics import error_rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", type=Path, help="the noisy split folder (its metadata.csv has a noise column)")
    parser.add_argument("evaluations", type=Path, nargs="+", help="asrkit.evaluate run directories")
    args = parser.parse_args()
    with open(args.split / "metadata.csv", newline="", encoding="utf-8") as f:
        kinds = [row["noise"] for row in csv.DictReader(f)]
    names = sorted(set(kinds))
    print(f"{'evaluation':<40} " + " ".join(f"{name:>8}" for name in names) + f" {'all':>8}")
    for directory in args.evaluations:
        rows = [json.loads(line) for line in (directory / "predictions.jsonl").read_text().splitlines()]
        scores = []
        for name in [*names, None]:
            chosen = [row for row in rows if name is None or kinds[row["id"]] == name]
            rates = error_rates([r["reference"] for r in chosen], [r["hypothesis"] for r in chosen])
            scores.append(f"{rates['wer']:8.2f}")
        print(f"{directory.name:<40} " + " ".join(scores))


if __name__ == "__main__":
    main()
