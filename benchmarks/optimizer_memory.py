"""Optimizer-state memory of each conf/optimizer option, as a ratio to AdamW measured in the same run.

    uv run python benchmarks/optimizer_memory.py [--device cpu|cuda]

Builds a whisper-base-sized Whisper at random (WhisperConfig: d_model 512, 6+6 layers, 8 heads, ffn
2048, vocab 51,865; nothing is downloaded), gives each optimizer the parameter groups asrkit.optim
builds from the real config (``optimizer=<name>``), takes one real step on a random 30 s batch, and
counts the bytes of every tensor in ``optimizer.state``. bitsandbytes keeps the moments of tensors
smaller than ``min_8bit_size`` elements (biases, norms) in 32 bits; the last column shows how many
parameters that is.
"""

from __future__ import annotations

import argparse
import copy
import os
from collections import Counter

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from transformers import WhisperConfig, WhisperForConditionalGeneration  # noqa: E402

from asrkit import optim  # noqa: E402
from asrkit.config import compose_config  # noqa: E402

OPTIMIZERS = ("adamw", "adam8bit", "adafactor")  # the first is the baseline


def whisper_base_sized() -> WhisperForConditionalGeneration:
    config = WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
    )
    return WhisperForConditionalGeneration(config)


def state_bytes(optimizer: torch.optim.Optimizer) -> tuple[int, Counter[str]]:
    """Total bytes of the tensors in ``optimizer.state``, and bytes by dtype."""
    by_dtype: Counter[str] = Counter()
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                by_dtype[str(value.dtype).removeprefix("torch.")] += value.numel() * value.element_size()
    return sum(by_dtype.values()), by_dtype


def measure(name: str, model: torch.nn.Module, batch: dict[str, torch.Tensor], workdir: str) -> dict:
    cfg = compose_config([f"optimizer={name}"], workdir).optimizer
    optimizer = optim.build_optimizer(model, cfg)
    model(**batch).loss.backward()
    optimizer.step()
    total, by_dtype = state_bytes(optimizer)
    small = 0
    if "min_8bit_size" in cfg.factory:
        small = sum(
            p.numel() for g in optimizer.param_groups for p in g["params"] if p.numel() < cfg.factory.min_8bit_size
        )
    return {"bytes": total, "by_dtype": by_dtype, "small": small, "target": cfg.factory._target_}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    torch.manual_seed(0)
    base = whisper_base_sized()
    parameters = sum(p.numel() for p in base.parameters() if p.requires_grad)
    batch = {
        "input_features": torch.randn(1, 80, 3000, device=args.device),
        "labels": torch.randint(0, 51865, (1, 32), device=args.device),
    }
    print(f"whisper-base-sized random-init Whisper: {parameters / 1e6:.1f}M trainable parameters, {args.device}")
    results = {}
    for name in OPTIMIZERS:
        model = copy.deepcopy(base).to(args.device)
        results[name] = measure(name, model, batch, "/tmp/asrkit-benchmark")
        del model

    baseline = results[OPTIMIZERS[0]]["bytes"]
    print()
    columns = ["optimizer", "class", "state MiB", "bytes/parameter", "ratio to adamw", "state by dtype (MiB)"]
    print("| " + " | ".join([*columns, "params kept 32-bit"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        dtypes = ", ".join(f"{d} {b / 2**20:.1f}" for d, b in r["by_dtype"].most_common())
        small = f"{r['small'] / 1e3:.0f}k ({r['small'] / parameters:.2%})" if r["small"] else "-"
        print(
            f"| {name} | {r['target']} | {r['bytes'] / 2**20:.1f} | {r['bytes'] / parameters:.3f} | "
            f"{r['bytes'] / baseline:.3f} | {dtypes} | {small} |"
        )


if __name__ == "__main__":
    main()
