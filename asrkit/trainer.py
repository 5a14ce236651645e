"""asrkit's Lightning Trainer: checkpoints are written whole or not at all.

A checkpoint is written under a temporary name beside its final one (``<name>.partial``) and renamed into place
once every process has written its part, so a process killed while saving (a preemption, an out-of-memory kill)
leaves the previous checkpoint under its name and a ``.partial`` the resume search ignores. A file is replaced in
one ``os.replace``; a directory (DeepSpeed writes one shard per process) is swapped in two renames, and between
them the previous one survives as ``<name>.previous``, which the resume search also reads
(:func:`asrkit.resume.newest_checkpoint`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L

PARTIAL = ".partial"  # a checkpoint being written
PREVIOUS = ".previous"  # a directory checkpoint being replaced


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def move_into_place(written: Path, final: Path) -> None:
    """Rename a fully written checkpoint (file or directory) to its final name, replacing what was there."""
    if not (written.is_dir() or final.is_dir()):
        os.replace(written, final)  # atomic: readers see the old file or the new one
        return
    previous = final.with_name(final.name + PREVIOUS)
    _remove(previous)
    if final.exists():
        os.replace(final, previous)
    os.replace(written, final)
    _remove(previous)


class Trainer(L.Trainer):
    """``lightning.Trainer`` whose ``save_checkpoint`` is atomic (see the module docstring); nothing else changes."""

    def save_checkpoint(self, filepath: Any, weights_only: bool = False, storage_options: Any = None) -> None:
        final = Path(filepath)
        written = final.with_name(final.name + PARTIAL)
        if self.is_global_zero:
            _remove(written)  # left by a process killed while saving
        self.strategy.barrier("asrkit.clear_partial_checkpoint")
        super().save_checkpoint(written, weights_only, storage_options)  # ends with a barrier
        if self.is_global_zero:
            move_into_place(written, final)
        self.strategy.barrier("asrkit.checkpoint_in_place")
