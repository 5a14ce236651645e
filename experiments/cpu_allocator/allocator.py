"""Step time, page faults and resident-memory growth of the demo models' training steps under CPU allocator settings.

    uv run python experiments/cpu_allocator/allocator.py [--steps 30] [--families ctc,whisper]
        [--variants default,reuse,thp,fixed32,hybrid32]

Each variant runs in a fresh process (allocator settings cannot be undone) on the first ``--steps`` training batches
of ``experiment=demo`` / ``demo_ctc`` (batch 16; CTC duration-bucketed, so its shapes vary), fp32, with the module's
own training step, gradient clipping and AdamW. Printed per variant: median wall and CPU seconds per step, minor
page faults per step and the growth of the resident-set high-water mark (VmHWM) over the steps.

    default   glibc defaults (mmap for blocks over a threshold that grows to 32 MiB as mmapped blocks are freed)
    reuse     asrkit.memory.reuse_freed_memory (hw.reuse_freed_memory: true): no mmap, no trimming
    thp       glibc defaults, torch's 2 MiB-aligned transparent-huge-page allocations (THP_MEM_ALLOC_ENABLE=1)
    fixedN    mmap only for blocks of N MiB and more (a fixed threshold), no trimming
    hybridN   fixedN and THP_MEM_ALLOC_ENABLE=1
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(key + ":"))


def measure(family: str, variant: str, steps: int, warmup: int) -> dict[str, float]:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if variant == "thp" or variant.startswith("hybrid"):
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"  # read by torch's CPU allocator at its first allocation
    import torch
    from hydra.utils import instantiate

    from asrkit import memory
    from asrkit.config import compose_config

    if variant == "reuse":
        memory.reuse_freed_memory()
    elif variant.startswith(("fixed", "hybrid")):
        threshold = int(variant.removeprefix("fixed").removeprefix("hybrid")) << 20
        libc = ctypes.CDLL("libc.so.6")
        for option, value in ((M_MMAP_THRESHOLD, threshold), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 64 << 20)):
            assert libc.mallopt(option, value)
    ctc = family == "ctc"
    overrides = ["experiment=demo_ctc", "model.tokenizer_dir=null"] if ctc else ["experiment=demo"]
    cfg = compose_config(overrides, "/tmp/asrkit-allocator")
    torch.manual_seed(0)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    datamodule = instantiate(cfg.data, collator=module.collator)
    if ctc:
        module.build_vocabulary(datamodule.training_transcripts())
        module.configure_model()
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    batches = [next(loader) for _ in range(steps)]
    model = module.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    base = _status_mib("VmRSS")
    walls, cpus = [], []
    for index, batch in enumerate(batches):
        if index == warmup:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        wall, cpu = time.perf_counter(), time.process_time()
        module.training_step(batch, index).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if index >= warmup:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return {
        "wall_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (steps - warmup),
        "hwm_growth_mib": _status_mib("VmHWM") - base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--families", default="ctc,whisper")
    parser.add_argument("--variants", default="default,reuse,thp,fixed32,hybrid32")
    parser.add_argument("--family", help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        import logging

        logging.disable(logging.WARNING)
        print(json.dumps(measure(args.family, args.variant, args.steps, args.warmup)))
        return
    print("| model | variant | wall s/step | cpu s/step | page faults/step | VmHWM growth MiB |")
    print("|---|---|---|---|---|---|")
    for family in args.families.split(","):
        for variant in args.variants.split(","):
            command = [sys.executable, __file__, "--family", family, "--variant", variant]
            command += [f"--steps={args.steps}", f"--warmup={args.warmup}"]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            print(
                f"| {family} | {variant} | {result['wall_s']:.3f} | {result['cpu_s']:.3f} | "
                f"{result['faults_per_step']:.0f} | {result['hwm_growth_mib']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
