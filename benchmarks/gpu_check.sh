#!/usr/bin/env bash
# One GPU, under 10 minutes, offline: real bf16 training steps through `python -m asrkit` of a whisper-small-sized
# and a wav2vec2-large-sized model initialised at random on the bundled demo speech, then asrkit.evaluate on
# each export. Prints samples/s (steady state), MFU, peak GPU memory, evaluation RTF, and
# `RESULT gpu_check <samples/s of the whisper-small-sized run>`.
#
#   bash benchmarks/gpu_check.sh             # the GPU check (one CUDA GPU with bf16)
#   bash benchmarks/gpu_check.sh --smoke     # the same code path at demo sizes, few steps: a CPU in minutes (or SMOKE=1)
#
# Environment: PYTHON (default `uv run python` where uv exists, else python), GPU_CHECK_DIR (where the runs go,
# default outputs/gpu_check/<date-time>), WHISPER_STEPS, CTC_STEPS, BATCH, NUM_WORKERS, PRECISION,
# EVAL_SAMPLES (test utterances evaluated; null = all 100), MATMUL_SIZES (n of the peak's matmuls), FLOP_BATCHES,
# LOADER_BATCHES and TIMED_STEPS (where the time goes: the training loader alone, then training steps alone),
# COMPILE_STEPS=1 (also time the steps alone with model.compile=true).
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--smoke]" >&2; exit 2 ;;
  esac
done

if [[ -n ${PYTHON:-} ]]; then
  read -r -a PY <<<"$PYTHON"
elif command -v uv >/dev/null; then
  PY=(uv run python)
else
  PY=(python)
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

DIR=${GPU_CHECK_DIR:-outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}
PRECISION=${PRECISION:-bf16-mixed}

if [[ $SMOKE == 1 ]]; then
  # The demo models' own sizes (conf/model/whisper_demo.yaml: 3 s window; wav2vec2_ctc_demo.yaml), a few steps.
  WHISPER_STEPS=${WHISPER_STEPS:-14} CTC_STEPS=${CTC_STEPS:-14} BATCH=${BATCH:-8} NUM_WORKERS=${NUM_WORKERS:-1}
  WHISPER_SIZES=() CTC_SIZES=()
  WHISPER_NAME=whisper_demo_sized CTC_NAME=wav2vec2_demo_sized
  EVAL_SAMPLES=${EVAL_SAMPLES:-16} MATMUL_SIZES=${MATMUL_SIZES:-1024} FLOP_BATCHES=${FLOP_BATCHES:-1}
  LOADER_BATCHES=${LOADER_BATCHES:-8} TIMED_STEPS=${TIMED_STEPS:-4}
else
  WHISPER_STEPS=${WHISPER_STEPS:-120} CTC_STEPS=${CTC_STEPS:-150} BATCH=${BATCH:-64} NUM_WORKERS=${NUM_WORKERS:-8}
  # whisper-small (openai/whisper-small's WhisperConfig sizes) with its real 30 s window: 1500 encoder positions,
  # 3000 mel frames; the demo's 0.8-2.6 s utterances are padded to 30 s, as Whisper fine-tuning does.
  WHISPER_SIZES=(
    model.random_init.d_model=768 model.random_init.encoder_layers=12 model.random_init.decoder_layers=12
    model.random_init.encoder_attention_heads=12 model.random_init.decoder_attention_heads=12
    model.random_init.encoder_ffn_dim=3072 model.random_init.decoder_ffn_dim=3072 model.random_init.num_mel_bins=80
    model.random_init.max_source_positions=1500 model.random_init.dropout=0.0
  )
  # wav2vec2-large-lv60 (facebook/wav2vec2-large-lv60's Wav2Vec2Config sizes): the standard 7-layer 512-channel
  # front end (stride 320), 24 pre-norm layers of 1024, 16 heads, ffn 4096; the front end is trained (random).
  CTC_SIZES=(
    model.random_init.hidden_size=1024 model.random_init.num_hidden_layers=24
    model.random_init.num_attention_heads=16 model.random_init.intermediate_size=4096
    'model.random_init.conv_dim=[512,512,512,512,512,512,512]'
    'model.random_init.conv_stride=[5,2,2,2,2,2,2]'
    'model.random_init.conv_kernel=[10,3,3,3,3,2,2]'
    model.random_init.num_conv_pos_embeddings=128 model.random_init.num_conv_pos_embedding_groups=16
  )
  WHISPER_NAME=whisper_small_sized CTC_NAME=wav2vec2_large_sized
  EVAL_SAMPLES=${EVAL_SAMPLES:-null} MATMUL_SIZES=${MATMUL_SIZES:-4096 8192} FLOP_BATCHES=${FLOP_BATCHES:-3}
  LOADER_BATCHES=${LOADER_BATCHES:-24} TIMED_STEPS=${TIMED_STEPS:-10}
fi

# Training time goes to training: no validation (val_check_interval past max_steps), no test, no periodic checkpoint
# (last.ckpt is still written once at the end), the export kept for asrkit.evaluate.
COMMON=(
  hw=auto "hw.precision=$PRECISION" "data.per_device_batch_size=$BATCH" "data.global_batch_size=$BATCH"
  "data.num_workers=$NUM_WORKERS" data.test_split=null test_before_training=false
  callbacks.periodic_checkpoint=null trainer.enable_progress_bar=false
)

mkdir -p "$DIR"
echo "gpu_check: mode $([[ $SMOKE == 1 ]] && echo smoke || echo full), $PRECISION, batch $BATCH, steps $WHISPER_STEPS (whisper) and $CTC_STEPS (ctc)"
echo "gpu_check: runs in $DIR, python: ${PY[*]}"
"${PY[@]}" -c 'import torch; print("torch", torch.__version__, "cuda:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'

run() {  # name experiment steps sizes...
  local name=$1 experiment=$2 steps=$3 started
  shift 3
  local run_dir=$DIR/$name matmul_sizes
  read -r -a matmul_sizes <<<"$MATMUL_SIZES"
  started=$(date +%s)
  echo "== $name: training $steps steps (log: $run_dir/train.log)"
  mkdir -p "$run_dir"
  if ! "${PY[@]}" -m asrkit "experiment=$experiment" "${COMMON[@]}" "$@" \
    "trainer.max_steps=$steps" "trainer.val_check_interval=$((steps + 1))" \
    "hydra.run.dir=$run_dir" >"$run_dir/train.log" 2>&1; then
    tail -n 40 "$run_dir/train.log"; echo "gpu_check: $name training failed" >&2; exit 1
  fi
  echo "== $name: evaluating the export (log: $run_dir/evaluate.log)"
  if ! "${PY[@]}" -m asrkit.evaluate "checkpoint=$run_dir/export" data=demo batch_size=32 \
    "max_eval_samples=$EVAL_SAMPLES" "hydra.run.dir=$run_dir/evaluate" >"$run_dir/evaluate.log" 2>&1; then
    tail -n 40 "$run_dir/evaluate.log"; echo "gpu_check: $name evaluation failed" >&2; exit 1
  fi
  echo "== $name: counting FLOPs, timing the loader and the steps alone, the matmul peak (log: $run_dir/flops.log)"
  if ! "${PY[@]}" benchmarks/gpu_check.py flops "$run_dir" --batches "$FLOP_BATCHES" \
    --loader-batches "$LOADER_BATCHES" --steps "$TIMED_STEPS" $([[ ${COMPILE_STEPS:-0} == 1 ]] && echo --compile) \
    --matmul-sizes "${matmul_sizes[@]}" >"$run_dir/flops.log" 2>&1; then
    tail -n 40 "$run_dir/flops.log"; echo "gpu_check: $name FLOP count failed" >&2; exit 1
  fi
  echo "== $name: done in $(($(date +%s) - started)) s"
}

start=$(date +%s)
run "$WHISPER_NAME" demo "$WHISPER_STEPS" "${WHISPER_SIZES[@]}"
run "$CTC_NAME" demo_ctc "$CTC_STEPS" "${CTC_SIZES[@]}"
echo "gpu_check: $(($(date +%s) - start)) s in all"
"${PY[@]}" benchmarks/gpu_check.py report "$DIR/$WHISPER_NAME" "$DIR/$CTC_NAME"
