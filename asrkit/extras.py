"""Optional packages: imported only when a config names them, and a missing one named with its extra."""

from __future__ import annotations

import importlib

# top-level package -> the asrkit extra that installs it
EXTRAS = {
    "lightning_habana": "gaudi",
    "habana_frameworks": "gaudi",
    "deepspeed": "deepspeed",
    "mpi4py": "mpi",
    "bitsandbytes": "bnb",
    "peft": "peft",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "gradio": "demo",
    "matplotlib": "plot",
    "pyctcdecode": "lm",
    "kenlm": "lm",
    "ctranslate2": "ct2",
    "faster_whisper": "ct2",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "onnxscript": "onnx",
}


def require(package: str, what: str) -> None:
    """Import ``package`` or stop with a one-line error naming the extra that installs it."""
    try:
        importlib.import_module(package)
    except ImportError as error:
        root = package.split(".")[0]
        extra = EXTRAS.get(root)
        hint = f"pip install 'asrkit[{extra}]'" if extra else f"pip install {root}"
        raise ImportError(f"{what} needs the {root} package ({error}); install it: {hint}") from None
