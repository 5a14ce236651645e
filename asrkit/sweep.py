"""A summary of a sweep (``python -m asrkit -m ...``): one row per job, best validation WER first.

:class:`SweepSummary` is a Hydra callback (registered under ``hydra.callbacks`` in conf/train.yaml).
After every job and at the end of the sweep it writes, into the sweep dir,

    summary.csv   job, status, one column per swept override, best_val_wer, test_wer, test_wer_raw,
                  test_cer, global_step, error
    summary.md    the same as a markdown table, under the overrides all jobs share

reading each job dir's ``.hydra/overrides.yaml``, its ``metrics.json`` (written by asrkit.train at the
end of a job) and its ``failure.json`` (written by asrkit.__main__ when a job raised). A job with
neither is ``incomplete`` (still running, or killed). Because the rows come from the job dirs, the
summary is the same whichever launcher ran the jobs, and ``python -m asrkit.sweep <sweep dir>`` rebuilds it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from asrkit.files import write_atomically

log = logging.getLogger(__name__)

METRICS = ("best_val_wer", "test_wer", "test_wer_raw", "test_cer", "global_step")


def _job_dirs(sweep_dir: Path) -> list[Path]:
    def natural(path: Path) -> list[Any]:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]

    found = {path.parent.parent for path in sweep_dir.rglob("overrides.yaml") if path.parent.name == ".hydra"}
    return sorted(found, key=natural)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        return {"_unreadable": f"{path.name}: {error}"}


def job_row(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """Status, overrides and final metrics of one job directory."""
    row: dict[str, Any] = {"job": job_dir.relative_to(sweep_dir).as_posix(), "error": ""}
    row["overrides"] = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    metrics = _read_json(job_dir / "metrics.json")
    failure = _read_json(job_dir / "failure.json")
    if failure is not None:
        row["status"] = "failed"
        row["error"] = failure.get("error") or failure.get("_unreadable", "")
    elif metrics is not None and "_unreadable" in metrics:
        row["status"], row["error"] = "unreadable", metrics["_unreadable"]
    elif metrics is not None:
        row["status"] = "completed"
    else:
        row["status"] = "incomplete"
    metrics = metrics if row["status"] == "completed" else {}
    test = metrics.get("test") or {}
    row |= {
        "best_val_wer": metrics.get("best_val_wer"),
        "test_wer": test.get("wer"),
        "test_wer_raw": test.get("wer_raw"),
        "test_cer": test.get("cer"),
        "global_step": metrics.get("global_step"),
    }
    return row


def _split_overrides(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(the overrides every job shares, the keys whose values differ between jobs)."""
    per_job = [dict(o.split("=", 1) if "=" in o else (o, "") for o in row["overrides"]) for row in rows]
    keys = list(dict.fromkeys(key for job in per_job for key in job))
    swept = [key for key in keys if len({job.get(key) for job in per_job}) > 1]
    shared = [o for o in rows[0]["overrides"] if o.split("=", 1)[0] not in swept] if rows else []
    for row, job in zip(rows, per_job, strict=True):
        row |= {key: job.get(key, "") for key in swept}
    return shared, swept


def _rank(row: dict[str, Any]) -> tuple[int, float]:
    wer = row["best_val_wer"]
    if row["status"] != "completed" or wer is None or not math.isfinite(wer):
        return (1, math.inf)
    return (0, wer)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|")


def summary_rows(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(one row per job, best first; the overrides every job shares; the keys swept), as the summary shows them.
    Each row has ``job`` (its dir under ``sweep_dir``), ``status``, ``overrides``, a column per swept key and
    :data:`METRICS`."""
    sweep_dir = Path(sweep_dir)
    rows = [job_row(job_dir, sweep_dir) for job_dir in _job_dirs(sweep_dir)]
    shared, swept = _split_overrides(rows)
    rows.sort(key=_rank)  # stable: equal ranks keep job order
    return rows, shared, swept


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir``; return the rows, best first."""
    sweep_dir = Path(sweep_dir)
    rows, shared, swept = summary_rows(sweep_dir)
    columns = ["job", "status", *swept, *METRICS, "error"]

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(sweep_dir / "summary.csv", text.getvalue())

    table = [f"# Sweep {sweep_dir}", "", f"{len(rows)} jobs, sorted by best validation WER (%)."]
    table += ["", "Overrides of every job: " + (" ".join(f"`{o}`" for o in shared) or "none"), ""]
    table += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in rows]
    write_atomically(sweep_dir / "summary.md", "\n".join(table) + "\n")
    return rows


class SweepSummary(Callback):
    """Hydra callback: rewrite the sweep summary after each job and at the end of the sweep."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            write_summary(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():  # no job started
            return
        rows = write_summary(sweep_dir)
        failed = sum(row["status"] != "completed" for row in rows)
        log.info("sweep summary: %s (%d jobs, %d not completed)", sweep_dir / "summary.md", len(rows), failed)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m asrkit.sweep <sweep dir>")
    write_summary(sys.argv[1])
    print((Path(sys.argv[1]) / "summary.md").read_text(), end="")
