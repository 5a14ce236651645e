"""Greedy CTC decoding against beam search without and with a 3-gram of the training transcripts, on the CTC demo.

    uv run python benchmarks/decoding.py --checkpoint outputs/<run>/export [--width 100] [--order 3] [--no-tune]

The model's logits of every utterance of the demo's validation and test splits are computed once (read by the
data config's datamodule and cut to each utterance's frames, as :mod:`asrkit.evaluate` does); then each decoder of
:mod:`asrkit.ctc_decoding` decodes them: greedy, beam search without an LM (``decoder=beam lm.path=null``) and
beam search with a KenLM 3-gram that ``python -m asrkit.lm data=demo order=3`` builds here from the training
transcripts (``lm.path=<it>/lm.bin``). The LM's weights ``alpha`` and ``beta`` are chosen on the validation split
(a small grid; ``--no-tune``: pyctcdecode's 0.5 and 1.5), then every decoder is scored on the test split with
:func:`asrkit.metrics.error_rates` as evaluation scores (normalised WER and CER, the unknown token as one wrong
character). Speed: utterances per second of the decoder alone on the cached logits, and end to end (the model's
forward pass, the same for all, plus the decoder), both on this CPU.

``RESULT decoding`` is the share of greedy decoding's test word errors that beam search with the 3-gram removes,
1 - WER(beam + LM) / WER(greedy): 0 = no better, 1 = every error gone (a ratio of the WERs would be infinite
at zero errors).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from asrkit import metrics  # noqa: E402
from asrkit.config import compose_config, register_resolvers  # noqa: E402
from asrkit.ctc_decoding import CTCDecoder, DecodingOptions  # noqa: E402
from asrkit.lm import build_language_model  # noqa: E402
from asrkit.models.ctc import utterance_logits  # noqa: E402
from asrkit.recognizer import load_recognizer  # noqa: E402

ALPHAS, BETAS = (0.25, 0.5, 1.0, 2.0), (0.0, 1.5, 3.0)


def _logits(recognizer: Any, cfg: Any) -> tuple[list[torch.Tensor], list[str], float]:
    """Every utterance's logits (trimmed), its reference and the seconds the model's forward passes took."""
    datamodule = instantiate(cfg.data, collator=recognizer.collator(), test_split=cfg.split, extra_validation=None)
    datamodule.setup("test")
    logits, references, seconds = [], [], 0.0
    for batch in datamodule.test_dataloader():
        inputs = recognizer._to_device(batch["inputs"])
        start = time.perf_counter()
        rows = utterance_logits(
            recognizer.model, inputs["input_values"], torch.tensor(batch["lengths"]), inputs.get("attention_mask")
        )
        seconds += time.perf_counter() - start
        logits += [row.float().cpu() for row in rows]
        references += batch["references"]
    return logits, references, seconds


def _score(decoder: CTCDecoder, logits: list[torch.Tensor], references: list[str], unknown: str) -> dict[str, float]:
    start = time.perf_counter()
    hypotheses = decoder(logits)
    seconds = time.perf_counter() - start
    return metrics.error_rates(references, hypotheses, "basic", unknown) | {"seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="an asrkit CTC export of the demo (data=demo)")
    parser.add_argument("--width", type=int, default=100, help="beams (beam.width)")
    parser.add_argument("--order", type=int, default=3, help="n of the n-gram")
    parser.add_argument("--no-tune", action="store_true", help="alpha 0.5, beta 1.5 instead of a validation grid")
    args = parser.parse_args()
    register_resolvers()
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="asrkit-decoding-"))

    def config(name: str, *overrides: str) -> Any:
        return compose_config(["data=demo", *overrides], work / "cfg", config_name=name)

    summary = build_language_model(config("lm", f"order={args.order}", f"output={work / 'lm'}"), work / "lm")
    print(
        f"{args.order}-gram of the demo's {summary['sentences']} training transcripts ({summary['words']} words, "
        f"{summary['vocabulary']} distinct): " + ", ".join(f"{n} {k}" for k, n in summary["ngrams"].items())
    )
    split_logits = {}
    for split in ("validation", "test"):
        cfg = config("evaluate", f"checkpoint={args.checkpoint}", f"split={split}", "device=cpu")
        recognizer = load_recognizer(cfg, work / "export", "float32")
        split_logits[split] = _logits(recognizer, cfg)
    tokenizer, vocab_size = recognizer.processor.tokenizer, recognizer.model.config.vocab_size
    unknown = tokenizer.unk_token

    def decoder(*overrides: str) -> CTCDecoder:
        cfg = config("evaluate", "checkpoint=unused", *overrides, f"beam.width={args.width}")
        return CTCDecoder(tokenizer, vocab_size, DecodingOptions.from_config(cfg))

    lm = f"lm.path={work / 'lm' / 'lm.bin'}"
    alpha, beta = 0.5, 1.5
    if not args.no_tune:
        results = {}
        for a, b in itertools.product(ALPHAS, BETAS):
            scores = _score(
                decoder("decoder=beam", lm, f"lm.alpha={a}", f"lm.beta={b}"), *split_logits["validation"][:2], unknown
            )
            results[a, b] = (scores["wer"], scores["cer"])
        alpha, beta = min(results, key=lambda key: (results[key], key))
        grid = "  ".join(f"{a}/{b}: {wer:.2f}" for (a, b), (wer, _) in results.items())
        print(f"validation WER % by alpha/beta ({len(split_logits['validation'][0])} utterances): {grid}")
    print(f"alpha {alpha}, beta {beta}" + (" (pyctcdecode's defaults)" if args.no_tune else " (best on validation)"))

    logits, references, forward_seconds = split_logits["test"]
    decoders = {
        "greedy": decoder("decoder=greedy"),
        "beam": decoder("decoder=beam", "lm.path=null"),
        "beam + 3-gram": decoder("decoder=beam", lm, f"lm.alpha={alpha}", f"lm.beta={beta}"),
    }
    print(f"\ntest split: {len(logits)} utterances, beam width {args.width}, model forward {forward_seconds:.2f} s\n")
    print("| decoder | WER % | CER % | utterances/s (decoder) | utterances/s (model + decoder) |")
    print("|---|---|---|---|---|")
    scores = {}
    for name, chosen in decoders.items():
        scores[name] = s = _score(chosen, logits, references, unknown)
        decode_rate = len(logits) / s["seconds"]
        total_rate = len(logits) / (s["seconds"] + forward_seconds)
        print(f"| {name} | {s['wer']:.2f} | {s['cer']:.2f} | {decode_rate:.1f} | {total_rate:.1f} |")
    greedy, best = scores["greedy"]["wer"], scores["beam + 3-gram"]["wer"]
    removed = 1 - best / greedy
    print(f"\nbeam + 3-gram removes {removed:.1%} of greedy decoding's word errors ({greedy:.2f} -> {best:.2f} % WER)")
    print(f"RESULT decoding {removed:.3f}")


if __name__ == "__main__":
    main()
