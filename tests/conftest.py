"""Shared settings: the demo experiment shrunk to seconds, composed through the real conf/train.yaml."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see conf/hw/auto.yaml)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # pytest -n N: the cores shared out, not every worker taking all
    share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, share)))

import contextlib  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import soundfile  # noqa: E402
from transformers import Wav2Vec2Config, WhisperFeatureExtractor, WhisperTokenizer, pipeline  # noqa: E402

from asrkit.config import asset_path, compose_config  # noqa: E402
from asrkit.models.whisper_collator import WhisperCollator  # noqa: E402

__all__ = [
    "TINY_RUN",
    "compose_config",
    "logged_messages",
    "run_asrkit_command",
    "subprocess_env",
    "transcribe_demo_test_files",
]

REPO = Path(__file__).resolve().parent.parent

CPU_BF16 = {"on": "1", "off": "0"}  # --cpu-bf16 -> ASRKIT_CPU_BF16 (asrkit.hardware.cpu_has_native_bf16)


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--cpu-bf16",
        choices=["detect", *CPU_BF16],
        default="detect",
        help="what hw precision auto assumes of this CPU: on = bf16 autocast, off = fp32, detect = the "
        "processor's own answer (AVX512-BF16/AMX). CI runs the suite with on and with off.",
    )


def pytest_configure(config) -> None:
    choice = config.getoption("--cpu-bf16")
    if choice in CPU_BF16:  # in the environment, so that the runs tests start as subprocesses see it too
        os.environ["ASRKIT_CPU_BF16"] = CPU_BF16[choice]


def pytest_report_header(config) -> str:
    from asrkit.hardware import cpu_has_native_bf16

    chosen = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    return f"asrkit: hw precision auto on this CPU = {chosen} (--cpu-bf16={config.getoption('--cpu-bf16')})"


@pytest.fixture(autouse=True)
def _cpu_precision_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test that asks what ``hw.precision: auto`` picks on this CPU (``asrkit.hardware.cpu_has_native_bf16``, in
    this process: the test or its function-scoped fixtures) must be marked ``cpu_precision``: CI's second pass runs
    the marked tests with the other answer (``--cpu-bf16``), and only them, as every other test's outcome is the
    same with either. Runs started as subprocesses are not seen; those that depend on it are marked by hand."""
    from asrkit import hardware

    asked: list[bool] = []
    answer = hardware.cpu_has_native_bf16

    def recorded() -> bool:
        asked.append(True)
        return answer()

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", recorded)
    yield
    if asked and request.node.get_closest_marker("cpu_precision") is None:
        pytest.fail("this test asks whether the CPU has native bf16: mark it @pytest.mark.cpu_precision", False)


# A few steps, a few evaluation utterances.
TINY_RUN = [
    "experiment=demo",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "data.max_eval_samples=8",
    "data.max_train_samples=64",
    "test_before_training=false",
    "callbacks.periodic_checkpoint.every_n_train_steps=2",
    "callbacks.throughput.warmup_steps=1",
    "trainer.enable_progress_bar=false",
]


def transcribe_demo_test_files(export: Path, count: int = 20) -> tuple[list[str], list[str]]:
    """References and what ``transformers.pipeline`` on ``export`` hears in the first demo test files."""
    recognizer = pipeline("automatic-speech-recognition", model=str(export))
    folder = Path(asset_path("demo_speech")) / "test"
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:count]
    references, hypotheses = [], []
    for row in rows:
        audio, rate = soundfile.read(folder / row["file_name"], dtype="float32")
        hypotheses.append(recognizer({"raw": audio, "sampling_rate": rate})["text"])
        references.append(row["text"])
    return references, hypotheses


@pytest.fixture(scope="module")
def collator() -> WhisperCollator:
    """The demo Whisper's collator (Hindi, a 3 s window): what the data tests batch with."""
    tokenizer = WhisperTokenizer.from_pretrained(asset_path("whisper_tokenizer"))
    tokenizer.set_prefix_tokens(language="hi", task="transcribe", predict_timestamps=False)
    return WhisperCollator(
        WhisperFeatureExtractor(chunk_length=3), tokenizer, max_label_length=448, max_input_seconds=3.0
    )


@contextlib.contextmanager
def logged_messages() -> Iterator[list[str]]:
    """The messages logged at INFO and above while the block runs (through the root logger), in order."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    messages: list[str] = []
    try:
        yield messages
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        messages += [record.getMessage() for record in records]


def subprocess_env() -> dict[str, str]:
    """The environment of an asrkit process a test starts: offline, quiet OpenMP, the repository importable."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # the repository root, so that tests.cpu_deepspeed imports from any working directory
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_asrkit_command(run_dir: Path, *overrides: str, timeout: int = 1800) -> tuple[str, dict]:
    """``python -m asrkit <overrides>`` as a user types it, into ``run_dir``: its console output and metrics.json."""
    command = [
        sys.executable,
        "-m",
        "asrkit",
        *overrides,
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=subprocess_env())
    output = run.stdout + run.stderr  # Hydra's console log goes to stdout
    assert run.returncode == 0, output[-3000:]
    return output, json.loads((run_dir / "metrics.json").read_text())


def tiny_ctc_config(vocab_size: int, pad_token_id: int, **changes: Any) -> Wav2Vec2Config:
    """The tests' tiny random wav2vec2 CTC layout (hidden 32, one layer, a 2-layer front end of stride 320), with
    ``changes`` (e.g. ``feat_extract_norm``, ``num_hidden_layers``)."""
    sizes = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (32, 32),
        "conv_stride": (5, 64),
        "conv_kernel": (10, 64),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
    }
    return Wav2Vec2Config(vocab_size=vocab_size, pad_token_id=pad_token_id, **(sizes | changes))


@pytest.fixture(scope="session")
def kenlm_tools_built() -> None:
    """KenLM's lmplz and build_binary (python -m asrkit.lm), built by :func:`asrkit.kenlm_tools.build` on first use
    where missing (about 40 s; under a lock, so that parallel workers build them once). Where they cannot be built
    (no cmake, compiler or Boost) the tests that need them are skipped with the reason, as the browser test is,
    except under ``ASRKIT_REQUIRE_KENLM=1`` (.ci/run sets it), where that is a failure."""
    from filelock import FileLock

    from asrkit import kenlm_tools

    def present() -> bool:
        try:
            return all(kenlm_tools.tool(name) for name in kenlm_tools.TOOLS)
        except FileNotFoundError:
            return False

    if present():
        return
    kenlm_tools.bin_dir().parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(kenlm_tools.bin_dir().parent / "build.lock")):
        if present():  # another worker built them while this one waited
            return
        try:
            kenlm_tools.build()
        except (OSError, RuntimeError, ValueError) as error:
            reason = f"KenLM's tools could not be built: {str(error).splitlines()[0]}"
            if os.environ.get("ASRKIT_REQUIRE_KENLM") == "1":
                pytest.fail(reason)
            pytest.skip(reason)
