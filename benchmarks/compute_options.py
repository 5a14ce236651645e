"""Compute options of training against the defaults, on this CPU: what each one buys, measured in one run.

    uv run python benchmarks/compute_options.py [--parts options,shapes,window30] [--compile] [--steps 8]

``options``: the demo Whisper (``experiment=demo``, 3 s window; ``model.max_label_length=64``, above every demo
label, so that static shapes pad labels to 64 tokens, not 448) and the demo wav2vec2 CTC (``experiment=demo_ctc``),
each variant against the baseline (SDPA attention, no checkpointing, torch AdamW with ``fused: null``, i.e.
torch's own choice, no compile, batches padded to their longest), every variant built from the same initial weights
and stepped on the same examples, interleaved round-robin (one step of each variant per round, ``--warmup``
untimed rounds first). Per variant: median and best seconds per training step (forward, backward, optimizer
step; batches collated beforehand), in wall and CPU time (the fairer one on a shared machine), the optimizer
step alone, and the activations saved for backward by one forward pass (MiB; parameters excluded): the memory
gradient checkpointing trades for time. Variants:

    fused        optimizer.factory.fused=true (torch's fused CPU/CUDA AdamW kernel)
    foreach      optimizer.factory.foreach=true (multi-tensor; on a CPU, fused: null means the per-tensor loop)
    eager        model.attn_implementation=eager
    checkpoint   model.gradient_checkpointing=true
    static       data.static_shapes=true (the same examples, padded to their bucket's edge and the label length)
    compile      model.compile=true (with --compile: inductor compiles C++ kernels, minutes on 2 cores; its
                 first steps, compile included, are reported apart, from a fresh inductor cache)

``shapes``: distinct batch shapes in one training epoch of each demo, with and without ``data.static_shapes``.

``window30``: the real 30 s window. A whisper-tiny-sized Whisper (d_model 384, 4+4 layers, 6 heads, ffn 1536,
1500 encoder positions, 80 mels) initialised at random, trained on the demo speech with and without
``data.bucketing`` (10 buckets), interleaved: its features are always 3000 frames, so bucketing shortens only
the labels. Prints both step times and the ratio.

Ends with ``RESULT compute_options <ratio>``: the 30 s-window Whisper's training step rate with duration
bucketing over without (what bucketing buys a real Whisper checkpoint's training: ~1.0 means nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="asrkit-inductor-"))  # compile cold

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from asrkit import optim  # noqa: E402
from asrkit.config import compose_config  # noqa: E402
from asrkit.data.static_shapes import batch_shapes  # noqa: E402
from asrkit.train import steppable  # noqa: E402

FAMILIES = {
    "whisper demo": ["experiment=demo", "model.max_label_length=64"],
    "ctc demo": ["experiment=demo_ctc", "model.tokenizer_dir=null"],
}
TORCH_ADAMW = "optimizer.factory.fused=null"  # the baseline optimizer: torch's choice (a per-tensor loop on a CPU)
VARIANTS = {  # name: (model/optimizer overrides, static-shape batches)
    "baseline": ([TORCH_ADAMW], False),
    "fused": (["optimizer.factory.fused=true"], False),
    "foreach": ([TORCH_ADAMW, "+optimizer.factory.foreach=true"], False),
    "eager": ([TORCH_ADAMW, "model.attn_implementation=eager"], False),
    "checkpoint": ([TORCH_ADAMW, "model.gradient_checkpointing=true"], False),
    "static": ([TORCH_ADAMW], True),
    "compile": ([TORCH_ADAMW, "model.compile=true"], False),
}
WHISPER_TINY = [
    "model.random_init.d_model=384",
    "model.random_init.encoder_layers=4",
    "model.random_init.decoder_layers=4",
    "model.random_init.encoder_attention_heads=6",
    "model.random_init.decoder_attention_heads=6",
    "model.random_init.encoder_ffn_dim=1536",
    "model.random_init.decoder_ffn_dim=1536",
    "model.random_init.max_source_positions=1500",
]
MiB = 2**20


def _build(overrides: list[str]) -> tuple[Any, Any, Any]:
    """Module, datamodule (set up for fitting, CTC vocabulary built) and the composed config."""
    cfg = compose_config(overrides, tempfile.mkdtemp(prefix="asrkit-benchmark-"))
    torch.manual_seed(0)
    module, datamodule = steppable(cfg)
    module.train()
    return module, datamodule, cfg


class Runner:
    """One variant: its module and optimizer, stepped one batch at a time, timings kept."""

    def __init__(self, overrides: list[str], initial: dict[str, torch.Tensor] | None) -> None:
        self.module, self.datamodule, cfg = _build(overrides)
        if initial is not None:
            self.module.model.load_state_dict(initial)
        self.optimizer = optim.build_optimizer(self.module.model, OmegaConf.to_container(cfg.optimizer, resolve=True))
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.optimizer_wall: list[float] = []
        self.warmup_wall = self.warmup_cpu = 0.0

    def step(self, batch: dict[str, Any], timed: bool) -> None:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        self.module.training_step(batch, 0).backward()
        before_optimizer = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        if timed:
            self.wall.append(end - wall)
            self.cpu.append(_cpu_seconds() - cpu)
            self.optimizer_wall.append(end - before_optimizer)
        else:
            self.warmup_wall += end - wall
            self.warmup_cpu += _cpu_seconds() - cpu

    def saved_activations(self, batch: dict[str, Any]) -> float:
        """MiB of tensors one forward pass saves for backward (parameters excluded): storage counted once."""
        parameters = {p.untyped_storage().data_ptr() for p in self.module.parameters()}
        storages: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in parameters:
                storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = self.module.training_step(batch, 0)
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return sum(storages.values()) / MiB


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (inductor's C++ compilers)."""
    children = os.times()
    return time.process_time() + children.children_user + children.children_system


def _batches(datamodule: Any, static: Any, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``count`` training batches of whole buckets (the static loader's), collated both ways: padded to the
    longest (``datamodule``'s collator) and to the static shapes."""
    dataset = datamodule.splits.datasets["train"]
    padded, fixed = [], []
    for batch in static.train_dataloader():
        fixed.append(batch)
        padded.append(datamodule.collator([dataset[i] for i in batch["indices"]]))
        if len(fixed) == count:
            break
    return padded, fixed


def _shape_text(batch: dict[str, Any]) -> str:
    return " ".join(f"{k}{list(v.shape)}" for k, v in batch.items() if isinstance(v, torch.Tensor) and v.ndim > 1)


def options_part(args: argparse.Namespace) -> None:
    variants = [name for name in VARIANTS if name != "compile" or args.compile]
    for family, overrides in FAMILIES.items():
        base = Runner(overrides, None)
        initial = {name: value.clone() for name, value in base.module.model.state_dict().items()}
        runners = {"baseline": base}
        for name in variants[1:]:
            changes, _ = VARIANTS[name]
            runners[name] = Runner(overrides + changes, initial)
        static = Runner(overrides + ["data.static_shapes=true"], initial).datamodule
        padded, fixed = _batches(base.datamodule, static, args.warmup + args.steps)
        size = sum(p.numel() for p in base.module.model.parameters()) / 1e6
        print(
            f"\n{family}: {size:.1f}M parameters, batch {len(padded[0]['indices'])}; e.g. padded "
            f"{_shape_text(padded[0])}, static {_shape_text(fixed[0])}"
        )
        memory = {
            name: runner.saved_activations((fixed if VARIANTS[name][1] else padded)[0])
            for name, runner in runners.items()
            if name != "compile"
        }
        failed = {}
        for index in range(args.warmup + args.steps):
            for name, runner in list(runners.items()):
                try:
                    runner.step((fixed if VARIANTS[name][1] else padded)[index], timed=index >= args.warmup)
                except Exception as error:  # a compiler's failure is a result: reported, the others go on
                    if name == "baseline":
                        raise
                    failed[name] = f"step {index}: {type(error).__name__}: {str(error).splitlines()[0]}"
                    del runners[name]
        _report(runners, memory, args.warmup)
        for name, reason in failed.items():
            print(f"{name:<11} FAILED at {reason}")


def _report(runners: dict[str, Runner], memory: dict[str, float], warmup: int) -> None:
    base = runners["baseline"]
    base_wall, base_cpu = statistics.median(base.wall), statistics.median(base.cpu)
    print(
        f"{'variant':<11} {'median s':>9} {'best s':>7} {'cpu s':>6} {'optim s':>8} {'rate x':>7} {'cpu x':>6} "
        f"{'saved MiB':>10} {'first ' + str(warmup) + ' steps':>14}"
    )
    for name, runner in runners.items():
        wall, cpu = statistics.median(runner.wall), statistics.median(runner.cpu)
        saved = f"{memory[name]:.1f}" if name in memory else "-"
        print(
            f"{name:<11} {wall:>9.3f} {min(runner.wall):>7.3f} {cpu:>6.3f} "
            f"{statistics.median(runner.optimizer_wall):>8.4f} {base_wall / wall:>7.2f} {base_cpu / cpu:>6.2f} "
            f"{saved:>10} {runner.warmup_wall:>8.1f} wall, {runner.warmup_cpu:.1f} cpu"
        )


def shapes_part(args: argparse.Namespace) -> None:
    print("\ndistinct training batch shapes in one epoch")
    for family, overrides in FAMILIES.items():
        counts = {}
        for static in (False, True):
            _, datamodule, cfg = _build(overrides + [f"data.static_shapes={str(static).lower()}"])
            loader = datamodule.train_dataloader()
            counts[static] = (len(batch_shapes(loader)), len(loader))
        buckets = cfg.data.bucketing.num_buckets if cfg.data.bucketing.enabled else 1
        print(
            f"{family:<13} {buckets:>2} bucket(s): padded to longest {counts[False][0]:>3} shapes in "
            f"{counts[False][1]} batches; static {counts[True][0]:>2} shapes in {counts[True][1]} batches"
        )


def window30_part(args: argparse.Namespace) -> float:
    common = [
        "experiment=demo",
        *WHISPER_TINY,
        f"data.per_device_batch_size={args.window_batch}",
        f"data.global_batch_size={args.window_batch}",
        "data.bucketing.num_buckets=10",
    ]
    runners = {"random": Runner(common, None), "bucketed": Runner(common + ["data.bucketing.enabled=true"], None)}
    runners["bucketed"].module.model.load_state_dict(runners["random"].module.model.state_dict())
    batches = {}
    for name, runner in runners.items():
        loader = iter(runner.datamodule.train_dataloader())
        batches[name] = [next(loader) for _ in range(args.window_warmup + args.window_steps)]
    labels = {name: statistics.mean(b["labels"].shape[1] for b in batches[name]) for name in runners}
    first = batches["random"][0]
    size = sum(p.numel() for p in runners["random"].module.model.parameters()) / 1e6
    features = list(first["input_features"].shape)
    print(f"\nwhisper-tiny-sized, 30 s window: {size:.1f}M parameters, input_features {features} in both")
    for index in range(args.window_warmup + args.window_steps):
        for name, runner in runners.items():
            runner.step(batches[name][index], timed=index >= args.window_warmup)
    rates = {}
    for name, runner in runners.items():
        wall, cpu = statistics.median(runner.wall), statistics.median(runner.cpu)
        rates[name] = (1 / wall, 1 / cpu)
        print(
            f"{name:<9} labels padded to {labels[name]:5.1f} tokens (mean) {wall:7.2f} s/step median, "
            f"{min(runner.wall):6.2f} best, {cpu:6.2f} cpu s"
        )
    wall_ratio, cpu_ratio = (rates["bucketed"][i] / rates["random"][i] for i in (0, 1))
    print(f"bucketed / random step rate: {wall_ratio:.3f}x (wall), {cpu_ratio:.3f}x (cpu)")
    return cpu_ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="options,shapes,window30", help="comma-separated: options,shapes,window30")
    parser.add_argument("--compile", action="store_true", help="add model.compile=true to the options (slow)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant (options)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps per variant (options)")
    parser.add_argument("--window-batch", type=int, default=4)
    parser.add_argument("--window-steps", type=int, default=4)
    parser.add_argument("--window-warmup", type=int, default=1)
    args = parser.parse_args()
    parts = args.parts.split(",")
    unknown = set(parts) - {"options", "shapes", "window30"}
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}")
    load = os.getloadavg()
    print(
        f"cpu: {torch.cpu.get_capabilities().get('cpu_name')}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}, load average {load[0]:.2f} {load[1]:.2f}"
    )
    start = time.perf_counter()
    ratio = float("nan")
    if "options" in parts:
        options_part(args)
    if "shapes" in parts:
        shapes_part(args)
    if "window30" in parts:
        ratio = window30_part(args)
    load = os.getloadavg()
    print(f"\n{time.perf_counter() - start:.0f} s; load average at the end {load[0]:.2f} {load[1]:.2f}")
    print(f"RESULT compute_options {ratio:.3f}")


if __name__ == "__main__":
    main()
