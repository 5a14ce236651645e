"""``python -m asrkit.transcribe checkpoint=... audio=...``: audio files in, text out.

``audio`` is a file, a folder (every file with one of ``extensions`` under it, in name order) or a list of
them. Files are decoded with soundfile and resampled to the model's rate (:mod:`asrkit.data.audio`). A CTC
model hears each file whole; Whisper hears at most its input window (30 s; 3 s for the demo model), so a
longer file is cut into consecutive windows whose texts are joined with spaces (a word on a cut may be
split or lost). The model is loaded as :mod:`asrkit.evaluate` loads it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig

from asrkit.config import CONFIG_DIR, register_resolvers
from asrkit.data.audio import AudioDecodeError, decode_audio
from asrkit.evaluate import load_recognizer

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


def _windows(samples: Any, length: int | None) -> list[Any]:
    if not length or len(samples) <= length:
        return [samples]
    return [samples[start : start + length] for start in range(0, len(samples), length)]


def transcribe(cfg: DictConfig) -> list[dict[str, Any]]:
    """Transcribe every file of ``cfg.audio``; print, write and return ``{file, text, seconds}`` per file."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    audio = list(cfg.audio) if isinstance(cfg.audio, ListConfig) else str(cfg.audio)
    files = audio_files(audio, cfg.extensions)
    with tempfile.TemporaryDirectory(prefix="asrkit-export-") as workdir:
        recognizer = load_recognizer(cfg, workdir, cfg.dtype)
    collator = recognizer.collator()
    rate = collator.sampling_rate
    window = int(recognizer.max_input_seconds * rate) if recognizer.max_input_seconds else None

    pieces: list[dict[str, Any]] = []  # one per window: which file it belongs to, and its samples
    seconds: dict[int, float] = {}
    for number, file in enumerate(files):
        try:
            samples = decode_audio({"path": str(file), "bytes": None}, rate)
        except AudioDecodeError as error:
            log.warning("skipping %s", error)
            continue
        seconds[number] = len(samples) / rate
        for samples_window in _windows(samples, window):
            pieces.append({"index": number, "audio": samples_window, "reference": ""})
    texts: dict[int, list[str]] = {number: [] for number in seconds}
    for start in range(0, len(pieces), cfg.batch_size):
        batch = collator(pieces[start : start + cfg.batch_size])
        for number, text in zip(batch["indices"], recognizer(batch["inputs"], batch["lengths"]), strict=True):
            texts[number].append(text.strip())

    results = [
        {
            "file": str(files[number]),
            "text": " ".join(t for t in texts[number] if t),
            "seconds": seconds[number],
        }
        for number in texts
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
