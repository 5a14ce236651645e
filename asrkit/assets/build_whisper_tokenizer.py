"""Build the offline Whisper tokenizers shipped in ``asrkit/assets/`` (one folder per vocabulary layout).

Each folder is a Hugging Face tokenizer (``tokenizer.json`` + ``tokenizer_config.json``) that loads with
``transformers.WhisperTokenizer.from_pretrained(folder)`` or ``AutoTokenizer.from_pretrained(folder)`` and
reproduces the tokenizer of a published checkpoint:

- ``--variant multilingual`` -> ``whisper_tokenizer/``: ``openai/whisper-small`` (and every multilingual
  checkpoint before large-v3): 51865 tokens, 99 languages, the ``multilingual.tiktoken`` ranks;
- ``--variant english`` -> ``whisper_tokenizer_en/``: ``openai/whisper-small.en`` (every ``.en`` checkpoint
  and the English-only distil-whisper ones): 51864 tokens, the ``gpt2.tiktoken`` ranks;
- ``--variant v3`` -> ``whisper_tokenizer_v3/``: ``openai/whisper-large-v3`` (and large-v3-turbo): 51866
  tokens, 100 languages (``<|yue|>`` added), the ``multilingual.tiktoken`` ranks.

Every layout is the byte-level BPE tokens (50257 multilingual, 50256 gpt2) followed by ``<|endoftext|>``,
``<|startoftranscript|>``, the language tokens, ``<|translate|>``, ``<|transcribe|>``, ``<|startoflm|>``,
``<|startofprev|>``, the no-speech token, ``<|notimestamps|>`` and the 1501 timestamp tokens ``<|0.00|>`` ..
``<|30.00|>``; ``model_max_length`` 448 and ``<|endoftext|>`` as the pad token. The English-only layout keeps
the 99 language tokens (openai-whisper's ``get_encoding("gpt2")`` adds them too, and ``openai/whisper-*.en``
has them at 50258-50356); an English-only model is told apart by its size (51864 < 51865: the rule of
transformers' ``convert_openai_to_hf.py``) and its generation config (``is_multilingual: false``), not by
missing tokens. The no-speech token is ``<|nocaptions|>`` in the checkpoints converted before large-v3 and
``<|nospeech|>`` (openai-whisper's current name) in large-v3's. The English folder also holds
``normalizer.json``: openai-whisper's ``whisper/normalizers/english.json`` (the English spelling map of
Whisper's English text normaliser), as the ``openai/whisper-*.en`` checkpoints ship it.

Where it comes from: the BPE ranks are OpenAI's own ``whisper/assets/multilingual.tiktoken`` and
``gpt2.tiktoken``, taken from the source distribution of the ``openai-whisper`` package on PyPI (version
``20250625``; every file's SHA-256 is checked). The ranks are turned into a byte-level BPE vocabulary and
merge list by transformers' own ``transformers.convert_slow_tokenizer.TikTokenConverter
.extract_vocab_merges_from_model`` (the Whisper-specific ``convert_openai_to_hf.py`` script is not shipped in
the transformers wheel), handed to ``transformers.WhisperTokenizer(vocab=..., merges=...)``, and the special
and timestamp tokens are added in OpenAI's order, as ``convert_openai_to_hf.convert_tiktoken_to_hf`` does.

Regenerate them (downloads the sdist with pip, rewrites the output folders, then verifies them)::

    uv run python -m asrkit.assets.build_whisper_tokenizer                      # every variant
    uv run python -m asrkit.assets.build_whisper_tokenizer --variant english    # one of them
    uv run python -m asrkit.assets.build_whisper_tokenizer --sdist openai_whisper-20250625.tar.gz

Verification (also run after every build, or alone with ``--verify-only``) checks the size and the ids of
the special tokens against the published checkpoint, the Whisper prefix tokens, encode/decode round trips,
and that the ids equal those of ``tiktoken`` run on the raw asset as openai-whisper's ``get_encoding`` sets
it up (for every vocabulary token that is valid UTF-8 on its own, for English, Hindi and mixed text, and
for a long mixed corpus). ``tiktoken`` is not an asrkit dependency: when it is not importable the check
re-runs itself under ``uv run --with tiktoken`` (a throw-away overlay that does not touch
``pyproject.toml``). Nothing in asrkit needs pip, tiktoken or openai-whisper at run time.

The folders also load with transformers 4.57 (``AutoTokenizer`` / ``WhisperTokenizerFast``); only 4.x's
slow, pure-Python ``WhisperTokenizer`` would need ``vocab.json``/``merges.txt``, which transformers 5 no
longer writes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from tokenizers import Tokenizer
from transformers import AutoTokenizer, WhisperTokenizer
from transformers.convert_slow_tokenizer import TikTokenConverter
from transformers.models.whisper.tokenization_whisper import LANGUAGES

ASSETS_DIR = Path(__file__).resolve().parent
WHISPER_PACKAGE = "openai-whisper==20250625"
NORMALIZER_MEMBER, NORMALIZER_SHA256 = (
    "whisper/normalizers/english.json",
    "6607f948be9824d2e1b2fa2223cd94c06c45afa4e05ea0e3d5e1f2bdffde2465",
)
# Files a rebuild may replace in an output folder (anything else there makes the build stop).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "normalizer.json",
)
NUM_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>
TIME_PRECISION = 0.02
MODEL_MAX_LENGTH = 448  # decoder context (max_target_positions) of every Whisper size
# Regex of openai-whisper's tiktoken encoding (whisper/tokenizer.py, get_encoding); only used to build the
# reference tiktoken encoding in the verification. WhisperTokenizer's ByteLevel pre-tokenizer uses the
# same GPT-2 pattern.
WHISPER_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SAMPLE_TEXTS = (
    "प्राचीन भारत में पानी",
    "नमस्ते, आप कैसे हैं? मैं ठीक हूँ।",
    "लड़की बाज़ार गई; गाँव में क्षेत्र, ज्ञान, प्रश्न और विद्यालय।",
    "Hello world! It's 3:45 pm and I'LL be there, don't worry.",
    "  leading spaces,\ttabs and\nnew lines\r\n  ",
    "मेरा नाम John है and I live in दिल्ली since 2024 (१२३४).",
    "Ünïcödé, 中文字符, 日本語のテキスト, emoji 🎉👍🏽 and numbers 1234567890.",
)


@dataclass(frozen=True)
class Variant:
    """One published tokenizer layout and the ids its checkpoint uses."""

    folder: str  # under asrkit/assets
    tiktoken: str  # file under whisper/assets/ in the sdist
    sha256: str  # of that file in openai-whisper 20250625
    num_languages: int
    no_speech: str  # the Hugging Face name of openai-whisper's <|nospeech|>
    reference: str  # the checkpoint whose tokenizer this reproduces
    size: int  # len(tokenizer) of that checkpoint
    ids: dict[str, int] = field(default_factory=dict)  # its special-token ids
    normalizer: bool = False  # ship whisper/normalizers/english.json as normalizer.json

    @property
    def multilingual(self) -> bool:
        return self.size >= 51865  # transformers' convert_openai_to_hf.py: is_multilingual

    def special_tokens(self) -> list[str]:
        """Whisper's special tokens in id order (the timestamps, which follow them, are ordinary tokens)."""
        languages = [f"<|{code}|>" for code in list(LANGUAGES)[: self.num_languages]]
        controls = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", self.no_speech]
        return ["<|endoftext|>", "<|startoftranscript|>", *languages, *controls, "<|notimestamps|>"]


VARIANTS = {
    "multilingual": Variant(
        "whisper_tokenizer",
        "multilingual.tiktoken",
        "b34b360dbb493e781e479794586d661700670d65564001f23024971d1f2fa126",
        99,
        "<|nocaptions|>",
        "openai/whisper-small",
        51865,
        {
            "<|endoftext|>": 50257,
            "<|startoftranscript|>": 50258,
            "<|en|>": 50259,
            "<|hi|>": 50276,
            "<|translate|>": 50358,
            "<|transcribe|>": 50359,
            "<|startoflm|>": 50360,
            "<|startofprev|>": 50361,
            "<|nocaptions|>": 50362,
            "<|notimestamps|>": 50363,
            "<|0.00|>": 50364,
            "<|30.00|>": 51864,
        },
    ),
    "english": Variant(
        "whisper_tokenizer_en",
        "gpt2.tiktoken",
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
        99,
        "<|nocaptions|>",
        "openai/whisper-small.en",
        51864,
        {
            "<|endoftext|>": 50256,
            "<|startoftranscript|>": 50257,
            "<|en|>": 50258,
            "<|hi|>": 50275,
            "<|translate|>": 50357,
            "<|transcribe|>": 50358,
            "<|startoflm|>": 50359,
            "<|startofprev|>": 50360,
            "<|nocaptions|>": 50361,
            "<|notimestamps|>": 50362,
            "<|0.00|>": 50363,
            "<|30.00|>": 51863,
        },
        normalizer=True,
    ),
    "v3": Variant(
        "whisper_tokenizer_v3",
        "multilingual.tiktoken",
        "b34b360dbb493e781e479794586d661700670d65564001f23024971d1f2fa126",
        100,
        "<|nospeech|>",
        "openai/whisper-large-v3",
        51866,
        {
            "<|endoftext|>": 50257,
            "<|startoftranscript|>": 50258,
            "<|en|>": 50259,
            "<|hi|>": 50276,
            "<|yue|>": 50358,
            "<|translate|>": 50359,
            "<|transcribe|>": 50360,
            "<|startoflm|>": 50361,
            "<|startofprev|>": 50362,
            "<|nospeech|>": 50363,
            "<|notimestamps|>": 50364,
            "<|0.00|>": 50365,
            "<|30.00|>": 51865,
        },
    ),
}


class _LocalFileTikTokenConverter(TikTokenConverter):
    """transformers' TikTokenConverter, reading the ``.tiktoken`` file without the ``tiktoken`` package.

    Only the loading step is replaced: upstream ``load_tiktoken_bpe`` imports ``tiktoken.load`` (and would
    fetch URLs). A ``.tiktoken`` file is one ``<base64 token bytes> <rank>`` pair per line; this is the
    same parsing openai-whisper's ``get_encoding`` does. The verification compares the result with
    ``tiktoken.load.load_tiktoken_bpe``. Vocabulary and merge extraction are transformers' unchanged code.
    """

    @staticmethod
    def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
        return read_tiktoken_ranks(Path(tiktoken_url))


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def timestamp_tokens() -> list[str]:
    return [f"<|{i * TIME_PRECISION:.2f}|>" for i in range(NUM_TIMESTAMPS)]


def _fail(message: str) -> NoReturn:
    raise SystemExit(f"ERROR: {message}")


def _check(condition: bool, message: str) -> None:
    if not condition:
        _fail(message)


def _pip_command() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        exe = shutil.which(name)
        if exe is not None:
            return [exe]
    uv = shutil.which("uv")
    if uv is not None:
        return [uv, "tool", "run", "pip"]
    _fail("pip is needed to download openai-whisper (or pass --sdist PATH)")


def download_sdist(workdir: Path) -> Path:
    """``pip download`` the openai-whisper source distribution into ``workdir``."""
    cmd = [*_pip_command(), "download", "--no-deps", "--no-binary", ":all:", WHISPER_PACKAGE, "-d", str(workdir)]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        _fail(f"pip download failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    archives = sorted(p for p in workdir.iterdir() if p.name.endswith(".tar.gz"))
    _check(len(archives) == 1, f"expected one downloaded .tar.gz in {workdir}, found {archives}")
    return archives[0]


def extract(sdist: Path, member_suffix: str, sha256: str, workdir: Path) -> Path:
    """The file of ``sdist`` whose path ends with ``member_suffix``, hash checked, written to ``workdir``."""
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(member_suffix)]
        _check(len(members) == 1, f"{member_suffix} not found (once) in {sdist.name}")
        source = tar.extractfile(members[0])
        if source is None:
            _fail(f"cannot read {members[0].name} from {sdist.name}")
        data = source.read()
    digest = hashlib.sha256(data).hexdigest()
    _check(digest == sha256, f"{member_suffix} has SHA-256 {digest}, expected {sha256} ({WHISPER_PACKAGE})")
    target = workdir / Path(member_suffix).name
    target.write_bytes(data)
    print(f"{member_suffix} from {sdist.name}: sha256 {digest} (ok)")
    return target


def build(variant: Variant, asset: Path, normalizer: Path | None, out: Path) -> None:
    vocab, merges = _LocalFileTikTokenConverter(vocab_file=str(asset)).extract_vocab_merges_from_model(str(asset))
    print(f"TikTokenConverter.extract_vocab_merges_from_model: {len(vocab)} vocabulary entries, {len(merges)} merges")
    base = variant.ids["<|endoftext|>"]
    _check(len(vocab) == base, f"expected {base} BPE tokens, got {len(vocab)}")

    tokenizer = WhisperTokenizer(
        vocab=vocab, merges=merges, model_max_length=MODEL_MAX_LENGTH, pad_token="<|endoftext|>"
    )
    # unk/bos/eos/pad are all <|endoftext|>, which the constructor appended after the BPE tokens. The rest
    # follow in OpenAI's order: special tokens (never split, dropped by skip_special_tokens), then the
    # timestamps as ordinary added tokens, exactly as in the published checkpoints.
    tokenizer.add_special_tokens({"extra_special_tokens": variant.special_tokens()})
    tokenizer.add_tokens(timestamp_tokens(), special_tokens=False)

    if out.exists():
        unknown = sorted(p.name for p in out.iterdir() if p.name not in TOKENIZER_FILES)
        _check(not unknown, f"{out} holds files that are not tokenizer files, not overwriting: {unknown}")
        for name in TOKENIZER_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    saved = tokenizer.save_pretrained(str(out))
    # save_pretrained writes tokenizer.json pretty-printed (about 6 MB); the same tokenizer written
    # compactly by the tokenizers library is about 2.5 MB.
    tokenizer_json = out / "tokenizer.json"
    Tokenizer.from_file(str(tokenizer_json)).save(str(tokenizer_json), pretty=False)
    # transformers 5 writes the special-token list as "extra_special_tokens"; transformers 4.x (allowed by
    # pyproject.toml) reads that key as a dict and fails on a list. "additional_special_tokens", the key in
    # the openai/whisper-* configs, is read by both (5.x maps it to extra_special_tokens when loading).
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["additional_special_tokens"] = config.pop("extra_special_tokens")
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    if normalizer is not None:  # the file as openai-whisper ships it; WhisperTokenizer reads it by this name
        shutil.copyfile(normalizer, out / "normalizer.json")
        saved = (*saved, str(out / "normalizer.json"))
    print("saved:", ", ".join(sorted({Path(p).name for p in saved if Path(p).is_file()})))


def verify(variant: Variant, out: Path, normalizer: Path | None) -> None:
    """Check the saved folder against the published tokenizer; exits with an error on a mismatch."""
    tokenizer = WhisperTokenizer.from_pretrained(str(out))
    auto = AutoTokenizer.from_pretrained(str(out))
    _check(type(auto) is WhisperTokenizer, f"AutoTokenizer loaded {type(auto).__name__}, not WhisperTokenizer")
    _check(len(tokenizer) == variant.size, f"len(tokenizer) = {len(tokenizer)}, expected {variant.size}")
    _check(len(auto) == variant.size, f"len(AutoTokenizer) = {len(auto)}, expected {variant.size}")
    for token, expected in variant.ids.items():
        got = tokenizer.convert_tokens_to_ids(token)
        _check(got == expected, f"{token} has id {got}, expected {expected} (as in {variant.reference})")
        _check(auto.convert_tokens_to_ids(token) == expected, f"AutoTokenizer: {token} is not {expected}")
    eot = variant.ids["<|endoftext|>"]
    specials, timestamps = variant.special_tokens(), timestamp_tokens()
    got_order = tokenizer.convert_ids_to_tokens(list(range(eot, variant.size)))
    _check(got_order == specials + timestamps, f"added tokens {eot}.. are not Whisper's tokens in OpenAI's order")
    _check(set(specials) <= set(tokenizer.all_special_tokens), "some Whisper special tokens are not special")
    _check(not set(timestamps) & set(tokenizer.all_special_tokens), "timestamp tokens must be ordinary tokens")
    _check(tokenizer.model_max_length == MODEL_MAX_LENGTH, f"model_max_length {tokenizer.model_max_length}")
    for name in ("pad", "eos", "bos", "unk"):
        token = getattr(tokenizer, f"{name}_token")
        _check(token == "<|endoftext|>", f"{name}_token is {token!r}, expected <|endoftext|>")
    _check(tokenizer.pad_token_id == eot, f"pad_token_id is {tokenizer.pad_token_id}")
    spelling = json.loads(normalizer.read_text(encoding="utf-8")) if normalizer else None
    _check(tokenizer.english_spelling_normalizer == spelling, "normalizer.json is not the sdist's english.json")
    print(
        f"{variant.reference}: size {len(tokenizer)}, special ids {variant.ids}, {len(specials)} special + "
        f"{len(timestamps)} timestamp tokens in order, pad {tokenizer.pad_token}={tokenizer.pad_token_id}, "
        f"English spelling map {'shipped' if spelling else 'absent'} (ok)"
    )

    for text in SAMPLE_TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        _check(auto.encode(text, add_special_tokens=False) == ids, f"AutoTokenizer differs on {text!r}")
        decoded = tokenizer.decode(ids)
        _check(decoded == text, f"round trip changed {text!r} into {decoded!r}")
    print(f"decode(encode(x)) == x for {len(SAMPLE_TEXTS)} English/Hindi/mixed samples (ok)")

    # Labels as WhisperModule writes them: <|hi|><|transcribe|> for a multilingual model, nothing for English
    ids_of = variant.ids
    text, language = ("नमस्ते", "hindi") if variant.multilingual else ("hello", None)
    tokenizer.set_prefix_tokens(language=language, task="transcribe" if language else None, predict_timestamps=False)
    prompt = [ids_of["<|startoftranscript|>"]]
    prompt += [ids_of["<|hi|>"], ids_of["<|transcribe|>"]] if language else []
    ids = tokenizer(text).input_ids
    body = ids[len(prompt) + 1 : -1]
    _check(ids[: len(prompt) + 1] == [*prompt, ids_of["<|notimestamps|>"]] and ids[-1] == eot, f"labels {ids}")
    _check(tokenizer.decode(ids, skip_special_tokens=True) == text, "decode(skip_special_tokens=True) differs")
    zero = ids_of["<|0.00|>"]
    with_time = tokenizer.decode([*prompt, zero, *body, zero + 50, eot], decode_with_timestamps=True)
    expected = "".join(tokenizer.convert_ids_to_tokens(prompt)) + f"<|0.00|>{text}<|1.00|><|endoftext|>"
    _check(with_time == expected, f"decode_with_timestamps gave {with_time!r}")
    print(f"prefix {tokenizer.convert_ids_to_tokens(prompt)} + <|notimestamps|>: {text!r} -> {ids} (ok)")


def verify_against_tiktoken(variant: Variant, out: Path, asset: Path) -> None:
    """Compare with OpenAI's tokenizer: tiktoken on the raw asset, set up as openai-whisper's get_encoding.

    The special tokens are matched by id; the plain-text ids must be identical.
    """
    import tiktoken  # optional: only for this check
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(asset))
    _check(ranks == read_tiktoken_ranks(asset), "tiktoken reads different ranks from the asset than the build")
    hf_names = variant.special_tokens() + timestamp_tokens()
    openai_names = [name.replace(variant.no_speech, "<|nospeech|>") for name in hf_names]
    encoding = tiktoken.Encoding(
        name=asset.stem,
        explicit_n_vocab=len(ranks) + len(openai_names),
        pat_str=WHISPER_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={token: len(ranks) + i for i, token in enumerate(openai_names)},
    )
    tokenizer = WhisperTokenizer.from_pretrained(str(out))
    for hf_token, token in zip(hf_names, openai_names, strict=True):
        token_id = encoding._special_tokens[token]
        _check(tokenizer.convert_tokens_to_ids(hf_token) == token_id, f"{hf_token} is not tiktoken's {token_id}")

    for text in SAMPLE_TEXTS:
        expected = encoding.encode_ordinary(text)
        got = tokenizer.encode(text, add_special_tokens=False)
        _check(got == expected, f"{text!r}: HF ids {got} != tiktoken ids {expected}")
        print(f"  {text!r}: {len(got)} tokens, identical")

    # Every BPE token that is valid UTF-8 on its own, encoded as a text: exercises all merges.
    texts = []
    for token_bytes in ranks:
        try:
            texts.append(token_bytes.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    got_batch = tokenizer(texts, add_special_tokens=False).input_ids
    expected_batch = encoding.encode_ordinary_batch(texts)
    mismatches = [t for t, g, e in zip(texts, got_batch, expected_batch, strict=True) if g != e]
    _check(not mismatches, f"{len(mismatches)} vocabulary strings differ from tiktoken, e.g. {mismatches[:5]!r}")

    # A long mixed corpus: transformers' Whisper tokenizer source (English, code, language names, and
    # special tokens such as "<|endoftext|>" written out, which both sides must match as special tokens).
    corpus = Path(sys.modules[WhisperTokenizer.__module__].__file__ or "").read_text(encoding="utf-8")
    corpus += "\n".join(SAMPLE_TEXTS) * 20
    _check(
        tokenizer.encode(corpus, add_special_tokens=False, verbose=False)
        == encoding.encode(corpus, allowed_special="all"),
        "the long corpus is tokenized differently from tiktoken",
    )
    print(
        f"tiktoken {tiktoken.__version__} on {asset.name}: same ranks, same ids for all "
        f"{len(encoding._special_tokens)} special/timestamp tokens, {len(SAMPLE_TEXTS)} samples, "
        f"{len(texts)} vocabulary strings and a {len(corpus)}-character corpus (ok)"
    )


def run_tiktoken_check(name: str, out: Path, sdist: Path, asset: Path, require: bool) -> None:
    if importlib.util.find_spec("tiktoken") is not None:
        verify_against_tiktoken(VARIANTS[name], out, asset)
        return
    if require:
        _fail("tiktoken is not importable")
    uv = shutil.which("uv")
    if uv is None:
        _fail("tiktoken is needed for the comparison: install it temporarily, or pass --skip-tiktoken-check")
    repo_root = Path(__file__).resolve().parents[2]
    cmd = [
        *(uv, "run", "--with", "tiktoken", "python", "-m", "asrkit.assets.build_whisper_tokenizer"),
        *("--verify-only", "--require-tiktoken", "--variant", name),
        *("--sdist", str(sdist.resolve()), "--out", str(out.resolve())),
    ]
    print("tiktoken is not installed here; re-running the verification with:\n$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=repo_root if (repo_root / "pyproject.toml").is_file() else None)
    _check(proc.returncode == 0, f"verification under `uv run --with tiktoken` failed ({proc.returncode})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        action="append",
        help="tokenizer to build (repeatable; default: all of them)",
    )
    parser.add_argument("--sdist", type=Path, help="local openai-whisper sdist (default: pip download)")
    parser.add_argument("--out", type=Path, help="output folder, with one --variant (default: asrkit/assets/<folder>)")
    parser.add_argument("--verify-only", action="store_true", help="only verify the existing output folders")
    parser.add_argument("--skip-tiktoken-check", action="store_true", help="skip the comparison with tiktoken")
    parser.add_argument("--require-tiktoken", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = args.variant or list(VARIANTS)
    if args.out is not None and len(names) != 1:
        parser.error("--out needs exactly one --variant")

    with tempfile.TemporaryDirectory(prefix="whisper_tokenizer_") as tmp:
        sdist = args.sdist or download_sdist(Path(tmp))
        for name in names:
            variant = VARIANTS[name]
            out = args.out or ASSETS_DIR / variant.folder
            workdir = Path(tmp) / name
            workdir.mkdir()
            asset = extract(sdist, f"whisper/assets/{variant.tiktoken}", variant.sha256, workdir)
            normalizer = extract(sdist, NORMALIZER_MEMBER, NORMALIZER_SHA256, workdir) if variant.normalizer else None
            if not args.verify_only:
                build(variant, asset, normalizer, out)
            verify(variant, out, normalizer)
            if not args.skip_tiktoken_check:
                run_tiktoken_check(name, out, sdist, asset, require=args.require_tiktoken)
            if not args.verify_only:
                for path in sorted(out.iterdir()):
                    print(f"{path}: {path.stat().st_size} bytes")
    print("all checks passed")


if __name__ == "__main__":
    main()
