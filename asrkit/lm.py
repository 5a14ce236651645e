"""``python -m asrkit.lm data=... order=3``: a KenLM word n-gram of a data config's training transcripts, for CTC beam
search (``decoder=beam lm.path=<output>/lm.bin`` in :mod:`asrkit.evaluate` and :mod:`asrkit.transcribe`).

The transcripts are read by the training datamodule and prepared as CTC training prepares its labels (the data
config's ``do_lower_case``, ``do_remove_punctuation``, ``chars_to_ignore``; the examples its drop rule keeps), so
the n-gram's words are spelt as the model's outputs are. KenLM's own ``lmplz`` estimates the model (modified
Kneser-Ney; ``--discount_fallback`` where a small corpus leaves the discounts undefined) and ``build_binary``
makes the binary that loads fast; :mod:`asrkit.kenlm_tools` finds or builds them.

Writes ``corpus.txt`` (one prepared transcript a line), ``lm.arpa``, ``lm.bin``, ``unigrams.txt`` (the words, which
pyctcdecode cannot read from a binary) and ``lm.json`` (order, sentences, words, vocabulary, n-gram counts, source).
``export=<an asrkit CTC export>`` also writes a copy of the export whose processor is a
``transformers.Wav2Vec2ProcessorWithLM`` (``alphabet.json`` and ``language_model/``), which
``transformers.pipeline("automatic-speech-recognition", model=...)`` decodes with, and asrkit with ``lm.path=auto``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import AutoConfig, AutoProcessor, Wav2Vec2FeatureExtractor

from asrkit import kenlm_tools
from asrkit.config import CONFIG_DIR, register_resolvers
from asrkit.ctc_decoding import ctc_labels
from asrkit.extras import require
from asrkit.models.ctc import Wav2Vec2CTCCollator
from asrkit.models.ctc_vocab import build_ctc_tokenizer

log = logging.getLogger(__name__)

SENTENCE_MARKERS = ("<s>", "</s>", "<unk>")  # in every KenLM model, never a word of the corpus
NO_DISCOUNTS = "discount_fallback"  # what lmplz's error says when Kneser-Ney discounts cannot be estimated


def training_transcripts(cfg: DictConfig) -> list[str]:
    """The prepared transcripts of the training split of ``cfg.data``, as CTC training builds its vocabulary from."""
    collator = Wav2Vec2CTCCollator(Wav2Vec2FeatureExtractor(), vocabulary=build_ctc_tokenizer)  # labels only
    datamodule = instantiate(cfg.data, collator=collator, extra_validation=None)
    return [text for text in datamodule.training_transcripts() if text.strip()]


def write_corpus(texts: list[str], path: Path) -> dict[str, int]:
    """One transcript a line (lmplz's sentences); the counts of sentences, words and distinct words."""
    words = [text.split() for text in texts]
    path.write_text("".join(" ".join(line) + "\n" for line in words), encoding="utf-8")
    return {
        "sentences": len(words),
        "words": sum(len(line) for line in words),
        "vocabulary": len({word for line in words for word in line}),
    }


def _run(command: list[str], stdin: Path | None = None, stdout: Path | None = None) -> subprocess.CompletedProcess:
    log.info("%s", " ".join(command))
    with open(stdin or "/dev/null", "rb") as source, open(stdout or "/dev/null", "wb") as sink:
        return subprocess.run(command, stdin=source, stdout=sink, stderr=subprocess.PIPE, text=False)


def _failed(name: str, done: subprocess.CompletedProcess) -> RuntimeError:
    tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-3:])
    return RuntimeError(f"KenLM's {name} failed (exit {done.returncode}): {tail}")


def estimate(corpus: Path, arpa: Path, order: int, discount_fallback: bool | str, memory: str) -> bool:
    """``lmplz -o order`` of ``corpus`` into ``arpa``; whether ``--discount_fallback`` was used (``auto``: only
    when lmplz says the corpus is too small or artificial to estimate the Kneser-Ney discounts)."""
    command = [str(kenlm_tools.tool("lmplz")), "-o", str(order), "-S", memory, "-T", str(arpa.parent)]
    fallback = discount_fallback is True
    done = _run(command + ["--discount_fallback"] * fallback, corpus, arpa)
    if done.returncode != 0 and discount_fallback == "auto" and NO_DISCOUNTS in done.stderr.decode(errors="replace"):
        log.warning("lmplz cannot estimate Kneser-Ney discounts from this small corpus: again with --discount_fallback")
        fallback = True
        done = _run(command + ["--discount_fallback"], corpus, arpa)
    if done.returncode != 0:
        raise _failed("lmplz", done)
    return fallback


def arpa_counts(arpa: Path) -> dict[str, int]:
    """The n-gram counts of an ARPA file's header (``ngram 1=...``)."""
    counts = {}
    with open(arpa, encoding="utf-8") as f:
        for line in f:
            if line.startswith("\\1-grams:"):
                break
            if match := re.match(r"ngram (\d+)=(\d+)", line.strip()):
                counts[f"{match[1]}-grams"] = int(match[2])
    return counts


def arpa_unigrams(arpa: Path) -> list[str]:
    """The words of an ARPA file (its 1-grams, without the sentence markers), in file order."""
    words, inside = [], False
    with open(arpa, encoding="utf-8") as f:
        for line in f:
            if line.startswith("\\"):
                if inside:
                    break
                inside = line.startswith("\\1-grams:")
                continue
            fields = line.rstrip("\n").split("\t")
            if inside and len(fields) >= 2 and fields[1] not in SENTENCE_MARKERS:
                words.append(fields[1])
    return words


def build_language_model(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Corpus, ARPA, binary, unigrams and lm.json of ``cfg`` in ``out``; returns what lm.json says."""
    if not isinstance(cfg.order, int) or not 1 <= cfg.order <= 6:
        raise ValueError(f"order={cfg.order}: the n of the n-gram, 1-6 (KenLM's default build stops at 6)")
    if cfg.discount_fallback not in (True, False, "auto"):
        raise ValueError(f"discount_fallback={cfg.discount_fallback}: true, false or auto")
    tools = {name: kenlm_tools.tool(name) for name in kenlm_tools.TOOLS}  # before reading any data
    out.mkdir(parents=True, exist_ok=True)
    texts = training_transcripts(cfg)
    if not texts:
        raise ValueError(f"data.path={cfg.data.path}: its training split has no transcript to estimate an n-gram from")
    stats = write_corpus(texts, out / "corpus.txt")
    fallback = estimate(out / "corpus.txt", out / "lm.arpa", cfg.order, cfg.discount_fallback, str(cfg.memory))
    done = _run([str(tools["build_binary"]), str(out / "lm.arpa"), str(out / "lm.bin")])
    if done.returncode != 0:
        raise _failed("build_binary", done)
    unigrams = arpa_unigrams(out / "lm.arpa")
    (out / "unigrams.txt").write_text("".join(word + "\n" for word in unigrams), encoding="utf-8")
    summary = {
        "order": cfg.order,
        **stats,
        "ngrams": arpa_counts(out / "lm.arpa"),
        "discount_fallback": fallback,
        "data": {key: cfg.data.get(key) for key in ("path", "name", "data_dir", "train_split")},
        "lang": cfg.get("lang"),
        "files": {"arpa": "lm.arpa", "binary": "lm.bin", "unigrams": "unigrams.txt", "corpus": "corpus.txt"},
    }
    (out / "lm.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def export_with_lm(export: Path, lm: Path, target: Path, alpha: float, beta: float) -> Path:
    """A copy of the CTC ``export`` at ``target`` whose processor is a ``Wav2Vec2ProcessorWithLM`` over the KenLM
    binary ``lm`` (with ``unigrams.txt`` beside it), decoding with weights ``alpha`` and ``beta``."""
    require("pyctcdecode", "export=")
    require("kenlm", "export=")
    from pyctcdecode import build_ctcdecoder
    from transformers import Wav2Vec2ProcessorWithLM

    if not (export / "config.json").is_file():
        raise FileNotFoundError(f"export={export}: no config.json (give an asrkit CTC export, <run dir>/export)")
    config = AutoConfig.from_pretrained(export)
    if not any("ForCTC" in head for head in config.architectures or []):
        raise ValueError(f"export={export}: {config.model_type} has no CTC head; an n-gram helps CTC decoding only")
    processor = AutoProcessor.from_pretrained(export)
    unigrams = (lm.parent / "unigrams.txt").read_text(encoding="utf-8").split()
    decoder = build_ctcdecoder(
        ctc_labels(processor.tokenizer, config.vocab_size), str(lm), unigrams, alpha=alpha, beta=beta
    )
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(export, target)
    with_lm = Wav2Vec2ProcessorWithLM(processor.feature_extractor, processor.tokenizer, decoder)
    with_lm.save_pretrained(target)
    # the pipeline attaches the decoder when the *feature extractor's* config names a ...WithLM processor; saved
    # nested (processor_config.json, transformers 5) only the processor's does: the feature extractor's names it too
    nested = target / "processor_config.json"
    if nested.is_file() and "feature_extractor" in (config := json.loads(nested.read_text())):
        config["feature_extractor"]["processor_class"] = type(with_lm).__name__
        nested.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return target


def main_job(cfg: DictConfig) -> dict[str, Any]:
    """Build the n-gram; with ``export``, also the export with it. Prints where everything went."""
    out = Path(cfg.output)
    summary = build_language_model(cfg, out)
    ngrams = ", ".join(f"{count} {name}" for name, count in summary["ngrams"].items())
    print(
        f"{summary['order']}-gram of {summary['sentences']} transcripts ({summary['words']} words, "
        f"{summary['vocabulary']} distinct): {ngrams}\n"
        f"arpa     {out / 'lm.arpa'}\nbinary   {out / 'lm.bin'}\nsummary  {out / 'lm.json'}"
    )
    if cfg.export:
        export = Path(str(cfg.export))
        target = Path(cfg.export_output) if cfg.export_output else export.with_name(export.name + "-with-lm")
        export_with_lm(export, out / "lm.bin", target, float(cfg.alpha), float(cfg.beta))
        summary["export"] = str(target)
        print(f"export   {target} (transformers.pipeline and lm.path=auto decode with the n-gram)")
    return summary


@hydra.main(config_path=CONFIG_DIR, config_name="lm", version_base="1.3")
def main(cfg: DictConfig) -> None:
    main_job(cfg)


def cli() -> None:
    register_resolvers()
    main()


if __name__ == "__main__":
    cli()
