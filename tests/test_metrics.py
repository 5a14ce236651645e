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


def test_english_is_scored_with_whispers_english_normaliser() -> None:
    """Numbers, British spellings and titles standardised (the Whisper paper, the Open ASR Leaderboard)."""
    reference = ["Mr. Smith paid twenty dollars for the colour TV."]
    hypothesis = ["mister smith paid $20 for the color tv"]
    assert error_rates(reference, hypothesis, normalizer="english")["wer"] == 0.0
    assert error_rates(reference, hypothesis, normalizer="basic")["wer"] > 40.0  # what English used to get


def test_an_unknown_token_inside_a_word_is_one_wrong_word() -> None:
    """``[UNK]`` is bracketed like an annotation; dropping it as one used to split the word in two."""
    scores = error_rates(["woяd fine"], ["wo[UNK]d fine"], unknown="[UNK]")
    assert scores["wer"] == 50.0 and scores["wer_raw"] == 50.0
    assert scores["cer"] == pytest.approx(100 / len("woяd fine"))
    assert error_rates(["woяd fine"], ["wo[UNK]d fine"])["wer"] == 100.0  # without telling the token
