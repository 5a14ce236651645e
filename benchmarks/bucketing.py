"""Padding and training speed of duration-bucketed batches against random batches, on the same data.

    uv run python benchmarks/bucketing.py [--batch-size 16] [--seed 0]

Data: the bundled demo speech (train split, 0.8-2.6 s per utterance), and a skewed set built from it,
where each example joins 1-8 consecutive demo utterances (geometric counts: mostly short, a long tail,
as real corpora are). Model: the demo wav2vec2 CTC network of ``experiment=demo_ctc``, on this CPU, fp32.

For each set it prints, per sampler, the mean padding fraction (padded samples / all samples) over one
epoch, and the training rate over that epoch (forward, backward and optimizer step, collation included;
audio decoded beforehand), in examples per wall second and per CPU second (the fairer one on a shared
machine); then the ratio bucketed / random of both, measured in this run on the same examples.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from torch.utils.data import BatchSampler, RandomSampler  # noqa: E402

from asrkit import memory  # noqa: E402
from asrkit.config import compose_config  # noqa: E402
from asrkit.data.padding import padding_fraction  # noqa: E402
from asrkit.data.sampler import DurationBucketBatchSampler  # noqa: E402


def _examples(datamodule: Any) -> tuple[list[dict[str, Any]], list[float]]:
    dataset = datamodule.datasets["train"]
    examples = [dataset[i] for i in range(len(dataset))]
    return examples, [len(example["audio"]) / 16_000 for example in examples]


def _skewed(examples: list[dict[str, Any]], seed: int) -> tuple[list[dict[str, Any]], list[float]]:
    """Consecutive demo utterances joined, 1-8 at a time with geometric probabilities (p = 0.45)."""
    rng = np.random.default_rng(seed)
    joined, start = [], 0
    while start < len(examples):
        count = int(min(8, rng.geometric(0.45)))
        parts = examples[start : start + count]
        joined.append(
            {
                "index": len(joined),
                "audio": np.concatenate([p["audio"] for p in parts]),
                "text": " ".join(p["text"] for p in parts),
                "reference": " ".join(p["reference"] for p in parts),
            }
        )
        start += count
    return joined, [len(example["audio"]) / 16_000 for example in joined]


def _batches(kind: str, durations: list[float], batch_size: int, seed: int) -> list[list[int]]:
    if kind == "bucketed":
        return list(DurationBucketBatchSampler(None, durations, batch_size, num_buckets=10, seed=seed))
    generator = torch.Generator().manual_seed(seed)
    return list(BatchSampler(RandomSampler(range(len(durations)), generator=generator), batch_size, False))


def _train_rate(
    module: Any, initial: dict[str, torch.Tensor], examples: list[dict[str, Any]], batches: list[list[int]]
) -> dict[str, float]:
    """Examples per wall second and per CPU second over ``batches``, after two untimed warm-up steps."""
    module.model.load_state_dict(initial)
    module.model.train()
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    samples = 0
    for step, indices in enumerate(batches[:2] + batches):
        if step == 2:
            wall, cpu = time.perf_counter(), time.process_time()
        batch = module.collator([examples[i] for i in indices])
        inputs = {key: batch[key] for key in ("input_values", "attention_mask", "labels") if key in batch}
        module.model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        samples += len(indices) if step >= 2 else 0
    return {"wall": samples / (time.perf_counter() - wall), "cpu": samples / (time.process_time() - cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    memory.reuse_freed_memory()
    cfg = compose_config(["experiment=demo_ctc", "model.tokenizer_dir=null"], "/tmp/asrkit-benchmark")
    torch.manual_seed(args.seed)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False)
    datamodule = instantiate(cfg.data, collator=module.collator)
    datamodule.setup("fit")  # builds the CTC vocabulary too
    module.configure_model()
    initial = {name: value.clone() for name, value in module.model.state_dict().items()}
    demo = _examples(datamodule)
    sets = {"demo speech": demo, "skewed (1-8 joined)": _skewed(demo[0], args.seed)}
    print(f"cpu: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, batch {args.batch_size}")
    print(f"{'data':<20} {'sampler':<9} {'padding':>8} {'ex/s wall':>10} {'ex/s cpu':>9}")
    for name, (examples, durations) in sets.items():
        rates = {}
        for kind in ("random", "bucketed"):
            batches = _batches(kind, durations, args.batch_size, args.seed)
            padding = statistics.mean(padding_fraction([durations[i] for i in batch]) for batch in batches)
            rates[kind] = _train_rate(module, initial, examples, batches)
            wall, cpu = rates[kind]["wall"], rates[kind]["cpu"]
            print(f"{name:<20} {kind:<9} {padding:>8.3f} {wall:>10.1f} {cpu:>9.1f}")
        wall, cpu = (rates["bucketed"][key] / rates["random"][key] for key in ("wall", "cpu"))
        print(f"{name:<20} bucketed / random training rate: {wall:.2f}x (wall), {cpu:.2f}x (cpu)")


if __name__ == "__main__":
    main()
