"""CTC beam search (asrkit.ctc_decoding): the greedy path at width 1, hotwords, a KenLM n-gram made by lmplz, errors."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2CTCTokenizer, WhisperConfig

from asrkit import kenlm_tools
from asrkit.ctc_decoding import UNK_LABEL, CTCDecoder, DecodingOptions, ctc_labels
from asrkit.evaluate import evaluate
from asrkit.lm import arpa_unigrams, estimate, write_corpus
from asrkit.models.ctc import greedy_decode
from asrkit.models.ctc_vocab import build_vocabulary, ctc_tokenizer
from tests.conftest import compose_config
from tests.test_evaluate import _tiny_ctc_export

SENTENCES = ["the cat sat", "a cot", "my cot is red", "the dog sat", "a red cat"]


def _options(tmp_path: Path, *overrides: str) -> DecodingOptions:
    """The decoder options of conf/evaluate.yaml with ``overrides``."""
    cfg = compose_config(["checkpoint=unused", "data=demo", *overrides], tmp_path / "cfg", config_name="evaluate")
    return DecodingOptions.from_config(cfg)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Wav2Vec2CTCTokenizer:
    """A character tokenizer as asrkit's CTC training builds one: characters, ``|``, ``[UNK]``, ``[PAD]``."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.json"
    path.write_text(json.dumps(build_vocabulary(SENTENCES)))
    return ctc_tokenizer(path)


def _log_probs(tokenizer: Wav2Vec2CTCTokenizer, frames: list[dict[str, float]]) -> np.ndarray:
    """Log-probabilities, one row per frame: the listed symbols with their probabilities, the rest sharing 1e-4;
    ``" "`` is the word delimiter, ``""`` the blank."""
    vocab = tokenizer.get_vocab()
    names = {" ": tokenizer.word_delimiter_token, "": tokenizer.pad_token}
    rows = np.full((len(frames), len(vocab)), 1e-4)
    for row, frame in zip(rows, frames, strict=True):
        for symbol, p in frame.items():
            row[vocab[names.get(symbol, symbol)]] = p
    return np.log(rows / rows.sum(axis=1, keepdims=True))


def _spoken(text: str, doubtful: set[str] = frozenset()) -> list[dict[str, float]]:
    """Frames of ``text``, each character followed by a blank; a ``doubtful`` character is heard as "o" (0.55)
    rather than as itself (0.45), so that greedy decoding hears "the cat sat" as "the cot sot"."""
    frames = []
    for char in text:
        frames.append({"o": 0.55, char: 0.45} if char in doubtful else {char: 0.99})
        frames.append({"": 0.99})
    return frames


def test_the_alphabet_is_the_vocabulary_in_id_order_with_the_processor_with_lm_substitutions(
    tokenizer: Wav2Vec2CTCTokenizer, tmp_path: Path
) -> None:
    from pyctcdecode import build_ctcdecoder
    from transformers import Wav2Vec2ProcessorWithLM

    labels = ctc_labels(tokenizer, len(tokenizer.get_vocab()))
    vocab = tokenizer.get_vocab()
    assert labels[vocab["[PAD]"]] == "" and labels[vocab["|"]] == " " and labels[vocab["[UNK]"]] == UNK_LABEL
    assert labels[vocab["c"]] == "c" and len(labels) == len(set(labels))
    # a hub checkpoint's layout (wav2vec2-base-960h's vocab.json): <pad> the blank, <s> and </s> kept as written
    hub_vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6}
    (tmp_path / "vocab.json").write_text(json.dumps(hub_vocab))
    hub = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"))
    assert ctc_labels(hub, len(hub_vocab)) == ["", "<s>", "</s>", UNK_LABEL, " ", "E", "T"]
    decoder = build_ctcdecoder(ctc_labels(hub, len(hub_vocab)))
    assert Wav2Vec2ProcessorWithLM.get_missing_alphabet_tokens(decoder, hub) == set()
    with pytest.raises(ValueError, match="has 20 outputs, but its tokenizer has no symbol for id 16$"):
        ctc_labels(tokenizer, 20)


def test_beam_search_of_width_one_without_an_lm_follows_the_greedy_path(
    tokenizer: Wav2Vec2CTCTokenizer, tmp_path: Path
) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(n, len(tokenizer.get_vocab()), generator=generator) * 3 for n in (1, 7, 40, 200)]
    beam = CTCDecoder(tokenizer, len(tokenizer.get_vocab()), _options(tmp_path, "decoder=beam", "beam.width=1"))
    greedy = greedy_decode(tokenizer, logits)
    assert sum(bool(text.strip()) for text in greedy) >= 3
    # pyctcdecode writes one space between words where greedy decoding keeps a delimiter, blank, delimiter
    assert beam(logits) == [" ".join(text.split()) for text in greedy]
    assert beam([row.numpy() for row in logits]) == beam(logits)  # arrays or tensors


def test_beam_of_width_one_in_evaluate_gives_greedy_decoding_of_a_ctc_export(tmp_path: Path) -> None:
    export = _tiny_ctc_export(tmp_path / "export")
    hypotheses, decoding = {}, {}
    for decoder in ("greedy", "beam"):
        overrides = [f"checkpoint={export}", "data=demo", "max_eval_samples=12", "batch_size=4", f"decoder={decoder}"]
        with contextlib.redirect_stdout(io.StringIO()):
            cfg = compose_config(overrides + ["beam.width=1"], tmp_path / decoder, config_name="evaluate")
            decoding[decoder] = evaluate(cfg)["decoding"]
        lines = (tmp_path / decoder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        hypotheses[decoder] = [" ".join(json.loads(line)["hypothesis"].split()) for line in lines]
    assert len(hypotheses["beam"]) == 12 and sum(bool(text) for text in hypotheses["greedy"]) >= 6
    assert hypotheses["beam"] == hypotheses["greedy"]
    assert decoding == {
        "greedy": {"decoder": "greedy"},
        "beam": {"decoder": "beam", "width": 1, "hotwords": [], "hotword_weight": 10.0, "lm": None},
    }


def test_hotwords_move_the_beam_to_them(tokenizer: Wav2Vec2CTCTokenizer, tmp_path: Path) -> None:
    logits = [_log_probs(tokenizer, _spoken("the cat sat", doubtful={"a"}))]
    plain = CTCDecoder(tokenizer, len(tokenizer.get_vocab()), _options(tmp_path, "decoder=beam"))
    assert plain(logits) == ["the cot sot"] == [" ".join(t.split()) for t in greedy_decode(tokenizer, logits)]
    hot = _options(tmp_path, "decoder=beam", "beam.hotwords=[cat]")
    assert CTCDecoder(tokenizer, len(tokenizer.get_vocab()), hot)(logits) == ["the cat sot"]
    weightless = _options(tmp_path, "decoder=beam", "beam.hotwords=[cat]", "beam.hotword_weight=0")
    assert CTCDecoder(tokenizer, len(tokenizer.get_vocab()), weightless)(logits) == ["the cot sot"]


def test_beam_search_times_the_words_of_its_own_text(tokenizer: Wav2Vec2CTCTokenizer, tmp_path: Path) -> None:
    """Subtitles of a beam-decoded file carry the beam's words (here a hotword greedy decoding never writes), timed
    by the frames pyctcdecode kept for them: each of "the cat sat" spans its 3 letters and their blanks."""
    logits = [_log_probs(tokenizer, _spoken("the cat sat", doubtful={"a"}))]
    hot = CTCDecoder(tokenizer, len(tokenizer.get_vocab()), _options(tmp_path, "decoder=beam", "beam.hotwords=[cat]"))
    [(text, words)] = hot.timed(logits, seconds_per_frame=0.02)
    assert text == "the cat sot" == hot(logits)[0]
    assert [word["word"] for word in words] == ["the", "cat", "sot"]
    starts = [word["start"] for word in words]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert all(0.02 * 4 <= word["end"] - word["start"] <= 0.02 * 6 for word in words)  # 3 letters + blanks
    assert words[1]["start"] == pytest.approx(0.02 * 8)  # after "the" and a space, each with its blank


def test_the_unknown_token_is_written_as_the_tokenizer_writes_it(
    tokenizer: Wav2Vec2CTCTokenizer, tmp_path: Path
) -> None:
    frames = _spoken("the ") + [{"[UNK]": 0.99}, {"": 0.99}]
    beam = CTCDecoder(tokenizer, len(tokenizer.get_vocab()), _options(tmp_path, "decoder=beam"))
    assert (
        beam([_log_probs(tokenizer, frames)])
        == ["the [UNK]"]
        == greedy_decode(tokenizer, [_log_probs(tokenizer, frames)])
    )


@pytest.fixture(scope="module")
def trigram(tmp_path_factory: pytest.TempPathFactory, kenlm_tools_built: None) -> Path:
    """A 3-gram by KenLM's lmplz and build_binary (built by the fixture where missing) of a
    corpus where "cat" follows "the" and "cot" never does: lm.arpa, lm.bin and unigrams.txt."""
    out = tmp_path_factory.mktemp("lm")
    write_corpus(SENTENCES[:1] * 30 + SENTENCES[1:] * 3, out / "corpus.txt")
    assert estimate(out / "corpus.txt", out / "lm.arpa", 3, "auto", "10%")  # too small for Kneser-Ney discounts
    build_binary = kenlm_tools.tool("build_binary")
    subprocess.run([str(build_binary), str(out / "lm.arpa"), str(out / "lm.bin")], check=True, capture_output=True)
    (out / "unigrams.txt").write_text("\n".join(arpa_unigrams(out / "lm.arpa")) + "\n")
    return out


@pytest.mark.parametrize("model", ["lm.arpa", "lm.bin"])
def test_an_lm_that_prefers_a_word_sequence_moves_the_beam_to_it(
    trigram: Path, model: str, tokenizer: Wav2Vec2CTCTokenizer, tmp_path: Path
) -> None:
    assert sorted(arpa_unigrams(trigram / "lm.arpa")) == sorted({w for s in SENTENCES for w in s.split()})
    logits = [_log_probs(tokenizer, _spoken("the cat sat", doubtful={"a"}))]
    with_lm = _options(tmp_path, "decoder=beam", f"lm.path={trigram / model}")
    decoder = CTCDecoder(tokenizer, len(tokenizer.get_vocab()), with_lm)
    assert decoder.language_model.unigrams is None if model == "lm.arpa" else len(decoder.language_model.unigrams) == 9
    assert decoder(logits) == ["the cat sat"]  # greedy: "the cot sot"
    unweighted = _options(tmp_path, "decoder=beam", f"lm.path={trigram / model}", "lm.alpha=0", "lm.beta=0")
    # without the LM's probabilities, words outside its vocabulary ("sot") are still refused (unk_score_offset)
    assert CTCDecoder(tokenizer, len(tokenizer.get_vocab()), unweighted)(logits) != ["the cat sat"]


def test_decoder_settings_that_cannot_work_are_one_line_errors_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^decoder=bem: one of greedy, beam$"):
        _options(tmp_path, "decoder=bem")
    with pytest.raises(ValueError, match=r"^beam.width=0"):
        _options(tmp_path, "decoder=beam", "beam.width=0")
    with pytest.raises(ValueError, match=r"^lm.path is used by beam search only: add decoder=beam$"):
        _options(tmp_path, "lm.path=lm.bin")
    with pytest.raises(ValueError, match=r"^beam.hotwords is used by beam search only"):
        _options(tmp_path, "beam.hotwords=[cat]")
    with pytest.raises(ValueError, match=r"^lm.alpha is used by beam search only"):
        _options(tmp_path, "lm.alpha=0")
    assert _options(tmp_path, "lm.path=auto").decoder == "greedy"  # the default: nothing to use
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(_tiny_ctc_export(tmp_path / "export"))
    with pytest.raises(FileNotFoundError, match=r"^lm.path=/nowhere/lm.bin: no such file"):
        CTCDecoder(tokenizer, 8, _options(tmp_path, "decoder=beam", "lm.path=/nowhere/lm.bin"))
    with pytest.raises(ValueError, match=r"^lm.alpha=0.8 but there is no language model: set lm.path$"):
        CTCDecoder(tokenizer, 8, _options(tmp_path, "decoder=beam", "lm.path=null", "lm.alpha=0.8"))
    WhisperConfig(architectures=["WhisperForConditionalGeneration"]).save_pretrained(tmp_path / "whisper")
    overrides = [f"checkpoint={tmp_path / 'whisper'}", "data=demo", "decoder=beam"]
    with pytest.raises(ValueError, match=r"^decoder=beam: beam search over CTC outputs, .* use num_beams"):
        evaluate(compose_config(overrides, tmp_path / "out", config_name="evaluate"))
