"""python -m asrkit.lm: a KenLM n-gram of the demo's training transcripts by lmplz and build_binary, and a CTC
export with it that transformers.pipeline decodes with, as asrkit's decoder=beam (lm.path=auto) does."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import soundfile
import torch
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor, WhisperConfig, pipeline

from asrkit import kenlm_tools
from asrkit.config import asset_path
from asrkit.ctc_decoding import UNK_LABEL, DecodingOptions
from asrkit.data.text import prepare_label_text
from asrkit.lm import export_with_lm, main_job
from asrkit.models.ctc import utterance_logits
from asrkit.models.ctc_vocab import build_vocabulary, ctc_tokenizer
from asrkit.recognizer import Recognizer
from asrkit.transcribe import transcribe
from tests.conftest import compose_config, tiny_ctc_config
from tests.hub_repo import demo_rows


def _asrkit_ctc_export(directory: Path) -> Path:
    """A random-init wav2vec2 CTC model with the vocabulary asrkit's CTC training builds from the demo's
    training transcripts (characters, ``|``, ``[UNK]``, ``[PAD]``), saved as asrkit exports it."""
    directory.mkdir(parents=True)
    vocab = build_vocabulary([row["text"] for row in demo_rows("train")])
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = ctc_tokenizer(directory / "vocab.json")
    config = tiny_ctc_config(len(vocab), vocab["[PAD]"])
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(config)
    with torch.no_grad():  # confident outputs, as a trained model's: few symbols per frame for the beams to try
        model.lm_head.weight *= 50
    model.save_pretrained(directory)
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, kenlm_tools_built: None) -> tuple[Path, Path, str]:
    """``python -m asrkit.lm data=demo order=3 export=<a tiny CTC export>``: its output folder, the export and
    what it printed (KenLM's tools built by the fixture where missing)."""
    root = tmp_path_factory.mktemp("lm")
    export = _asrkit_ctc_export(root / "export")
    overrides = ["data=demo", "order=3", f"output={root / 'lm'}", f"export={export}"]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        main_job(compose_config(overrides, root / "run", config_name="lm"))
    return root / "lm", export, printed.getvalue()


def test_the_demo_lm_counts_the_training_transcripts(built: tuple[Path, Path, str]) -> None:
    import kenlm

    out, _, printed = built
    texts = [prepare_label_text(row["text"]) for row in demo_rows("train")]  # demo: no lower-casing, no deletions
    words = sorted({word for text in texts for word in text.split()})
    summary = json.loads((out / "lm.json").read_text(encoding="utf-8"))
    assert summary["order"] == 3 and summary["sentences"] == len(texts) == 480
    assert summary["words"] == sum(len(text.split()) for text in texts) and summary["vocabulary"] == len(words) == 42
    assert summary["ngrams"]["1-grams"] == len(words) + 3  # and <s>, </s>, <unk>
    assert len(words) < summary["ngrams"]["2-grams"] <= summary["ngrams"]["3-grams"] <= summary["words"] + 480
    assert summary["discount_fallback"] is True  # 480 short random sentences: no Kneser-Ney discounts without it
    assert summary["data"]["path"] == "audiofolder" and summary["data"]["train_split"] == "train"
    assert (out / "corpus.txt").read_text(encoding="utf-8").splitlines() == texts
    assert sorted((out / "unigrams.txt").read_text(encoding="utf-8").split()) == words
    arpa, binary = kenlm.Model(str(out / "lm.arpa")), kenlm.Model(str(out / "lm.bin"))
    assert arpa.order == binary.order == 3
    assert binary.score(texts[0]) == pytest.approx(arpa.score(texts[0]), abs=1e-4)
    assert binary.score(texts[0]) > binary.score(" ".join(["अज्ञात"] * len(texts[0].split())))  # unknown words
    assert "3-gram of 480 transcripts (1726 words, 42 distinct)" in printed


def test_the_export_with_the_lm_is_decoded_by_the_pipeline_as_asrkit_decodes_it(
    built: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _, export, printed = built
    with_lm = export.with_name("export-with-lm")
    assert f"export   {with_lm}" in printed
    assert (with_lm / "alphabet.json").is_file() and (with_lm / "language_model" / "lm.bin").is_file()
    attrs = json.loads((with_lm / "language_model" / "attrs.json").read_text())
    assert attrs["alpha"] == 0.5 and attrs["beta"] == 1.5
    recognizer = pipeline("automatic-speech-recognition", model=str(with_lm))
    assert recognizer.type == "ctc_with_lm" and recognizer.decoder._language_model is not None
    files = [row["file_name"] for row in demo_rows("test")[:6]]
    heard = [recognizer({"raw": a, "sampling_rate": r})["text"] for a, r in map(soundfile.read, files)]
    assert sum(bool(text) for text in heard) >= 3
    texts = {}
    configs = {}
    for lm_path in ("auto", "null"):  # the export's own language_model/, and none
        overrides = [f"checkpoint={with_lm}", f"audio=[{','.join(files)}]", "decoder=beam", f"lm.path={lm_path}"]
        configs[lm_path] = compose_config(overrides, tmp_path / lm_path, config_name="transcribe")
        with contextlib.redirect_stdout(io.StringIO()):
            texts[lm_path] = [result["text"] for result in transcribe(configs[lm_path])]
    assert texts["null"] != texts["auto"]  # the n-gram changed what the random model is heard to say
    # asrkit's decoder (lm.path=auto) is the pipeline's (alphabet, n-gram, unigrams, weights; the unknown token
    # written as the tokenizer's), on the same logits and on the files
    asrkit = Recognizer(str(with_lm), device="cpu", decoding=DecodingOptions.from_config(configs["auto"]))
    batch = asrkit.collator()([{"index": 0, "audio": soundfile.read(f)[0], "reference": ""} for f in files])
    inputs = {key: value.float() if value.is_floating_point() else value for key, value in batch["inputs"].items()}
    logits = utterance_logits(
        asrkit.model, inputs["input_values"], torch.tensor(batch["lengths"]), inputs["attention_mask"]
    )
    theirs = [recognizer.decoder.decode_beams(row.numpy())[0][0] for row in logits]  # as the pipeline decodes
    assert [text.replace("[UNK]", UNK_LABEL) for text in asrkit.ctc_decoder(logits)] == theirs == heard
    assert [text.replace("[UNK]", UNK_LABEL) for text in texts["auto"]] == heard


def test_lm_settings_and_inputs_that_cannot_work_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"^order=9: the n of the n-gram, 1-6"):
        main_job(compose_config(["data=demo", "order=9", f"output={tmp_path}"], tmp_path, config_name="lm"))
    with pytest.raises(ValueError, match=r"^discount_fallback=maybe: true, false or auto$"):
        main_job(compose_config(["data=demo", "discount_fallback=maybe"], tmp_path, config_name="lm"))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("ASRKIT_KENLM_BIN", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    message = r"^KenLM's lmplz is neither in .* nor on PATH: build it with `python -m asrkit.kenlm_tools` \(needs"
    with pytest.raises(FileNotFoundError, match=message + ".* libboost-program-options-dev"):
        main_job(compose_config(["data=demo"], tmp_path, config_name="lm"))
    WhisperConfig(architectures=["WhisperForConditionalGeneration"]).save_pretrained(tmp_path / "whisper")
    with pytest.raises(ValueError, match=r"whisper has no CTC head"):
        export_with_lm(tmp_path / "whisper", tmp_path / "lm.bin", tmp_path / "out", 0.5, 1.5)
    with pytest.raises(FileNotFoundError, match=r"^export=.*: no config.json"):
        export_with_lm(tmp_path / "empty", tmp_path / "lm.bin", tmp_path / "out", 0.5, 1.5)


def test_a_download_whose_sha256_differs_from_pypis_is_refused(tmp_path: Path) -> None:
    archive = Path(asset_path("demo_speech")) / "train" / "metadata.csv"  # any file, read through a file:// URL
    with pytest.raises(ValueError, match="SHA-256 .* but PyPI lists 00; not building it"):
        kenlm_tools.download(archive.as_uri(), "00", tmp_path / "kenlm.tar.gz")
