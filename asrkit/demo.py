"""``python -m asrkit.demo checkpoint=...``: a web page that transcribes the microphone or an uploaded file.

The page is served by gradio (the ``demo`` extra, imported only here), as the Whisper fine-tuning event's demo
Spaces were. The model is loaded as :mod:`asrkit.transcribe` loads it (:func:`asrkit.recognizer.load_recognizer`,
the same config keys and defaults) and hears the audio as that command hears a file: decoded by soundfile,
averaged to mono, resampled to the model's rate (:mod:`asrkit.data.audio`) and decoded by
:meth:`asrkit.recognizer.Recognizer.transcribe`, so that the page shows what ``python -m asrkit.transcribe``
prints for the same file. Audio the page cannot use (none given, not audio, no samples) is a one-line message
on the page, not a traceback.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import numpy as np
from omegaconf import DictConfig

from asrkit.config import CONFIG_DIR, register_resolvers
from asrkit.data.audio import NO_SAMPLES, AudioDecodeError, decode_audio
from asrkit.extras import require
from asrkit.recognizer import Recognizer, load_recognizer

if TYPE_CHECKING:
    import gradio

log = logging.getLogger(__name__)

NO_AUDIO = "No audio: record from the microphone or upload a file, then press Transcribe."
FORMATS = "WAV, FLAC, OGG/Opus or MP3"  # what soundfile reads
COMMAND = "python -m asrkit.demo"


def waveform(audio: str | Path | tuple[int, np.ndarray] | None, sampling_rate: int) -> np.ndarray:
    """Audio as gradio hands it over, a file path or ``(rate, samples)`` (int16 or float, ``(samples,)`` or
    ``(samples, channels)``), as mono float32 at ``sampling_rate``; :class:`AudioDecodeError` if it is unusable."""
    if audio is None:
        raise AudioDecodeError(NO_AUDIO, NO_SAMPLES)
    if isinstance(audio, str | Path):
        return decode_audio({"path": str(audio), "bytes": None}, sampling_rate)
    rate, samples = audio
    samples = np.asarray(samples)
    if samples.dtype.kind == "i":  # full scale to [-1, 1), as soundfile reads integer PCM
        samples = samples / -float(np.iinfo(samples.dtype).min)
    samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2:  # channels averaged in float32, as decode_audio does
        samples = samples.mean(axis=1)
    return decode_audio({"array": samples, "sampling_rate": rate, "path": "the recording"}, sampling_rate)


def unusable_audio_message(audio: str | Path | tuple[int, np.ndarray] | None, error: AudioDecodeError) -> str:
    """The line the page shows for audio it cannot transcribe."""
    if audio is None:
        return NO_AUDIO
    name = Path(audio).name if isinstance(audio, str | Path) else "the recording"
    return f"Cannot transcribe {name}: {error.reason}. Record again or upload a {FORMATS} file."


def transcript(recognizer: Recognizer, audio: str | Path | tuple[int, np.ndarray] | None) -> str:
    """The text of ``audio`` (what ``asrkit.transcribe`` gives for the file); unusable audio raises
    :class:`gradio.Error`, whose message the page shows."""
    import gradio

    try:
        samples = waveform(audio, recognizer.sampling_rate)
    except AudioDecodeError as error:
        log.warning("not transcribed: %s", error)
        raise gradio.Error(unusable_audio_message(audio, error), print_exception=False) from None
    return recognizer.transcribe([samples], batch_size=1)[0]


def build_page(recognizer: Recognizer, title: str, description: str) -> gradio.Blocks:
    """The page: an audio input (microphone or upload), a Transcribe button and the transcript."""
    import gradio

    def on_click(audio: str | None) -> str:
        return transcript(recognizer, audio)

    with gradio.Blocks(title=title, analytics_enabled=False) as page:
        gradio.Markdown(f"# {title}\n\n{description}")
        audio = gradio.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio")
        button = gradio.Button("Transcribe", variant="primary", elem_id="transcribe")
        text = gradio.Textbox(label="Transcript", lines=3, interactive=False, elem_id="transcript")
        button.click(on_click, inputs=audio, outputs=text, api_name="transcribe")
    return page


def launch(page: gradio.Blocks, host: str, port: int | None, share: bool) -> None:
    """Serve ``page`` until the process is stopped (Ctrl+C); a port in use is a one-line error naming it."""
    try:
        page.launch(server_name=host, server_port=port, share=share)
    except OSError as error:
        if "Cannot find empty port" not in str(error):
            raise
        raise OSError(f"port={port}: in use on {host}; choose another (port=8080) or port=null (a free one)") from None


def demo(cfg: DictConfig) -> None:
    """Load ``cfg.checkpoint`` as asrkit.transcribe does and serve the page (blocks until stopped)."""
    require("gradio", COMMAND)  # before the model loads: a missing extra is the first thing said
    with tempfile.TemporaryDirectory(prefix="asrkit-export-") as workdir:
        recognizer = load_recognizer(cfg, workdir, cfg.dtype)
    description = cfg.description or (
        f"Model: `{cfg.checkpoint}`. Record from the microphone or upload an audio file ({FORMATS}), "
        "then press **Transcribe**."
    )
    launch(build_page(recognizer, str(cfg.title), str(description)), str(cfg.host), cfg.port, bool(cfg.share))


@hydra.main(config_path=CONFIG_DIR, config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    demo(cfg)


def cli() -> None:
    register_resolvers()
    main()


if __name__ == "__main__":
    cli()
