"""python -m asrkit.demo: the page's transcript is asrkit.transcribe's; unusable audio and a missing gradio are
one-line messages; the page itself, driven in headless Chromium (Debian's package; CI requires it)."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
from pathlib import Path

import gradio
import numpy as np
import pytest
import soundfile
from omegaconf import OmegaConf

from asrkit.config import CONFIG_DIR, asset_path
from asrkit.demo import NO_AUDIO, build_page, demo, launch, transcript, waveform
from asrkit.recognizer import Recognizer, load_recognizer
from asrkit.train import train
from asrkit.transcribe import transcribe
from tests.conftest import TINY_RUN, compose_config
from tests.demo_page import CHROMIUM_PACKAGE, chromium_path, serve_demo, transcribe_on_page
from tests.test_evaluate import _tiny_ctc_export

AUDIO = Path(asset_path("demo_speech")) / "test" / "test_0000.flac"
# what loads the model and decodes: demo.yaml declares them as transcribe.yaml does
RECOGNIZER_KEYS = ["module_class", "language", "task", "num_beams", "generation_max_length", "device", "dtype"]


def _transcribed(export: Path, out: Path, *overrides: str) -> str:
    """What python -m asrkit.transcribe prints for AUDIO."""
    cfg = compose_config([f"checkpoint={export}", f"audio={AUDIO}", *overrides], out, config_name="transcribe")
    with contextlib.redirect_stdout(io.StringIO()):
        (result,) = transcribe(cfg)
    return result["text"]


def _recognizer(export: Path, out: Path) -> Recognizer:
    """The model as python -m asrkit.demo loads it."""
    return load_recognizer(compose_config([f"checkpoint={export}"], out, config_name="demo"), out, "float32")


@pytest.fixture(scope="module")
def ctc_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_ctc_export(tmp_path_factory.mktemp("ctc") / "export")


def test_the_demo_decodes_with_transcribes_keys_and_defaults() -> None:
    demo_cfg, transcribe_cfg = (OmegaConf.load(Path(CONFIG_DIR) / f"{name}.yaml") for name in ("demo", "transcribe"))
    assert {key: demo_cfg[key] for key in RECOGNIZER_KEYS} == {key: transcribe_cfg[key] for key in RECOGNIZER_KEYS}
    assert demo_cfg.host == "127.0.0.1" and demo_cfg.share is False and OmegaConf.is_missing(demo_cfg, "checkpoint")


def test_a_file_and_a_recording_give_what_transcribe_gives(ctc_export: Path, tmp_path: Path) -> None:
    expected = _transcribed(ctc_export, tmp_path / "transcribe")
    recognizer = _recognizer(ctc_export, tmp_path / "demo")
    assert expected and transcript(recognizer, str(AUDIO)) == expected
    pcm, rate = soundfile.read(AUDIO, dtype="int16")  # a microphone recording as gradio hands it over
    assert rate == recognizer.sampling_rate
    np.testing.assert_array_equal(waveform((rate, pcm), rate), waveform(AUDIO, rate))
    assert transcript(recognizer, (rate, pcm)) == expected
    assert transcript(recognizer, (rate, np.stack([pcm, pcm], axis=1))) == expected  # stereo
    assert transcript(recognizer, (rate, pcm.astype(np.float32) / 32768)) == expected
    resampled = waveform((rate * 3, np.repeat(pcm, 3)), rate)  # 48 kHz in, the model's 16 kHz out
    assert abs(len(resampled) - len(pcm)) <= 1


def test_unusable_audio_is_one_line_on_the_page(ctc_export: Path, tmp_path: Path) -> None:
    recognizer = _recognizer(ctc_export, tmp_path)
    (tmp_path / "notes.flac").write_text("not audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    cases = [
        (None, NO_AUDIO),
        (str(tmp_path / "notes.flac"), "Cannot transcribe notes.flac: unreadable audio."),
        (str(tmp_path / "empty.wav"), "Cannot transcribe empty.wav: empty file."),
        ((16_000, np.zeros(0, dtype=np.int16)), "Cannot transcribe the recording: no samples."),
    ]
    for audio, start in cases:
        with pytest.raises(gradio.Error) as error:
            transcript(recognizer, audio)
        message = error.value.message
        assert message.startswith(start) and "\n" not in message and "Traceback" not in message
    assert "Record again or upload a WAV, FLAC, OGG/Opus or MP3 file" in message


def test_a_missing_gradio_is_one_line_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # what an import finds where it is not installed
    cfg = compose_config([f"checkpoint={tmp_path}"], tmp_path, config_name="demo")  # no model there: never loaded
    with pytest.raises(ImportError) as error:
        demo(cfg)
    message = str(error.value)
    assert message.startswith("python -m asrkit.demo needs the gradio package") and "\n" not in message
    assert message.endswith("pip install 'asrkit[demo]'")


def test_a_port_in_use_is_one_line_naming_it(ctc_export: Path, tmp_path: Path) -> None:
    page = build_page(_recognizer(ctc_export, tmp_path), "title", "description")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"^port={port}: in use on 127.0.0.1; choose another") as error:
            launch(page, "127.0.0.1", port, share=False)
    assert "\n" not in str(error.value)


def _chromium() -> str:
    """Debian's chromium; without it the browser test is skipped, or fails where ASRKIT_REQUIRE_BROWSER=1 (CI)."""
    found = chromium_path()
    if found:
        return found
    reason = f"no chromium on PATH: install Debian's {CHROMIUM_PACKAGE} package (apt-get install {CHROMIUM_PACKAGE})"
    if os.environ.get("ASRKIT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; ASRKIT_REQUIRE_BROWSER=1 requires the browser test")
    pytest.skip(reason)


@pytest.mark.slow
def test_the_page_in_a_browser_shows_what_transcribe_prints(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = _chromium()
    train(compose_config(TINY_RUN, tmp_path / "run"))
    export, decoding = tmp_path / "run" / "export", "generation_max_length=48"  # the demo model's length
    expected = _transcribed(export, tmp_path / "transcribe", decoding)
    with serve_demo(export, tmp_path / "demo", decoding) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page()
            page.goto(url)
            page.locator("#transcribe").click()  # nothing recorded or uploaded yet
            expect(page.get_by_text(NO_AUDIO)).to_be_visible(timeout=60_000)
            shown = transcribe_on_page(page, url, AUDIO)
        finally:
            browser.close()
    assert expected and shown == expected
