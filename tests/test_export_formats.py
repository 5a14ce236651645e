"""python -m asrkit.export format=ct2|onnx on tiny random-init Whisper and CTC models: the folders load in their
runtimes, transcribe as the PyTorch model does, are scored by asrkit.evaluate, and carry a card and parity.json."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Processor

from asrkit.config import compose_config
from asrkit.evaluate import evaluate
from asrkit.export import export
from asrkit.extras import require
from asrkit.train import train
from asrkit.transcribe import transcribe
from tests.conftest import TINY_RUN
from tests.hub_repo import demo_rows
from tests.replicas.whisper import build_whisper_replica
from tests.test_evaluate import _tiny_ctc_export

# eight demo utterances; a random Whisper says at most 8 tokens after its prompt
DATA = ["data=demo", "max_eval_samples=8", "batch_size=4", "generation_max_length=8", "device=cpu"]
PARITY_KEYS = {"data", "split", "utterances", "normalizer", "pytorch", "exported", "wer_delta"}
PARITY_KEYS |= {"identical_transcripts", "speed_ratio"}


def _export(checkpoint: Path, out: Path, *overrides: str) -> Path:
    with contextlib.redirect_stdout(io.StringIO()):
        cfg = compose_config([f"checkpoint={checkpoint}", *DATA, *overrides], out, config_name="export")
        return export(cfg)


def _hypotheses(run: Path, name: str) -> list[str]:
    lines = (run / "parity" / name / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["hypothesis"] for line in lines]


def _check_parity_and_card(folder: Path, fmt: str, quantization: str | None, exact: bool) -> dict:
    """parity.json has every field, the card says what the export is; ``exact``: the same transcripts."""
    parity = json.loads((folder / "parity.json").read_text())
    assert set(parity) == PARITY_KEYS and parity["utterances"] == 8 and parity["split"] == "test"
    for name in ("pytorch", "exported"):
        assert set(parity[name]) == {"wer", "cer", "wer_raw", "audio_seconds_per_second"}
        assert json.loads((folder.parent / "parity" / name / "metrics.json").read_text())["num_samples"] == 8
    assert parity["wer_delta"] == pytest.approx(parity["exported"]["wer"] - parity["pytorch"]["wer"])
    pytorch, exported = _hypotheses(folder.parent, "pytorch"), _hypotheses(folder.parent, "exported")
    assert parity["identical_transcripts"] == sum(a == b for a, b in zip(pytorch, exported, strict=True)) / 8
    if exact:
        assert exported == pytorch and parity["identical_transcripts"] == 1.0 and parity["wer_delta"] == 0
    card = (folder / "README.md").read_text(encoding="utf-8")
    marker = json.loads((folder / "asrkit_export.json").read_text())
    assert marker["format"] == fmt and marker["quantization"] == quantization
    assert f"(`format={fmt}`)" in card and "Source checkpoint" in card and "transformers 5" in card
    assert f"Quantization: {quantization or 'none (float32)'}" in card
    assert f"identical transcripts: {100 * parity['identical_transcripts']:.1f} %" in card
    return parity


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_whisper_replica("multilingual", tmp_path_factory.mktemp("whisper") / "replica")


@pytest.fixture(scope="module")
def whisper_ct2(whisper: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(whisper, tmp_path_factory.mktemp("run"), "format=ct2")


@pytest.fixture(scope="module")
def whisper_onnx(whisper: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(whisper, tmp_path_factory.mktemp("run"), "format=onnx")


def test_a_ct2_whisper_transcribes_as_pytorch_and_loads_in_faster_whisper(whisper_ct2: Path) -> None:
    assert whisper_ct2.name == "ct2" and {"model.bin", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in whisper_ct2.iterdir()
    }
    _check_parity_and_card(whisper_ct2, "ct2", None, exact=True)
    require("faster_whisper", "the test")
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio

    model = WhisperModel(str(whisper_ct2), device="cpu", compute_type="float32")
    audio = decode_audio(demo_rows("test")[0]["file_name"])
    segments, info = model.transcribe(audio, language="hi", beam_size=1, without_timestamps=True)
    assert info.language == "hi" and isinstance([segment.text for segment in segments], list)


def test_an_onnx_whisper_transcribes_as_pytorch_and_transcribe_uses_it(whisper_onnx: Path, tmp_path: Path) -> None:
    require("onnxruntime", "the test")
    import onnxruntime

    graphs = {p.name: onnxruntime.InferenceSession(str(p)) for p in whisper_onnx.glob("*.onnx")}
    assert sorted(graphs) == ["decoder.onnx", "encoder.onnx"]
    assert [i.name for i in graphs["decoder.onnx"].get_inputs()][:3] == ["input_ids", "past_keys", "past_values"]
    _check_parity_and_card(whisper_onnx, "onnx", None, exact=True)
    folder = tmp_path / "audio"
    folder.mkdir()
    for number, row in enumerate(demo_rows("test")[:4]):
        shutil.copy(row["file_name"], folder / f"{number}.flac")
    overrides = [f"checkpoint={whisper_onnx}", f"audio={folder}", "batch_size=4", "generation_max_length=8"]
    with contextlib.redirect_stdout(io.StringIO()):
        results = transcribe(compose_config([*overrides, "language=hi"], tmp_path / "out", "transcribe"))
    assert [r["text"] for r in results] == [text.strip() for text in _hypotheses(whisper_onnx.parent, "pytorch")[:4]]


@pytest.mark.parametrize("fmt", ["ct2", "onnx"])
def test_an_exported_whisper_detects_the_language_as_pytorch_does(fmt: str, request, tmp_path: Path) -> None:
    """language=null: transformers picks the likeliest language token after <|startoftranscript|>."""
    folder = request.getfixturevalue(f"whisper_{fmt}")
    predictions = {}
    for name, checkpoint in (("pytorch", request.getfixturevalue("whisper")), ("exported", folder)):
        overrides = [f"checkpoint={checkpoint}", *DATA, "language=null"]
        with contextlib.redirect_stdout(io.StringIO()):
            evaluate(compose_config(overrides, tmp_path / name, config_name="evaluate"))
        predictions[name] = (tmp_path / name / "predictions.jsonl").read_text(encoding="utf-8")
    assert predictions["exported"] == predictions["pytorch"]


def _lv60_ctc_export(directory: Path) -> Path:
    """A tiny random-init CTC model of the only layout CTranslate2 computes: wav2vec2-large-lv60's front end
    (strides 5,2,2,2,2,2,2), 128-wide positional convolution in 16 groups, pre-norm transformer."""
    export = _tiny_ctc_export(directory)
    vocab_size = Wav2Vec2Config.from_pretrained(export).vocab_size
    config = Wav2Vec2Config(
        vocab_size=vocab_size,
        pad_token_id=0,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[32] * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
    )
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(export)
    Wav2Vec2Processor.from_pretrained(export).save_pretrained(export)
    return export


def test_a_ct2_ctc_model_of_the_lv60_layout_transcribes_as_pytorch(tmp_path: Path) -> None:
    folder = _export(_lv60_ctc_export(tmp_path / "export"), tmp_path / "run", "format=ct2")
    _check_parity_and_card(folder, "ct2", None, exact=True)
    assert any(text.strip() for text in _hypotheses(folder.parent, "exported"))  # the model says something


def test_ct2_refuses_a_ctc_layout_it_would_compute_wrongly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^format=ct2: .*conv_stride=\[5, 64\].*use format=onnx$"):
        _export(_tiny_ctc_export(tmp_path / "export"), tmp_path / "run", "format=ct2")


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_an_onnx_ctc_model_transcribes_as_pytorch(norm: str, tmp_path: Path) -> None:
    """layer: one padded batch with its attention mask; group: each length alone, as the PyTorch decoder."""
    folder = _export(_tiny_ctc_export(tmp_path / "export", norm=norm), tmp_path / "run", "format=onnx")
    _check_parity_and_card(folder, "onnx", None, exact=True)
    require("onnxruntime", "the test")
    import onnxruntime

    names = [i.name for i in onnxruntime.InferenceSession(str(folder / "model.onnx")).get_inputs()]
    assert names == (["input_values", "attention_mask"] if norm == "layer" else ["input_values"])


def test_a_ct2_int8_export_is_smaller_and_scored(tmp_path: Path) -> None:
    source = _lv60_ctc_export(tmp_path / "export")
    full = _export(source, tmp_path / "full", "format=ct2", "parity=false")
    int8 = _export(source, tmp_path / "int8", "format=ct2", "quantization=int8")
    assert int8.name == "ct2-int8" and not (full / "parity.json").exists()
    assert (int8 / "model.bin").stat().st_size < 0.6 * (full / "model.bin").stat().st_size
    _check_parity_and_card(int8, "ct2", "int8", exact=False)


@pytest.mark.slow
def test_an_onnx_int8_export_has_quantized_products_and_is_scored(tmp_path: Path) -> None:
    """onnxruntime's dynamic quantization: int8 weights of the matrix products (the convolutions stay float)."""
    require("onnx", "the test")
    import onnx

    int8 = _export(_lv60_ctc_export(tmp_path / "export"), tmp_path / "int8", "format=onnx", "quantization=int8")
    operators = {node.op_type for node in onnx.load(str(int8 / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= operators
    _check_parity_and_card(int8, "onnx", "int8", exact=False)


def test_export_errors_are_one_line_naming_the_key(tmp_path: Path, whisper: Path) -> None:
    with pytest.raises(ValueError, match=r"^format=tflite: one of ct2 \| onnx$"):
        _export(whisper, tmp_path / "a", "format=tflite")
    with pytest.raises(ValueError, match=r"^quantization=float16: format=onnx takes null \| int8$"):
        _export(whisper, tmp_path / "b", "format=onnx", "quantization=float16")
    with pytest.raises(ValueError, match=r"^quantization=int4: format=ct2 takes null \| int8"):
        _export(whisper, tmp_path / "c", "format=ct2", "quantization=int4")
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "model.onnx").write_bytes(b"")
    for config_name, extra in (("evaluate", "data=demo"), ("transcribe", f"audio={demo_rows('test')[0]['file_name']}")):
        cfg = compose_config([f"checkpoint={neither}", extra], tmp_path / config_name, config_name=config_name)
        with pytest.raises(ValueError, match=r"^checkpoint=.*neither: ONNX graphs without asrkit_export.json"):
            (evaluate if config_name == "evaluate" else transcribe)(cfg)
    (neither / "model.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"^checkpoint=.*neither has no config.json"):
        evaluate(compose_config([f"checkpoint={neither}", "data=demo"], tmp_path / "e", config_name="evaluate"))


def test_exporting_an_export_and_a_missing_runtime_are_refused(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "ct2"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"")
    (folder / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"^checkpoint=.*ct2 is a ct2 export: give the PyTorch export"):
        _export(folder, tmp_path / "run", "format=onnx")
    monkeypatch.setitem(__import__("sys").modules, "ctranslate2", None)  # as if not installed
    with pytest.raises(ImportError, match=r"needs the ctranslate2 package .*pip install 'asrkit\[ct2\]'$"):
        evaluate(compose_config([f"checkpoint={folder}", "data=demo"], tmp_path / "e", config_name="evaluate"))


@pytest.mark.slow
def test_a_lightning_checkpoint_is_exported_through_its_pytorch_export(tmp_path: Path) -> None:
    """checkpoint=<run>/checkpoints/last.ckpt: rebuilt, exported to PyTorch, then converted; parity on the ckpt."""
    run = tmp_path / "train"
    train(compose_config(TINY_RUN, run))
    folder = _export(run / "checkpoints" / "last.ckpt", tmp_path / "run", "format=ct2")
    _check_parity_and_card(folder, "ct2", None, exact=True)
    assert json.loads((folder / "asrkit_export.json").read_text())["source"].endswith("last.ckpt")


@pytest.mark.parametrize("fmt", ["ct2", "onnx"])
def test_audio_past_the_window_is_a_one_line_refusal(fmt: str, request, tmp_path: Path) -> None:
    """Long-form decoding (transformers' sequential windows) is PyTorch's only: an exported Whisper says so."""
    import numpy as np
    import soundfile

    long = np.concatenate([np.zeros(16000 * 31, dtype=np.float32), np.ones(10, dtype=np.float32) * 0.1])
    soundfile.write(tmp_path / "long.wav", long, 16000)
    folder = request.getfixturevalue(f"whisper_{fmt}")
    cfg = compose_config([f"checkpoint={folder}", f"audio={tmp_path / 'long.wav'}"], tmp_path / "out", "transcribe")
    with pytest.raises(ValueError, match=r"^checkpoint=.*: 1 utterance\(s\) longer than Whisper's input window; "):
        transcribe(cfg)


def test_an_onnx_ctc_export_decodes_by_beam_search_and_times_its_words(tmp_path: Path) -> None:
    """decoder=beam and timed formats work on an exported CTC model as on its PyTorch export: beam width 1 is the
    greedy path, and the words of the subtitles are those of the text."""
    source = _tiny_ctc_export(tmp_path / "export")
    folder = _export(source, tmp_path / "run", "format=onnx", "parity=false")
    audio = tmp_path / "audio"
    audio.mkdir()
    for number, row in enumerate(demo_rows("test")[:4]):
        shutil.copy(row["file_name"], audio / f"{number}.flac")
    found = {}
    for name, checkpoint, decoding in (("pytorch", source, []), ("onnx", folder, ["decoder=beam", "beam.width=1"])):
        overrides = [f"checkpoint={checkpoint}", f"audio={audio}", "batch_size=4", "formats=[txt,json,srt]", *decoding]
        with contextlib.redirect_stdout(io.StringIO()):
            found[name] = transcribe(compose_config(overrides, tmp_path / name, "transcribe"))
    texts = {name: [" ".join(r["text"].split()) for r in results] for name, results in found.items()}
    assert texts["onnx"] == texts["pytorch"] and sum(bool(text) for text in texts["onnx"]) >= 2
    for number, text in enumerate(texts["onnx"]):
        timed = json.loads((tmp_path / "onnx" / f"{number}.json").read_text(encoding="utf-8"))
        assert " ".join(" ".join(segment["text"] for segment in timed["segments"]).split()) == text
        starts = [segment["start"] for segment in timed["segments"]]
        assert starts == sorted(starts) and all(segment["end"] <= timed["seconds"] for segment in timed["segments"])
        assert (tmp_path / "onnx" / f"{number}.srt").is_file()


def test_an_onnx_ctc_export_times_the_words_of_its_greedy_path(tmp_path: Path) -> None:
    """Greedy decoding of an exported CTC model (numpy logits) gives timed segments as the PyTorch model does."""
    source = _tiny_ctc_export(tmp_path / "export")
    folder = _export(source, tmp_path / "run", "format=onnx", "parity=false")
    audio = tmp_path / "audio"
    audio.mkdir()
    shutil.copy(demo_rows("test")[0]["file_name"], audio / "0.flac")
    timed = {}
    for name, checkpoint in (("pytorch", source), ("onnx", folder)):
        overrides = [f"checkpoint={checkpoint}", f"audio={audio}", "formats=[json]", "word_timestamps=true"]
        with contextlib.redirect_stdout(io.StringIO()):
            transcribe(compose_config(overrides, tmp_path / name, "transcribe"))
        timed[name] = json.loads((tmp_path / name / "0.json").read_text(encoding="utf-8"))["segments"]
    assert timed["onnx"] == timed["pytorch"]  # the same best path, so the same frames
    assert any(segment.get("words") for segment in timed["onnx"])
