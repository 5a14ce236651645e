"""``python -m asrkit.transcribe checkpoint=... audio=...``: audio files in, text out.

``audio`` is a file, a folder (every file with one of ``extensions`` under it, in name order) or a list of
them. Files are decoded with soundfile and resampled to the model's rate (:mod:`asrkit.data.audio`). A CTC
model hears each file whole. Whisper decodes a file within its input window (30 s; 3 s for the demo model)
in one ``generate()`` call, and a longer one by transformers' long-form sequential decoding (the window moves
on by the timestamps the model predicts), exactly as :mod:`asrkit.evaluate` and training's evaluation do.
The model is loaded as :mod:`asrkit.evaluate` loads it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, ListConfig

from asrkit.config import CONFIG_DIR, register_resolvers
from asrkit.data.audio import AudioDecodeError, decode_audio
from asrkit.recognizer import load_recognizer

log = logging.getLogger(__name__)


def audio_files(audio: str | Iterable[str], extensions: Iterable[str]) -> list[Path]:
    """The files named by ``audio`` (files as given, folders searched recursively for ``extensions``)."""
    entries = [audio] if isinstance(audio, str) else list(audio)
    suffixes = {f".{extension.lower().lstrip('.')}" for extension in extensions}
    files: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"audio={entry}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"audio={audio}: no file ending in {sorted(suffixes)} there")
    return files


def transcribe(cfg: DictConfig) -> list[dict[str, Any]]:
    """Transcribe every file of ``cfg.audio``; print, write and return ``{file, text, seconds}`` per file."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    audio = list(cfg.audio) if isinstance(cfg.audio, ListConfig) else str(cfg.audio)
    files = audio_files(audio, cfg.extensions)
    with tempfile.TemporaryDirectory(prefix="asrkit-export-") as workdir:
        recognizer = load_recognizer(cfg, workdir, cfg.dtype)
    rate = recognizer.sampling_rate

    decoded: list[tuple[Path, np.ndarray]] = []  # the files that decode, whole
    for file in files:
        try:
            decoded.append((file, decode_audio({"path": str(file), "bytes": None}, rate)))
        except AudioDecodeError as error:
            log.warning("skipping %s", error)
    texts = recognizer.transcribe([samples for _, samples in decoded], cfg.batch_size)
    results = [
        {"file": str(file), "text": text, "seconds": len(samples) / rate}
        for (file, samples), text in zip(decoded, texts, strict=True)
    ]
    lines = [f"{result['file']}\t{result['text']}" for result in results]
    (out / "transcripts.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with open(out / "transcripts.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(result, ensure_ascii=False) + "\n" for result in results)
    print("\n".join(lines))
    log.info("%d of %d files transcribed into %s", len(results), len(files), out / "transcripts.txt")
    return results


@hydra.main(config_path=CONFIG_DIR, config_name="transcribe", version_base="1.3")
def main(cfg: DictConfig) -> None:
    transcribe(cfg)


def cli() -> None:
    register_resolvers()
    main()


if __name__ == "__main__":
    cli()
