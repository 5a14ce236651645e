"""Build the offline multilingual Whisper tokenizer shipped in ``asrkit/assets/whisper_tokenizer/``.

The folder is a Hugging Face tokenizer (``tokenizer.json`` + ``tokenizer_config.json``) that loads with
``transformers.WhisperTokenizer.from_pretrained(folder)`` or ``AutoTokenizer.from_pretrained(folder)`` and
reproduces the tokenizer of ``openai/whisper-small`` (and every other multilingual Whisper checkpoint
before large-v3): 51865 tokens, i.e. the 50257 byte-level BPE tokens followed by ``<|endoftext|>``,
``<|startoftranscript|>``, 99 language tokens, ``<|translate|>``, ``<|transcribe|>``, ``<|startoflm|>``,
``<|startofprev|>``, ``<|nocaptions|>``, ``<|notimestamps|>`` and the 1501 timestamp tokens
``<|0.00|>`` .. ``<|30.00|>``; ``model_max_length`` 448 and ``<|endoftext|>`` as the pad token.

Where it comes from: the BPE ranks are OpenAI's own ``whisper/assets/multilingual.tiktoken``, taken from
the source distribution of the ``openai-whisper`` package on PyPI (version ``20250625``; the file's
SHA-256 is checked). The ranks are turned into a byte-level BPE vocabulary and merge list by transformers'
own ``transformers.convert_slow_tokenizer.TikTokenConverter.extract_vocab_merges_from_model`` (the
Whisper-specific ``convert_openai_to_hf.py`` script is not shipped in the transformers wheel), handed to
``transformers.WhisperTokenizer(vocab=..., merges=...)``, and the special and timestamp tokens are added
in OpenAI's order, as ``convert_openai_to_hf.convert_tiktoken_to_hf`` does upstream. ``<|nocaptions|>`` is
the name the Hugging Face checkpoints use for the token that openai-whisper now calls ``<|nospeech|>``.

Regenerate it (downloads the sdist with pip, rewrites the output folder, then verifies it)::

    uv run python -m asrkit.assets.build_whisper_tokenizer
    uv run python -m asrkit.assets.build_whisper_tokenizer --tiktoken path/to/multilingual.tiktoken

Verification (also run after every build, or alone with ``--verify-only``) checks the size and the ids of
the special tokens against ``openai/whisper-small``, the Whisper prefix tokens, encode/decode round
trips, and that the ids equal those of ``tiktoken`` run on the raw asset (for every vocabulary token
that is valid UTF-8 on its own, for English, Hindi and mixed text, and for a long mixed corpus).
``tiktoken`` is not an asrkit dependency: when it is not importable the check re-runs itself under
``uv run --with tiktoken`` (a throw-away overlay that does not touch ``pyproject.toml``). Nothing in
asrkit needs pip, tiktoken or openai-whisper at run time.

The folder also loads with transformers 4.57 (``AutoTokenizer`` / ``WhisperTokenizerFast``); only 4.x's
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
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from tokenizers import Tokenizer
from transformers import AutoTokenizer, WhisperTokenizer
from transformers.convert_slow_tokenizer import TikTokenConverter
from transformers.models.whisper.tokenization_whisper import LANGUAGES

DEFAULT_OUT = Path(__file__).resolve().parent / "whisper_tokenizer"
WHISPER_PACKAGE = "openai-whisper==20250625"
ASSET_MEMBER_SUFFIX = "whisper/assets/multilingual.tiktoken"
ASSET_SHA256 = "b34b360dbb493e781e479794586d661700670d65564001f23024971d1f2fa126"
# Files a rebuild may replace in --out (anything else there makes the build stop rather than delete it).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "normalizer.json",
)

NUM_LANGUAGES = 99  # multilingual checkpoints before large-v3 (large-v3 adds <|yue|>, 100)
NUM_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>
TIME_PRECISION = 0.02
MODEL_MAX_LENGTH = 448  # decoder context (max_target_positions) of every Whisper size
CONTROL_TOKENS = (
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",  # openai-whisper renamed it <|nospeech|>; HF checkpoints keep the old name
    "<|notimestamps|>",
)
# Regex of openai-whisper's tiktoken encoding (whisper/tokenizer.py, get_encoding); only used to build the
# reference tiktoken encoding in the verification. WhisperTokenizer's ByteLevel pre-tokenizer uses the
# same GPT-2 pattern.
WHISPER_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Ids in openai/whisper-small's tokenizer.
EXPECTED_LEN = 51865
EXPECTED_IDS = {
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
}
SAMPLE_TEXTS = (
    "प्राचीन भारत में पानी",
    "नमस्ते, आप कैसे हैं? मैं ठीक हूँ।",
    "लड़की बाज़ार गई; गाँव में क्षेत्र, ज्ञान, प्रश्न और विद्यालय।",
    "Hello world! It's 3:45 pm and I'LL be there, don't worry.",
    "  leading spaces,\ttabs and\nnew lines\r\n  ",
    "मेरा नाम John है and I live in दिल्ली since 2024 (१२३४).",
    "Ünïcödé, 中文字符, 日本語のテキスト, emoji 🎉👍🏽 and numbers 1234567890.",
)


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


def special_tokens() -> list[str]:
    """Whisper's special tokens in id order (the timestamps, which follow them, are ordinary tokens)."""
    languages = [f"<|{code}|>" for code in list(LANGUAGES)[:NUM_LANGUAGES]]
    return ["<|endoftext|>", "<|startoftranscript|>", *languages, *CONTROL_TOKENS]


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
    _fail("pip is needed to download openai-whisper (or pass --tiktoken PATH)")


def download_asset(workdir: Path) -> Path:
    """``pip download`` the openai-whisper sdist into ``workdir`` and extract multilingual.tiktoken."""
    cmd = [
        *_pip_command(),
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        WHISPER_PACKAGE,
        "-d",
        str(workdir),
    ]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        _fail(f"pip download failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    archives = sorted(p for p in workdir.iterdir() if p.name.endswith((".tar.gz", ".zip", ".whl")))
    _check(len(archives) == 1, f"expected one downloaded archive in {workdir}, found {archives}")
    archive = archives[0]
    target = workdir / "multilingual.tiktoken"
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(ASSET_MEMBER_SUFFIX)]
            _check(len(members) == 1, f"{ASSET_MEMBER_SUFFIX} not found (once) in {archive.name}")
            source = tar.extractfile(members[0])
            if source is None:
                _fail(f"cannot read {members[0].name} from {archive.name}")
            target.write_bytes(source.read())
    else:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(ASSET_MEMBER_SUFFIX)]
            _check(len(names) == 1, f"{ASSET_MEMBER_SUFFIX} not found (once) in {archive.name}")
            target.write_bytes(zf.read(names[0]))
    print(f"extracted {ASSET_MEMBER_SUFFIX} from {archive.name}")
    return target


def check_asset(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _check(
        digest == ASSET_SHA256,
        f"{path} has SHA-256 {digest}, expected {ASSET_SHA256} "
        "(the multilingual.tiktoken of openai-whisper 20250625)",
    )
    print(f"asset {path}: sha256 {digest} (ok)")


def build(asset: Path, out: Path) -> None:
    converter = _LocalFileTikTokenConverter(vocab_file=str(asset))
    vocab, merges = converter.extract_vocab_merges_from_model(str(asset))
    print(
        "TikTokenConverter.extract_vocab_merges_from_model: "
        f"{len(vocab)} vocabulary entries, {len(merges)} merges"
    )
    _check(len(vocab) == 50257, f"expected 50257 BPE tokens, got {len(vocab)}")

    tokenizer = WhisperTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=MODEL_MAX_LENGTH,
        pad_token="<|endoftext|>",
    )
    # unk/bos/eos/pad are all <|endoftext|>, which the constructor appended as id 50257. The rest follow in
    # OpenAI's order: special tokens (never split, dropped by skip_special_tokens), then the timestamps as
    # ordinary added tokens, exactly as in openai/whisper-small.
    tokenizer.add_special_tokens({"extra_special_tokens": special_tokens()})
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
    config_path.write_text(
        json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print("saved:", ", ".join(sorted(Path(p).name for p in saved)))


def verify(out: Path) -> None:
    """Check the saved folder against openai/whisper-small's tokenizer; exits with an error on a mismatch."""
    tokenizer = WhisperTokenizer.from_pretrained(str(out))
    auto = AutoTokenizer.from_pretrained(str(out))
    _check(
        type(auto) is WhisperTokenizer, f"AutoTokenizer loaded {type(auto).__name__}, not WhisperTokenizer"
    )

    _check(len(tokenizer) == EXPECTED_LEN, f"len(tokenizer) = {len(tokenizer)}, expected {EXPECTED_LEN}")
    _check(len(auto) == EXPECTED_LEN, f"len(AutoTokenizer) = {len(auto)}, expected {EXPECTED_LEN}")
    for token, expected in EXPECTED_IDS.items():
        got = tokenizer.convert_tokens_to_ids(token)
        _check(got == expected, f"{token} has id {got}, expected {expected}")
        _check(auto.convert_tokens_to_ids(token) == expected, f"AutoTokenizer: {token} is not {expected}")
    specials = special_tokens()
    timestamps = timestamp_tokens()
    expected_order = specials + timestamps
    got_order = tokenizer.convert_ids_to_tokens(list(range(50257, EXPECTED_LEN)))
    _check(
        got_order == expected_order, "added tokens 50257..51864 are not Whisper's tokens in OpenAI's order"
    )
    _check(
        set(specials) <= set(tokenizer.all_special_tokens),
        "some Whisper special tokens are not registered as special tokens",
    )
    _check(
        not set(timestamps) & set(tokenizer.all_special_tokens),
        "timestamp tokens must be ordinary added tokens",
    )
    _check(tokenizer.model_max_length == MODEL_MAX_LENGTH, f"model_max_length {tokenizer.model_max_length}")
    for name in ("pad", "eos", "bos", "unk"):
        token = getattr(tokenizer, f"{name}_token")
        _check(token == "<|endoftext|>", f"{name}_token is {token!r}, expected <|endoftext|>")
    _check(tokenizer.pad_token_id == 50257, f"pad_token_id is {tokenizer.pad_token_id}")
    print(
        f"size {len(tokenizer)}, special ids {EXPECTED_IDS}, "
        f"{len(specials)} special + {len(timestamps)} timestamp tokens in order, "
        f"model_max_length {tokenizer.model_max_length}, "
        f"pad {tokenizer.pad_token}={tokenizer.pad_token_id} (ok)"
    )

    for text in SAMPLE_TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        _check(auto.encode(text, add_special_tokens=False) == ids, f"AutoTokenizer differs on {text!r}")
        decoded = tokenizer.decode(ids)
        _check(decoded == text, f"round trip changed {text!r} into {decoded!r}")
    print(f"decode(encode(x)) == x for {len(SAMPLE_TEXTS)} English/Hindi/mixed samples (ok)")

    tokenizer.set_prefix_tokens(language="hindi", task="transcribe", predict_timestamps=False)
    ids = tokenizer("नमस्ते").input_ids
    _check(
        ids[:4] == [50258, 50276, 50359, 50363] and ids[-1] == 50257,
        f"Hindi/transcribe/notimestamps labels are {ids}",
    )
    text = tokenizer.decode(ids, skip_special_tokens=True)
    _check(text == "नमस्ते", f"decode(skip_special_tokens=True) gave {text!r}")
    with_time = tokenizer.decode(
        [50258, 50276, 50359, 50364, *ids[4:-1], 50414, 50257], decode_with_timestamps=True
    )
    _check(
        with_time == "<|startoftranscript|><|hi|><|transcribe|><|0.00|>नमस्ते<|1.00|><|endoftext|>",
        f"decode_with_timestamps gave {with_time!r}",
    )
    print(f"set_prefix_tokens(hindi, transcribe, no timestamps): tokenizer('नमस्ते').input_ids = {ids} (ok)")


def verify_against_tiktoken(out: Path, asset: Path) -> None:
    """Compare with OpenAI's tokenizer: tiktoken on the raw asset, set up as openai-whisper's get_encoding.

    The special tokens are matched by id; the plain-text ids must be identical.
    """
    import tiktoken  # optional: only for this check
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(asset))
    _check(
        ranks == read_tiktoken_ranks(asset), "tiktoken reads different ranks from the asset than the build"
    )
    openai_specials = [
        t.replace("<|nocaptions|>", "<|nospeech|>") for t in special_tokens() + timestamp_tokens()
    ]
    encoding = tiktoken.Encoding(
        name="multilingual",
        explicit_n_vocab=len(ranks) + len(openai_specials),
        pat_str=WHISPER_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={token: len(ranks) + i for i, token in enumerate(openai_specials)},
    )
    tokenizer = WhisperTokenizer.from_pretrained(str(out))

    for token, token_id in encoding._special_tokens.items():
        hf_token = "<|nocaptions|>" if token == "<|nospeech|>" else token
        _check(
            tokenizer.convert_tokens_to_ids(hf_token) == token_id, f"{hf_token} is not tiktoken's {token_id}"
        )

    for text in SAMPLE_TEXTS:
        expected = encoding.encode_ordinary(text)
        got = tokenizer.encode(text, add_special_tokens=False)
        _check(got == expected, f"{text!r}: HF ids {got} != tiktoken ids {expected}")
        print(f"  {text!r}: {len(got)} tokens, identical")
    hindi = tokenizer.encode(SAMPLE_TEXTS[0], add_special_tokens=False)
    print(f"  e.g. {SAMPLE_TEXTS[0]!r} -> {hindi}")

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
    _check(
        not mismatches, f"{len(mismatches)} vocabulary strings differ from tiktoken, e.g. {mismatches[:5]!r}"
    )

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
        f"tiktoken {tiktoken.__version__} on the raw asset: same ranks, same ids for all "
        f"{len(encoding._special_tokens)} special/timestamp tokens, {len(SAMPLE_TEXTS)} samples, "
        f"{len(texts)} vocabulary strings and a {len(corpus)}-character corpus (ok)"
    )


def run_tiktoken_check(out: Path, asset: Path, require: bool) -> None:
    if importlib.util.find_spec("tiktoken") is not None:
        verify_against_tiktoken(out, asset)
        return
    if require:
        _fail("tiktoken is not importable")
    uv = shutil.which("uv")
    if uv is None:
        _fail("tiktoken is needed for the comparison: install it temporarily, or pass --skip-tiktoken-check")
    repo_root = Path(__file__).resolve().parents[2]
    cmd = [
        *(uv, "run", "--with", "tiktoken", "python", "-m", "asrkit.assets.build_whisper_tokenizer"),
        *("--verify-only", "--require-tiktoken"),
        *("--tiktoken", str(asset.resolve()), "--out", str(out.resolve())),
    ]
    print("tiktoken is not installed here; re-running the verification with:\n$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=repo_root if (repo_root / "pyproject.toml").is_file() else None)
    _check(proc.returncode == 0, f"verification under `uv run --with tiktoken` failed ({proc.returncode})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiktoken", type=Path, help="local multilingual.tiktoken (default: pip download)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--verify-only", action="store_true", help="only verify an existing --out folder")
    parser.add_argument(
        "--skip-tiktoken-check", action="store_true", help="skip the comparison with tiktoken"
    )
    parser.add_argument("--require-tiktoken", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="whisper_tokenizer_") as tmp:
        need_asset = not args.verify_only or not args.skip_tiktoken_check
        asset: Path | None = args.tiktoken
        if asset is None and need_asset:
            asset = download_asset(Path(tmp))
        if asset is not None:
            check_asset(asset)
        if not args.verify_only:
            assert asset is not None
            build(asset, args.out)
        verify(args.out)
        if not args.skip_tiktoken_check:
            assert asset is not None
            run_tiktoken_check(args.out, asset, require=args.require_tiktoken)
    if not args.verify_only:
        for path in sorted(args.out.iterdir()):
            print(f"{path}: {path.stat().st_size} bytes")
    print("all checks passed")


if __name__ == "__main__":
    main()
