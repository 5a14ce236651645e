"""``python -m asrkit.demo`` served in a subprocess and its page driven in a browser (Playwright): shared by
tests/test_demo_app.py and docs/make_demo_screenshot.py.

Playwright drives Debian's chromium (``apt-get install chromium``, as .ci/run does); it never downloads a browser.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Page, expect

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_PACKAGE = "chromium"  # the Debian package that gives /usr/bin/chromium


def chromium_path() -> str | None:
    """Debian's chromium, if installed."""
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serving(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost, never through a proxy
    try:
        with opener.open(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def serve_demo(checkpoint: Path, run_dir: Path, *overrides: str, timeout: float = 600) -> Iterator[str]:
    """``python -m asrkit.demo checkpoint=<checkpoint> <overrides>`` on a free localhost port, run from this
    repository; yields the page's URL once it answers, stops the server on exit. Its output: run_dir/server.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "asrkit.demo", f"checkpoint={checkpoint}", f"port={port}"]
    command += [f"hydra.run.dir={run_dir}", *overrides]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_WAIT_POLICY="PASSIVE")
    url, log_path = f"http://127.0.0.1:{port}/", run_dir / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _serving(url):
            if server.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {server.returncode}" if server.poll() is not None else f"not up in {timeout} s"
                raise RuntimeError(f"{' '.join(command)}: {state}:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def transcribe_on_page(page: Page, url: str, audio: Path, timeout_s: float = 300) -> str:
    """Open the demo page, upload ``audio``, press Transcribe and return the transcript the page shows."""
    page.goto(url)
    page.locator("#audio input[type=file]").set_input_files(str(audio))
    uploaded = page.locator(f'#audio [data-testid="download-link"][href$="/{audio.name}"]')  # the server has it
    expect(uploaded).to_have_count(1, timeout=timeout_s * 1000)
    page.locator("#transcribe").click()
    transcript = page.locator("#transcript textarea")
    expect(transcript).not_to_have_value("", timeout=timeout_s * 1000)
    return transcript.input_value()
