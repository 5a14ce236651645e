"""The examples of the split that plays a role in a run, read from the data options (not yet filtered)."""

from __future__ import annotations

from collections.abc import Callable

import datasets

from asrkit.data.mixing import load_mixture
from asrkit.data.options import DataOptions
from asrkit.data.sources import Split, load_split


def read_role(options: DataOptions, role: str, prepare_text: Callable[[str], str], streaming: bool = False) -> Split:
    """The ``role`` split: one source's, a mixture of sources' (data=mix), or for training the concatenated
    ``data.configs`` x ``data.splits`` parts. Map-style data is cut to ``data.max_*_samples`` here; a stream is
    cut where it is sharded (:func:`asrkit.data.streaming.shard_stream`)."""
    source = options.source
    kwargs = source.load_kwargs() | {"streaming": streaming}
    if role == "train" and source.train_parts:
        parts = [load_split(split=split, **(kwargs | {"name": config})) for config, split in source.train_parts]
        dataset = datasets.concatenate_datasets(parts)
    elif source.sources:
        defaults = source.load_kwargs() | {
            f"{r}_split": getattr(source, f"{r}_split") for r in ("train", "validation", "test")
        }
        dataset = load_mixture(
            source.sources,
            role,
            defaults,
            streaming=streaming,
            prepare_text=prepare_text,
            strategy=source.mixing,
            stopping_strategy=source.stopping_strategy,
            seed=options.stream.shuffle_seed,
        )
    else:
        dataset = load_split(split=source.split_name(role), **kwargs)
    limit = source.max_samples(role)
    if streaming or limit is None:
        return dataset
    return dataset.select(range(min(limit, len(dataset))))
