import pytest

from asrkit.metrics import error_rates


def test_perfect_and_punctuation_only_differences() -> None:
    scores = error_rates(["प्राचीन भारत", "Hello world"], ["प्राचीन भारत।", "hello, world"])
    assert scores["wer"] == 0.0 and scores["cer"] == 0.0
    assert scores["wer_raw"] == 50.0  # raw: "भारत।" and "hello," are substitutions, 2 of 4 words
    assert scores["num_samples"] == 2


def test_word_and_character_errors() -> None:
    scores = error_rates(["पानी बहुत अच्छा है"], ["पानी बहुत अच्छी है"])
    assert scores["wer"] == pytest.approx(25.0)
    assert scores["cer"] == pytest.approx(100 / len("पानी बहुत अच्छा है"))


def test_empty_references_are_left_out_of_normalised_scores() -> None:
    scores = error_rates(["[noise]", "घर"], ["कुछ", "घर"])
    assert scores["num_samples"] == 1
    assert scores["wer"] == 0.0


def test_mismatched_lengths_and_no_reference_are_errors() -> None:
    with pytest.raises(ValueError, match="references"):
        error_rates(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="non-empty reference"):
        error_rates([" "], ["x"])
