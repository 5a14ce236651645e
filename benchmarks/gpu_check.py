"""The measuring half of benchmarks/gpu_check.sh: FLOPs per training sample and the matmul peak, then the table.

    python benchmarks/gpu_check.py flops <run dir>          # after `python -m asrkit ... hydra.run.dir=<run dir>`
    python benchmarks/gpu_check.py report <run dir> [...]   # the table and `RESULT gpu_check <samples/s>`

``flops`` composes the config the run trained with (its ``.hydra/overrides.yaml``), builds the module and
datamodule as asrkit does, and counts with torch.utils.flop_counter.FlopCounterMode (benchmarks/mfu.py's
counting, its CPU SDPA formulas included) the forward + backward FLOPs of real training batches of the run's
batch size, under the run's autocast; it also times large square matmuls on the same device in the run's
precision (bf16 for bf16-mixed) for the peak. Where the time goes: the training loader alone (samples/s it
delivers, consumed as fast as it comes, with the run's workers) and training steps alone (forward, backward,
clipping and the run's optimizer on one batch already on the device), and with ``--compile`` the same steps with
``model.compile=true`` (and the seconds its first step took). It writes all to ``<run dir>/gpu_check.json``. ``report``
reads each run's ``metrics.json`` (training summary), ``evaluate/metrics.json`` (asrkit.evaluate's real-time
factor) and ``gpu_check.json``, and computes MFU = FLOPs per sample x samples/s (steady state) / peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mfu import CPU_SDPA  # noqa: E402

GIB = 1024**3


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: _to(value, device) for key, value in batch.items()}
    return batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _empty(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes: list[int], repeats: int) -> tuple[float, int]:
    """Best FLOP/s of n x n @ n x n on ``device`` (synchronised), over the sizes and repeats, and its size."""
    best, best_n = 0.0, 0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.matmul(a, b)  # warm-up: kernel selection, cuBLAS workspace
        _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(4):
                torch.matmul(a, b)
            _sync(device)
            rate = 4 * 2 * n**3 / (time.perf_counter() - start)
            if rate > best:
                best, best_n = rate, n
        del a, b
    return best, best_n


def loader_rate(datamodule: Any, batches: int) -> float:
    """Samples/s the training loader alone delivers (decoding, features, collation in its workers), consumed as
    fast as it comes: ``batches`` batches after a first one (workers started), epochs restarted as training does."""
    loader = datamodule.train_dataloader()
    rows, start, counted = 0, None, 0
    while counted < batches:
        for batch in loader:
            if start is None:
                start = time.perf_counter()  # the first batch: workers are up
                continue
            rows += int(batch["labels"].shape[0])
            counted += 1
            if counted == batches:
                break
    return rows / (time.perf_counter() - start)


def step_rate(module: Any, cfg: Any, batch: Any, device: torch.device, bf16: bool, steps: int) -> float:
    """Samples/s of training steps alone on one batch already on ``device``: forward under the run's autocast,
    backward, gradient clipping as configured, the run's optimizer (asrkit.optim: fused AdamW where supported);
    3 untimed steps first, synchronised."""
    from asrkit import optim

    optimizer = optim.build_optimizer(module.model, cfg.optimizer)
    parameters = [p for p in module.model.parameters() if p.requires_grad]
    clip = cfg.trainer.get("gradient_clip_val")
    rows = int(batch["labels"].shape[0])
    start = 0.0
    for step in range(3 + steps):
        if step == 3:
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.training_step(batch, step)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(parameters, float(clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return steps * rows / (time.perf_counter() - start)


def flops(
    run: Path, batches: int, sizes: list[int], repeats: int, loader_batches: int, steps: int, compiled: bool
) -> None:
    from asrkit.config import compose_config
    from asrkit.train import steppable

    recorded = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    overrides = [override for override in recorded if not override.startswith("hydra.")]
    cfg = compose_config(overrides, run / "gpu_check_tmp")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = str(cfg.hw.precision).startswith("bf16")
    torch.manual_seed(0)
    module, datamodule = steppable(cfg)
    module.to(device).train()
    loader = iter(datamodule.train_dataloader())
    total, rows = 0, 0
    for _ in range(batches):
        batch = _to(next(loader), device)
        counter = FlopCounterMode(display=False, custom_mapping=CPU_SDPA)
        with counter:  # one context: entering a FlopCounterMode again clears its counts
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = module.training_step(batch, 0)
            loss.backward()
        module.zero_grad(set_to_none=True)
        total += counter.get_total_flops()
        rows += int(batch["labels"].shape[0])
    del loader
    # where the time goes: the loader alone, then the steps alone on the last batch (both at the run's batch size)
    loading = loader_rate(datamodule, loader_batches)
    stepping = step_rate(module, cfg, batch, device, bf16, steps)
    del module
    compiled_rate, compile_seconds = None, None
    if compiled:  # the same steps with model.compile=true (asrkit's torch.compile of the network, on the first step)
        _empty(device)
        torch.manual_seed(0)
        module, _ = steppable(compose_config([*overrides, "model.compile=true"], run / "gpu_check_tmp"))
        module.to(device).train()
        start = time.perf_counter()
        step_rate(module, cfg, batch, device, bf16, 1)  # compiles
        compile_seconds = time.perf_counter() - start
        compiled_rate = step_rate(module, cfg, batch, device, bf16, steps)
        del module
    del batch
    _empty(device)
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak, n = matmul_peak(device, dtype, sizes, repeats)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "flops_per_sample": total / rows,
        "flop_batches": batches,
        "flop_samples": rows,
        "loader_samples_per_second": loading,
        "loader_batches": loader_batches,
        "step_samples_per_second": stepping,
        "steps_timed": steps,
        "compiled_step_samples_per_second": compiled_rate,
        "compile_seconds": compile_seconds,
        "peak_flops": peak,
        "peak_dtype": str(dtype).removeprefix("torch."),
        "peak_n": n,
    }
    (run / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def _cell(value: float | None, fmt: str) -> str:
    return "not measured" if value is None else format(value, fmt)


def report(runs: list[Path]) -> None:
    rows, result = [], None
    for run in runs:
        summary = json.loads((run / "metrics.json").read_text())["summary"]
        measured = json.loads((run / "gpu_check.json").read_text())
        evaluated = json.loads((run / "evaluate" / "metrics.json").read_text())
        speed = summary["samples_per_second"]
        mfu = None if speed is None else measured["flops_per_sample"] * speed / measured["peak_flops"]
        memory = summary["peak_memory"]
        peak = f"{measured['peak_flops'] / 1e12:.1f} {measured['peak_dtype']}"
        loading, stepping = measured.get("loader_samples_per_second"), measured.get("step_samples_per_second")
        rows.append(
            f"| {run.name} | {summary['global_step']} | {_cell(speed, '.2f')} | "
            f"{_cell(loading, '.1f')} | {_cell(stepping, '.1f')} | "
            f"{_cell(measured.get('compiled_step_samples_per_second'), '.1f')} | "
            f"{measured['flops_per_sample'] / 1e9:.1f} | {peak} | "
            f"{_cell(None if mfu is None else 100 * mfu, '.1f')} | {_cell(memory['device_gib'], '.2f')} | "
            f"{memory['rss_gib']:.2f} | {summary['wall_seconds']:.0f} | {evaluated['real_time_factor']:.4f} |"
        )
        if result is None:
            result = speed
    print(f"device: {measured['device']}")
    print(
        "| run | steps | samples/s | loader alone samples/s | steps alone samples/s | compiled steps samples/s | "
        "GFLOP/sample (fwd+bwd) | "
        "matmul peak TFLOP/s | MFU % | peak device GiB | peak RSS GiB | train wall s | eval RTF |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"RESULT gpu_check {_cell(result, '.2f')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    count = sub.add_parser("flops", help="FLOPs per sample of a run's training batches, and the matmul peak")
    count.add_argument("run", type=Path)
    count.add_argument("--batches", type=int, default=3, help="training batches counted")
    count.add_argument("--matmul-sizes", type=int, nargs="+", default=[4096, 8192])
    count.add_argument("--matmul-repeats", type=int, default=5)
    count.add_argument("--loader-batches", type=int, default=24, help="training batches read by the loader alone")
    count.add_argument("--steps", type=int, default=10, help="timed training steps on one batch alone")
    count.add_argument("--compile", action="store_true", help="also time the steps alone with model.compile=true")
    table = sub.add_parser("report", help="the table of the runs (the first one's samples/s is the RESULT)")
    table.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "flops":
        sizes, repeats = args.matmul_sizes, args.matmul_repeats
        flops(args.run, args.batches, sizes, repeats, args.loader_batches, args.steps, args.compile)
    else:
        report(args.runs)


if __name__ == "__main__":
    main()
