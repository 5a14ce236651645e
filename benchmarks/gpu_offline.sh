#!/usr/bin/env bash
# benchmarks/gpu_check.sh on an offline GPU machine whose Python already has torch (CUDA), but not the rest of
# asrkit's packages: carry them as wheels. How the 2026-12-04 H200 run in benchmarks/README.md was made.
#
#   bash benchmarks/gpu_offline.sh download [DIR]   # here (online): wheels of uv.lock's versions, for CPython 3.12
#   bash benchmarks/gpu_offline.sh run [DIR]        # there: install them under /tmp/site, then gpu_check.sh
#
# DIR defaults to .whl (ignore it in git). The packages carried are those the CUDA image lacked (it had torch,
# torchaudio, numpy, pyarrow, pandas, fsspec, tokenizers, huggingface_hub, safetensors, tensorboard, ...) plus
# asrkit's pins where the image's versions differ (lightning, transformers). PY_VERSION (default 3.12) is the GPU
# machine's Python. `run` passes the environment on to gpu_check.sh (WHISPER_STEPS, COMPILE_STEPS, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
verb=${1:-}
DIR=${2:-.whl}
PACKAGES=(
  antlr4-python3-runtime cffi pycparser datasets dill multiprocess hydra-core jiwer rapidfuzz omegaconf pydantic
  pydantic-core typing-inspection annotated-types typing-extensions soundfile lightning pytorch-lightning transformers
  torchcodec
)
case $verb in
  download)
    mkdir -p "$DIR"
    pins=$(python3 - "${PACKAGES[@]}" <<'PY'
import sys, tomllib
lock = tomllib.load(open("uv.lock", "rb"))["package"]
for name in sys.argv[1:]:
    versions = sorted({p["version"] for p in lock if p["name"] == name}, key=lambda v: [int(x) for x in v.split(".") if x.isdigit()])
    if not versions:
        sys.exit(f"{name} is not in uv.lock")
    print(f"{name}=={versions[-1]}")  # the newest pin: the one for the newest Pythons
PY
)
    python3 -m pip wheel -q --no-deps -w "$DIR" $(grep '^antlr4' <<<"$pins")  # an sdist only
    # shellcheck disable=SC2046
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PY_VERSION:-3.12}" \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DIR" $(grep -v '^antlr4' <<<"$pins")
    du -sh "$DIR"
    ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$DIR"/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHON=${PYTHON:-python3}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    "$PYTHON" -c 'import asrkit.train, asrkit.evaluate, lightning, transformers, datasets
print("lightning", lightning.__version__, "transformers", transformers.__version__, "datasets", datasets.__version__)'
    bash benchmarks/gpu_check.sh
    ;;
  *) echo "usage: bash benchmarks/gpu_offline.sh download|run [DIR]" >&2; exit 2 ;;
esac
