"""Training step rate of the demo Whisper on this CPU: what bf16 autocast and malloc reuse each buy.

    uv run python benchmarks/cpu_step.py [--steps 14] [--warmup 4]

Runs each variant in a fresh process (allocator settings cannot be undone in-process) on the same
batches of the bundled demo speech and prints seconds per optimizer step, page faults per step and
the step-rate ratio against the baseline measured in the same run:

    baseline   fp32, glibc malloc defaults
    bf16       bf16 autocast                        (hw.precision: auto on CPUs with AVX512-BF16/AMX)
    bf16+reuse bf16 autocast, freed memory reused   (hw.reuse_freed_memory: true)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = {"baseline": (False, False), "bf16": (True, False), "bf16+reuse": (True, True)}


def measure(variant: str, steps: int, warmup: int) -> dict[str, float]:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch
    from hydra.utils import instantiate

    from asrkit import memory
    from asrkit.config import compose_config

    bf16, reuse = VARIANTS[variant]
    if reuse:
        memory.reuse_freed_memory()
    cfg = compose_config(["experiment=demo"], "/tmp/asrkit-benchmark")
    torch.manual_seed(0)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    datamodule = instantiate(cfg.data, collator=module.collator)
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    batches = [next(loader) for _ in range(steps)]
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    for index, batch in enumerate(batches):
        if index == warmup:
            start, faults = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.model(input_features=batch["input_features"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    measured = steps - warmup
    return {
        "seconds_per_step": (time.perf_counter() - start) / measured,
        "page_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.steps, args.warmup)))
        return
    import torch

    bf16 = {k: v for k, v in torch.cpu.get_capabilities().items() if "bf16" in k}
    print(f"cpu: {torch.cpu.get_capabilities().get('cpu_name')}, {os.cpu_count()} cores, {bf16}")
    results = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant, f"--steps={args.steps}", f"--warmup={args.warmup}"]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
    base = results["baseline"]["seconds_per_step"]
    for variant, result in results.items():
        print(
            f"{variant:>11}: {result['seconds_per_step']:.3f} s/step, "
            f"{result['page_faults_per_step']:>9.0f} page faults/step, "
            f"step rate {base / result['seconds_per_step']:.2f}x baseline"
        )


if __name__ == "__main__":
    main()
