"""Long-form transcription with timestamps: subtitle writers, CTC windows stitched, Whisper's segments, and a
two-minute file transcribed end to end into SRT/WebVTT/JSON by both model families."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hydra.utils import instantiate
from transformers import (
    GenerationConfig,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

from asrkit.longform import ctc_logits, ctc_words, decode_ctc, group_words, plan_windows
from asrkit.recognizer import Recognizer
from asrkit.subtitles import check_formats, clean_segments, format_timestamp, to_srt, to_vtt
from asrkit.timed import transcribe_timed
from asrkit.transcribe import transcribe
from tests.conftest import compose_config, tiny_ctc_config
from tests.hub_repo import demo_rows

RATE = 16_000


# subtitle writers -----------------------------------------------------------------------------------------
def test_timestamps_in_srt_and_vtt_form() -> None:
    assert format_timestamp(0) == "00:00:00,000"
    assert format_timestamp(3661.5) == "01:01:01,500"
    assert format_timestamp(59.9996, ".") == "00:01:00.000"  # rounded to the millisecond, carried over
    assert format_timestamp(-0.2) == "00:00:00,000"


def test_srt_and_vtt_documents() -> None:
    segments = [{"start": 0.0, "end": 1.25, "text": "one"}, {"start": 1.5, "end": 62.0, "text": "two three"}]
    assert to_srt(segments) == (
        "1\n00:00:00,000 --> 00:00:01,250\none\n\n2\n00:00:01,500 --> 00:01:02,000\ntwo three\n"
    )
    assert to_vtt(segments) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.250\none\n\n00:00:01.500 --> 00:01:02.000\ntwo three\n"
    )
    assert to_srt([]) == "" and to_vtt([]) == "WEBVTT\n\n"


def test_segments_are_clipped_ordered_and_never_empty() -> None:
    raw = [
        {"start": -0.5, "end": 2.0, "text": " a ", "words": [{"start": -1.0, "end": 1.0, "word": "a"}]},
        {"start": 1.5, "end": 3.0, "text": "b", "words": [{"start": 1.5, "end": 2.5, "word": "b"}]},  # overlaps
        {"start": 3.0, "end": 4.0, "text": "  ", "words": []},  # empty: dropped
        {"start": 2.5, "end": 2.8, "text": "c", "words": [{"start": 2.5, "end": 2.8, "word": "c"}]},  # goes back
        {"start": 4.0, "end": 9.0, "text": "d", "words": [{"start": 4.0, "end": 9.0, "word": "d"}]},  # past the end
    ]
    cleaned = clean_segments(raw, duration=5.0)
    assert [(s["start"], s["end"], s["text"]) for s in cleaned] == [(0.0, 2.0, "a"), (2.0, 3.0, "b c"), (4.0, 5.0, "d")]
    assert cleaned[0]["words"] == [{"start": 0.0, "end": 1.0, "word": "a"}]
    assert [w["word"] for w in cleaned[1]["words"]] == ["b", "c"]  # the squeezed segment's words join its text
    assert all(s["start"] <= w["start"] <= w["end"] <= s["end"] for s in cleaned for w in s["words"])
    assert "words" not in clean_segments([{"start": 0, "end": 1, "text": "x"}], 2.0)[0]


def test_unknown_format_is_named() -> None:
    assert check_formats(["SRT", "json"]) == ["srt", "json"] and check_formats("vtt") == ["vtt"]
    with pytest.raises(ValueError, match=r"formats=.*ass unknown"):
        check_formats(["srt", "ass"])


def test_word_timestamps_need_a_format_that_holds_them(tmp_path) -> None:
    overrides = ["checkpoint=unused", f"audio={tmp_path}", "formats=[txt]", "word_timestamps=true"]
    with pytest.raises(ValueError, match=r"word_timestamps=true: formats=\['txt'\] has none"):
        transcribe(compose_config(overrides, tmp_path / "out", config_name="transcribe"))
    with pytest.raises(ValueError, match="formats=.*ass unknown"):
        transcribe(
            compose_config(
                ["checkpoint=unused", f"audio={tmp_path}", "formats=ass"], tmp_path, config_name="transcribe"
            )
        )


# CTC: windows, stitching, word times ------------------------------------------------------------------------
@pytest.mark.parametrize("num_samples", [RATE * 20 + 123, RATE * 4, 5000])
def test_windows_keep_every_frame_once_with_context(num_samples: int) -> None:
    ratio, chunk, context = 320, 4 * RATE, RATE // 2
    frames = (num_samples - 400) // ratio + 1
    windows = plan_windows(num_samples, frames, ratio, chunk, context)
    assert windows[0].keep_from == 0 and windows[-1].keep_to == frames and windows[-1].stop == num_samples
    assert all(a.keep_to == b.keep_from for a, b in zip(windows, windows[1:], strict=False))
    for window in windows:
        assert window.start % ratio == 0 and 0 <= window.start < window.stop <= num_samples
        assert window.stop - window.start <= chunk + ratio
        if window.keep_from:  # context heard before the kept frames, and after them unless at the end
            assert window.keep_from * ratio - window.start >= context
        if window.keep_to < frames:
            assert window.stop - window.keep_to * ratio >= context
    with pytest.raises(ValueError, match="chunk_length_s must be more than twice stride_length_s"):
        plan_windows(num_samples, frames, ratio, RATE, RATE // 2)


def _characters() -> list[str]:
    return sorted({char for row in demo_rows("test") for char in row["text"] if char != " "})


def _ctc_export(directory: Path, layers: int) -> Path:
    """A random-init wav2vec2 CTC model (layer-norm front end, attention mask) with the demo's characters;
    ``layers`` 0: no self-attention, so it hears a few frames around each one (positional conv: 16 frames)."""
    directory.mkdir(parents=True)
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2} | {char: i + 3 for i, char in enumerate(_characters())}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(directory / "vocab.json"), word_delimiter_token="|")
    config = tiny_ctc_config(len(vocab), 0, num_hidden_layers=layers, feat_extract_norm="layer")
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(directory)
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def _joined(seconds: float) -> tuple[np.ndarray, list[str]]:
    """Demo test utterances one after another until ``seconds`` of audio, and their texts."""
    clips, texts = [], []
    for row in demo_rows("test"):
        audio, rate = soundfile.read(row["file_name"], dtype="float32")
        assert rate == RATE
        clips.append(audio)
        texts.append(row["text"])
        if sum(map(len, clips)) >= seconds * RATE:
            break
    return np.concatenate(clips), texts


def test_stitched_windows_give_the_whole_file_logits_of_a_model_that_hears_little_context(tmp_path) -> None:
    recognizer = Recognizer(str(_ctc_export(tmp_path / "ctc", layers=0)), device="cpu")
    audio, _ = _joined(20)
    batch = recognizer.collator()([{"index": 0, "audio": audio, "reference": ""}])
    inputs, lengths = batch["inputs"], batch["lengths"]
    model = recognizer.model
    whole = ctc_logits(model, inputs["input_values"], lengths, inputs["attention_mask"], None, 0.0, RATE)[0]
    windows = ctc_logits(model, inputs["input_values"], lengths, inputs["attention_mask"], 4.0, 0.5, RATE)[0]
    ratio = model.config.inputs_to_logits_ratio
    assert len(plan_windows(len(audio), len(whole), ratio, 4 * RATE, RATE // 2)) >= 5
    assert windows.shape == whole.shape
    torch.testing.assert_close(windows, whole, atol=1e-4, rtol=1e-4)
    tokenizer = recognizer.processor.tokenizer
    assert decode_ctc(tokenizer, [windows]) == decode_ctc(tokenizer, [whole])
    assert decode_ctc(tokenizer, [whole])[0].strip(), "the random model says something"
    # without context the windows' edges hear padding instead of their neighbours: not the same logits
    blind = ctc_logits(model, inputs["input_values"], lengths, inputs["attention_mask"], 4.0, 0.0, RATE)[0]
    assert blind.shape == whole.shape and not torch.allclose(blind, whole, atol=1e-4)


def test_recognizer_chunks_only_files_longer_than_the_window(tmp_path) -> None:
    export = _ctc_export(tmp_path / "ctc", layers=1)
    audio, _ = _joined(12)
    short = audio[: 3 * RATE]
    whole = Recognizer(str(export), device="cpu").transcribe([short, audio], batch_size=2)
    chunked = Recognizer(str(export), device="cpu", chunk_length_s=6.0, stride_length_s=1.0)
    texts = chunked.transcribe([short, audio], batch_size=2)
    assert texts[0] == whole[0]  # within the window: heard whole, as before
    assert texts[1] and len(texts[1].split()) >= 0.5 * len(whole[1].split())


def test_ctc_word_times_come_from_the_greedy_path(tmp_path) -> None:
    export = _ctc_export(tmp_path / "ctc", layers=0)
    tokenizer = Recognizer(str(export), device="cpu").processor.tokenizer
    a, b, c = (tokenizer.convert_tokens_to_ids(char) for char in _characters()[:3])
    blank, space = tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("|")
    path = [blank, a, a, b, blank, space, blank, blank, blank, c, c, blank]  # "ab c": ab at 1-3, c at 9-10
    logits = torch.nn.functional.one_hot(torch.tensor(path), len(tokenizer)).float()
    words = ctc_words(tokenizer, logits, seconds_per_frame=0.02)
    expected = [(0.02, 0.08, _characters()[0] + _characters()[1]), (0.18, 0.22, _characters()[2])]
    assert [(pytest.approx(w["start"]), pytest.approx(w["end"]), w["word"]) for w in words] == expected
    assert decode_ctc(tokenizer, [logits]) == [" ".join(w["word"] for w in words)]


def test_words_are_grouped_at_pauses_and_at_the_longest_segment() -> None:
    words = [{"start": s, "end": s + 0.3, "word": f"w{i}"} for i, s in enumerate([0.0, 0.4, 0.8, 2.0, 2.4, 2.8, 3.2])]
    segments = group_words(words, max_seconds=1.0, max_pause=0.5, keep_words=False)
    assert [(s["start"], s["text"]) for s in segments] == [(0.0, "w0 w1"), (0.8, "w2"), (2.0, "w3 w4"), (2.8, "w5 w6")]
    assert all("words" not in s for s in segments)
    assert group_words(words, 10.0, 0.5, keep_words=True)[1]["words"] == words[3:]


# Whisper ----------------------------------------------------------------------------------------------------
def _whisper_export(tmp_path: Path, window_positions: int, timestamps: bool = True) -> Path:
    """A random-init Whisper (the demo's tokenizer and prompt, shrunk) with a window of ``window_positions``
    encoder positions (150 = 3 s, the demo's), exported as asrkit exports it. ``timestamps`` false: like a
    model fine-tuned with ``<|notimestamps|>``, it predicts none (every timestamp token suppressed in its
    generation config but ``<|0.00|>``, the one long-form decoding forces first)."""
    overrides = [
        "experiment=demo",
        "model.generation_max_length=16",
        "model.random_init.d_model=64",
        "model.random_init.encoder_layers=1",
        "model.random_init.decoder_layers=1",
        "model.random_init.encoder_ffn_dim=128",
        "model.random_init.decoder_ffn_dim=128",
        f"model.random_init.max_source_positions={window_positions}",
    ]
    torch.manual_seed(0)
    cfg = compose_config(overrides, tmp_path / "run")
    module = instantiate(cfg.model, optimizer=cfg.optimizer, _recursive_=False).eval()
    module.export(tmp_path / "whisper")
    if not timestamps:
        config = GenerationConfig.from_pretrained(tmp_path / "whisper")
        first = config.no_timestamps_token_id + 2  # <|0.02|>
        config.suppress_tokens = [*(config.suppress_tokens or []), *range(first, module.model.config.vocab_size)]
        config.save_pretrained(tmp_path / "whisper")
    return tmp_path / "whisper"


def test_whisper_segments_keep_the_texts_and_follow_each_other(tmp_path) -> None:
    export = _whisper_export(tmp_path, 150)
    recognizer = Recognizer(str(export), device="cpu", language="hi", generation_max_length=None)
    long, _ = _joined(10)
    short = long[: 2 * RATE]
    waveforms = [short, long]
    texts = recognizer.transcribe(waveforms, batch_size=2)  # what transcripts.txt and evaluation say
    timed = transcribe_timed(recognizer, waveforms, batch_size=2)
    assert [result["text"] for result in timed] == texts
    for audio, result in zip(waveforms, timed, strict=True):
        duration = len(audio) / RATE
        segments = result["segments"]
        assert segments and all(s["text"] for s in segments)
        assert all(
            0 <= a["start"] < a["end"] <= b["start"] < b["end"] for a, b in zip(segments, segments[1:], strict=False)
        )
        assert segments[-1]["end"] <= duration
    assert len(timed[0]["segments"]) == 1 and timed[0]["segments"][0]["end"] == pytest.approx(2.0)
    assert len(timed[1]["segments"]) >= 3  # one per 3 s window at least, as decoding moved on

    with pytest.raises(ValueError, match=r"no generation_config.alignment_heads.*set alignment_heads="):
        transcribe_timed(recognizer, waveforms, batch_size=2, word_timestamps=True)
    with pytest.raises(ValueError, match=r"alignment_heads=\[\[3, 0\]\]: .* 1 decoder layers"):
        transcribe_timed(recognizer, waveforms, batch_size=2, word_timestamps=True, alignment_heads=[[3, 0]])
    worded = transcribe_timed(recognizer, waveforms, 2, word_timestamps=True, alignment_heads=[[0, 0], [0, 1]])
    for result in worded:
        for segment in result["segments"]:
            assert segment["words"] and all(
                segment["start"] <= w["start"] <= w["end"] <= segment["end"] for w in segment["words"]
            )
            assert "".join(w["word"] for w in segment["words"]) == segment["text"].replace(" ", "")


# a two-minute file, end to end ------------------------------------------------------------------------------
SRT_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+)\n")


def _srt_times(text: str) -> list[tuple[float, float]]:
    cues = SRT_CUE.findall(text)
    assert cues and "".join(f"{m.group(0)}\n" for m in SRT_CUE.finditer(text)).rstrip("\n") == text.rstrip("\n")
    assert [int(cue[0]) for cue in cues] == list(range(1, len(cues) + 1))

    def seconds(h: str, m: str, s: str, ms: str) -> float:
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    return [(seconds(*cue[1:5]), seconds(*cue[5:9])) for cue in cues]


@pytest.mark.parametrize("family", ["ctc", "whisper"])
def test_a_two_minute_file_is_transcribed_into_subtitles(tmp_path, family: str) -> None:
    audio, _ = _joined(120)
    duration = len(audio) / RATE
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "talk.flac", audio, RATE)
    if family == "ctc":
        export = _ctc_export(tmp_path / "ctc", layers=1)
    else:  # a 30 s window that predicts no timestamps: windows of 30 s, as the demo model's windows of 3 s
        export = _whisper_export(tmp_path, 1500, timestamps=False)
    overrides = [f"checkpoint={export}", f"audio={folder}", "formats=[txt,json,srt,vtt]", "device=cpu"]
    overrides += ["chunk_length_s=20", "stride_length_s=2", "generation_max_length=24", "language=hi"]
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        results = transcribe(compose_config(overrides, out, config_name="transcribe"))
    assert [Path(r["file"]).name for r in results] == ["talk.flac"] and results[0]["seconds"] == duration
    assert (out / "transcripts.txt").read_text(encoding="utf-8") == f"{folder / 'talk.flac'}\t{results[0]['text']}\n"
    document = json.loads((out / "talk.json").read_text(encoding="utf-8"))
    assert document["text"] == results[0]["text"] and document["segments"]

    times = _srt_times((out / "talk.srt").read_text(encoding="utf-8"))
    assert len(times) == len(document["segments"]) >= 4
    assert all(0 <= start < end for start, end in times)
    assert all(a[1] <= b[0] for a, b in zip(times, times[1:], strict=False))  # never overlapping, never going back
    assert times[-1][1] <= duration + 0.0005  # within the file (SRT rounds to the millisecond)
    if family == "whisper":  # windows that follow each other from 0 to the end of the file
        assert times[0][0] == 0 and times[-1][1] == pytest.approx(duration, abs=0.0005)
        assert all(a[1] == b[0] for a, b in zip(times, times[1:], strict=False))
        assert len(times) == int(duration // 30) + 1 and all(end - start == 30 for start, end in times[:-1])
    else:  # the random model's words: it emits symbols on most frames, so they span the file up to the
        # first and last utterance's silence (the demo clips are 0.8-2.4 s long)
        assert times[0][0] < 1.0 and duration - 2.5 < times[-1][1]
        # max_segment_seconds: only a single word (the random model's run-on strings) lasts longer
        assert all(s["end"] - s["start"] <= 10.0 or " " not in s["text"] for s in document["segments"])
    vtt = (out / "talk.vtt").read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(times)
