"""Memory and time of a training step with full fine-tuning against LoRA (peft=lora), measured in the same run.

    uv run python benchmarks/peft_memory.py [--steps 4] [--batch 2]

Builds the whisper-base-sized Whisper of ``optimizer_memory.py`` at random (d_model 512, 6+6 layers, 8 heads,
ffn 2048, 80 mels, vocab 51,865; nothing is downloaded), once trained whole and once with conf/peft/lora.yaml's
adapters (r 32, alpha 64, on the q_proj, k_proj, v_proj and out_proj of every attention block: encoder self-,
decoder self- and cross-attention; asrkit.adapters.wrap). Both take ``--steps`` AdamW steps (asrkit.optim's
parameter groups from conf/optimizer/adamw.yaml) on the same random 30 s batch of ``--batch`` utterances with
32-token labels.

Each variant runs in a fresh process, so that neither inherits the other's freed memory. Its peak memory is the
growth of the resident set over the steps: the kernel's high-water mark (VmHWM) is reset just before the first
step (``echo 5 > /proc/self/clear_refs``) and read after the last, minus the resident set before the first step,
which already holds the model, its weights and the batch. That growth is what the steps add: gradients, optimizer
state, activations and whatever the allocator keeps. Optimizer state is counted exactly (the bytes of
``exp_avg``/``exp_avg_sq`` after the steps); the step time is the median of the steps after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

VARIANTS = ("full", "lora")  # the first is the baseline


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def measure(variant: str, steps: int, batch_size: int) -> dict[str, float]:
    import torch
    from optimizer_memory import state_bytes, whisper_base_sized

    from asrkit import adapters, optim
    from asrkit.config import compose_config

    cfg = compose_config([f"peft={'none' if variant == 'full' else 'lora'}"], "/tmp/asrkit-benchmark")
    torch.manual_seed(0)
    model = adapters.wrap(whisper_base_sized(), adapters.AdapterOptions.parse(cfg.peft))
    model.train()
    optimizer = optim.build_optimizer(model, cfg.optimizer)
    batch = {"input_features": torch.randn(batch_size, 80, 3000), "labels": torch.randint(0, 51865, (batch_size, 32))}
    rss_before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak resident set to the current one
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    peak = _status_kib("VmHWM")
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "optimizer_state_bytes": state_bytes(optimizer)[0],
        "peak_growth_bytes": (peak - rss_before) * 1024,
        "rss_before_bytes": rss_before * 1024,
        "seconds_per_step": statistics.median(seconds[1:] or seconds),
        "first_step_seconds": seconds[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.steps, args.batch)))
        return
    print(f"whisper-base-sized random-init Whisper, {args.steps} AdamW steps on a batch of {args.batch} x 30 s, cpu")
    results = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant, f"--steps={args.steps}", f"--batch={args.batch}"]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
    mib = 2**20
    print("| variant | trainable parameters | optimizer state MiB | peak step memory growth MiB | s/step |")
    print("|---|---|---|---|---|")
    for variant, r in results.items():
        share = f"{r['trainable'] / 1e6:.2f}M of {r['parameters'] / 1e6:.1f}M ({r['trainable'] / r['parameters']:.2%})"
        print(
            f"| {variant} | {share} | {r['optimizer_state_bytes'] / mib:.1f} | {r['peak_growth_bytes'] / mib:.0f} | "
            f"{r['seconds_per_step']:.2f} |"
        )
    full, lora = results["full"], results["lora"]
    ratios = {
        "trainable parameters": full["trainable"] / lora["trainable"],
        "optimizer state": full["optimizer_state_bytes"] / lora["optimizer_state_bytes"],
        "peak step memory growth": full["peak_growth_bytes"] / lora["peak_growth_bytes"],
        "step time": full["seconds_per_step"] / lora["seconds_per_step"],
    }
    print("full / LoRA: " + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()))
    print(f"RESULT peft_memory {ratios['peak step memory growth']:.2f}")


if __name__ == "__main__":
    main()
