"""``python -m asrkit.transcribe checkpoint=... audio=...``: audio files in, text out.

``audio`` is a file, a folder (every file with one of ``extensions`` under it, in name order) or a list of
them. Files are decoded with soundfile and resampled to the model's rate (:mod:`asrkit.data.audio`). A CTC
model hears a file within ``chunk_length_s`` whole and a longer one in overlapping windows whose logits are
stitched (:mod:`asrkit.longform`). Whisper decodes a file within its input window (30 s; 3 s for the demo
model) in one ``generate()`` call, and a longer one by transformers' long-form sequential decoding (the window
moves on by the timestamps the model predicts), exactly as :mod:`asrkit.evaluate` and training's evaluation
do. The model is loaded as :mod:`asrkit.evaluate` loads it.

``formats`` other than ``txt`` ask for timed segments (:mod:`asrkit.timed`): per file, ``<stem>.json`` (text,
segments with start/end seconds, and words with ``word_timestamps``), ``<stem>.srt`` and ``<stem>.vtt``
(:mod:`asrkit.subtitles`). transcripts.txt and transcripts.jsonl are written whatever ``formats`` says.
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
from asrkit.subtitles import check_formats, write_subtitles
from asrkit.timed import transcribe_timed

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


def _stems(files: list[Path]) -> list[str]:
    """Each file's output name: its stem, numbered when two files share one (a.wav and a.flac, x/a and y/a)."""
    names: list[str] = []
    for file in files:
        name, number = file.stem, 1
        while name in names:
            number += 1
            name = f"{file.stem}-{number}"
        names.append(name)
    return names


def transcribe(cfg: DictConfig) -> list[dict[str, Any]]:
    """Transcribe every file of ``cfg.audio``; print, write and return ``{file, text, seconds}`` per file
    (and write each file's segments in the asked ``formats``)."""
    formats = check_formats(cfg.formats)
    timed = bool(set(formats) - {"txt"})
    if cfg.word_timestamps and not timed:
        raise ValueError(f"word_timestamps=true: formats={formats} has none that holds them (json, srt or vtt)")
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
    waveforms = [samples for _, samples in decoded]
    if timed:
        found = transcribe_timed(
            recognizer,
            waveforms,
            cfg.batch_size,
            word_timestamps=cfg.word_timestamps,
            alignment_heads=cfg.alignment_heads,
            max_segment_seconds=cfg.max_segment_seconds,
            segment_pause_seconds=cfg.segment_pause_seconds,
        )
    else:
        found = [{"text": text} for text in recognizer.transcribe(waveforms, cfg.batch_size)]
    results = [
        {"file": str(file), "text": result["text"], "seconds": len(samples) / rate}
        for (file, samples), result in zip(decoded, found, strict=True)
    ]
    if timed:
        for stem, result, timing in zip(_stems([file for file, _ in decoded]), results, found, strict=True):
            write_subtitles(out, stem, result | {"segments": timing["segments"]}, formats)
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
