"""Model FLOP utilisation of training steps: model FLOP/s as a fraction of this machine's measured matmul peak.

    uv run python benchmarks/mfu.py [--steps 8] [--small-steps 3] [--warmup 1] [--matmul-sizes 2048 4096]

Measures, in one run on this machine:

    peak        the best GFLOP/s of large square torch.matmul (2 n^3 FLOPs each) in fp32, and in bf16 where
                asrkit.hardware.cpu_has_native_bf16() says the CPU has native bf16 dot products
    FLOPs       of one training step (forward + backward), counted by torch.utils.flop_counter.FlopCounterMode
                on a real step of each model: matmuls, convolutions and attention (CPU SDPA included)
    step time   median seconds of real training steps (module.training_step, backward, AdamW step) on one
                fixed batch, warm-up steps excluded, in fp32 and under bf16 autocast where available

for three models: the demo Whisper (conf/model/whisper_demo.yaml, experiment=demo, a batch of 16 demo
utterances in its 3 s window), the demo CTC wav2vec2 (experiment=demo_ctc, a batch of 16 demo utterances
from its length buckets) and a whisper-small-sized Whisper initialised at random (d_model 768, 12+12 layers,
12 heads, ffn 3072, 80 mels, vocab 51,865, 30 s window) on 2 x 30 s with 60 label tokens. MFU is counted
FLOPs / step time / peak of that precision; the last line is ``RESULT mfu <whisper-small-sized fp32 MFU>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (as conf/hw/auto.yaml)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count  # noqa: E402

SMALL = {  # whisper-small's WhisperConfig sizes (openai/whisper-small), on the demo's random-init path
    "d_model": 768,
    "encoder_layers": 12,
    "decoder_layers": 12,
    "encoder_attention_heads": 12,
    "decoder_attention_heads": 12,
    "encoder_ffn_dim": 3072,
    "decoder_ffn_dim": 3072,
    "num_mel_bins": 80,
    "max_source_positions": 1500,  # a 30 s window: 3000 mel frames, conv stride 2
}
SMALL_BATCH, SMALL_LABEL_TOKENS = 2, 60


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's FlopCounterMode has formulas for the CUDA SDPA kernels only; on a CPU, F.scaled_dot_product_attention
# runs this fused kernel, whose QK^T and AV matmuls would otherwise go uncounted. Same formula as torch's own.
CPU_SDPA = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def matmul_peak(dtype: torch.dtype, sizes: list[int], repeats: int) -> tuple[float, int]:
    """Best GFLOP/s of n x n @ n x n over the sizes and repeats, and the size that reached it."""
    best, best_n = 0.0, 0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.matmul(a, b)  # warm-up (thread pool, kernel selection)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            rate = 2 * n**3 / (time.perf_counter() - start) / 1e9
            if rate > best:
                best, best_n = rate, n
    return best, best_n


def build(name: str, output_dir: str) -> tuple[Any, dict[str, Any], str]:
    """The LightningModule as asrkit instantiates it, one batch of realistic shape, and that shape in words."""
    from hydra.utils import instantiate

    from asrkit.config import compose_config

    if name == "whisper-small-sized":
        overrides = ["experiment=demo", *(f"model.random_init.{key}={value}" for key, value in SMALL.items())]
    else:
        overrides = ["experiment=demo" if name == "demo whisper" else "experiment=demo_ctc"]
    cfg = compose_config(overrides, output_dir)
    torch.manual_seed(0)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    module.log = lambda *args, **kwargs: None  # training_step logs; there is no Trainer here
    if name == "whisper-small-sized":
        frames = 2 * module.model.config.max_source_positions
        vocab = len(module.tokenizer)
        batch = {
            "input_features": torch.randn(SMALL_BATCH, module.model.config.num_mel_bins, frames),
            "labels": torch.randint(0, vocab, (SMALL_BATCH, SMALL_LABEL_TOKENS)),
            "num_samples": SMALL_BATCH,
            "num_skipped": 0,
        }
        module.train()
        return module, batch, f"{SMALL_BATCH} x {frames / 100:.0f} s, {SMALL_LABEL_TOKENS} label tokens"
    datamodule = instantiate(cfg.data, collator=module.collator)
    datamodule.setup("fit")
    if getattr(module, "needs_vocabulary", False):  # CTC: as asrkit.train does, then configure_model's build
        module.build_vocabulary(datamodule.training_transcripts())
        torch.manual_seed(0)
        module._build_model(load_weights=True)
    module.train()
    loader = iter(datamodule.train_dataloader())
    if name == "demo whisper":
        batch = next(loader)
        rows, frames = batch["input_features"].shape[0], batch["input_features"].shape[-1]
        return module, batch, f"{rows} x {frames / 100:.0f} s, {batch['labels'].shape[1]} label tokens"
    # CTC batches come from length buckets: take the median padded length of the first few batches
    candidates = sorted((next(loader) for _ in range(7)), key=lambda b: b["input_values"].shape[1])
    batch = candidates[len(candidates) // 2]
    rows, samples = batch["input_values"].shape
    return module, batch, f"{rows} x {samples / 16000:.2f} s (padded), {batch['labels'].shape[1]} label tokens"


def train_step(module: Any, batch: dict[str, Any], optimizer: torch.optim.Optimizer, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(name: str, precisions: list[str], steps: int, warmup: int, output_dir: str) -> dict[str, Any]:
    module, batch, shape = build(name, output_dir)
    parameters = [p for p in module.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    counter = FlopCounterMode(display=False, custom_mapping=CPU_SDPA)
    with counter:  # the first fp32 step, a warm-up step: counted, not timed
        train_step(module, batch, optimizer, bf16=False)
    result = {
        "params": sum(p.numel() for p in module.model.parameters()),
        "shape": shape,
        "flops": counter.get_total_flops(),
        "seconds": {},
    }
    for precision in precisions:
        bf16 = precision == "bf16"
        for _ in range(warmup - (0 if bf16 else 1)):
            train_step(module, batch, optimizer, bf16)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            train_step(module, batch, optimizer, bf16)
            times.append(time.perf_counter() - start)
        result["seconds"][precision] = statistics.median(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per precision, demo models")
    parser.add_argument("--small-steps", type=int, default=3, help="timed steps per precision, whisper-small-sized")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per precision (the first is counted)")
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--matmul-repeats", type=int, default=3)
    args = parser.parse_args()

    from asrkit.hardware import cpu_has_native_bf16

    capabilities = torch.cpu.get_capabilities()
    bf16_flags = {key: value for key, value in capabilities.items() if "bf16" in key}
    threads = torch.get_num_threads()
    print(f"cpu: {capabilities.get('cpu_name')}, {threads} threads, {bf16_flags}, torch {torch.__version__}")
    precisions = ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]
    if "bf16" not in precisions:
        print("no native bf16 on this CPU (asrkit.hardware.cpu_has_native_bf16): fp32 only")
    peaks = {}
    for precision in precisions:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        peaks[precision], n = matmul_peak(dtype, args.matmul_sizes, args.matmul_repeats)
        repeats = args.matmul_repeats
        print(f"matmul peak {precision}: {peaks[precision]:.1f} GFLOP/s (best of {repeats} per size, at n={n})")

    results = {}
    with tempfile.TemporaryDirectory() as output_dir:
        for name in ("demo whisper", "demo ctc", "whisper-small-sized"):
            steps = args.small_steps if name == "whisper-small-sized" else args.steps
            results[name] = measure(name, precisions, steps, max(args.warmup, 1), output_dir)

    for precision in precisions:
        timed = f"{args.steps} steps, {args.small_steps} for whisper-small-sized"
        print(f"\n{precision} (AdamW; step time median of {timed})")
        print("| model | params | batch | GFLOP/step | step s | GFLOP/s | peak GFLOP/s | MFU % |")
        print("|---|---|---|---|---|---|---|---|")
        for name, result in results.items():
            seconds = result["seconds"][precision]
            achieved = result["flops"] / seconds / 1e9
            print(
                f"| {name} | {result['params'] / 1e6:.1f}M | {result['shape']} | {result['flops'] / 1e9:.1f} | "
                f"{seconds:.3f} | {achieved:.1f} | {peaks[precision]:.1f} | {100 * achieved / peaks[precision]:.1f} |"
            )
    small = results["whisper-small-sized"]
    print(f"RESULT mfu {small['flops'] / small['seconds']['fp32'] / 1e9 / peaks['fp32']:.3f}")


if __name__ == "__main__":
    main()
