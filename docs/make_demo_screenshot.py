"""Remake docs/demo_app.png: the demo app's page after it transcribed a demo test file.

    uv run python -m docs.make_demo_screenshot outputs/demo0/export      # from the repository root

Serves ``python -m asrkit.demo checkpoint=<export>`` on a free localhost port, uploads the audio file in headless
Chromium (Debian's ``chromium`` package, driven by Playwright), presses Transcribe and saves the page as a PNG.
Prints the transcript the page showed and the reference transcript of the file. Chromium draws the Hindi of the
demo model with the machine's fonts: install a Devanagari one first (Debian: ``apt-get install fonts-lohit-deva``).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.demo_page import REPO, chromium_path, serve_demo, transcribe_on_page

TEST_SET = REPO / "asrkit" / "assets" / "demo_speech" / "test"
VIEWPORT = {"width": 1000, "height": 700}


def reference(audio: Path) -> str | None:
    """The transcript the demo speech set records for ``audio``, if it is one of its test files."""
    with open(TEST_SET / "metadata.csv", newline="", encoding="utf-8") as f:
        return next((row["text"] for row in csv.DictReader(f) if row["file_name"] == audio.name), None)


def make_screenshot(export: Path, audio: Path, out: Path) -> str:
    """Transcribe ``audio`` on the demo page of ``export``, save the page as ``out``; the transcript shown."""
    executable = chromium_path()
    if executable is None:
        raise SystemExit("no chromium on PATH: install Debian's chromium package (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="asrkit-demo-") as run_dir:
        with serve_demo(export, Path(run_dir)) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                shown = transcribe_on_page(page, url, audio)
                page.screenshot(path=str(out))
            finally:
                browser.close()
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="the checkpoint the page serves (an asrkit export)")
    parser.add_argument("--audio", type=Path, default=TEST_SET / "test_0001.flac", help="the file to upload")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "demo_app.png", help="the PNG to write")
    args = parser.parse_args()
    shown = make_screenshot(args.export, args.audio.resolve(), args.out)
    print(f"page:      {shown}\nreference: {reference(args.audio)}\nwrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
