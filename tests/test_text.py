import pytest

from asrkit.data.text import normalize_text, prepare_label_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Devanagari: vowel signs, virama and nukta are combining marks and must survive.
        ("प्राचीन", "प्राचीन"),
        ("प्राचीन भारत में पानी।", "प्राचीन भारत में पानी"),
        ("लड़की, सड़क और बाज़ार!", "लड़की सड़क और बाज़ार"),
        ("गाँव ॥ यहाँ", "गाँव यहाँ"),
        ("क्षेत्र\u200d ज्ञान", "क्षेत्र ज्ञान"),  # zero-width joiner dropped, not a word break
        # Latin: lower case, punctuation and bracketed annotations removed, accents kept.
        ("Hello, World!", "hello world"),
        ("Café  déjà-vu [noise] (laughs)", "café déjà vu"),
        ("It's <unk> fine.", "it s fine"),
        # Mixed scripts and digits.
        ("नमस्ते John, 2024 में!", "नमस्ते john 2024 में"),
        ("   ", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_normalize_keeps_word_count_where_whisper_basic_normaliser_shatters_words() -> None:
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    text = "प्राचीन विद्यालय"
    assert len(BasicTextNormalizer()(text).split()) > 2  # the reference normaliser's failure
    assert normalize_text(text).split() == ["प्राचीन", "विद्यालय"]


def test_normalize_is_nfkc_invariant() -> None:
    decomposed = "क\u093c"  # KA + NUKTA, the canonical form of क़
    composed = "\u0958"
    assert normalize_text(decomposed) == normalize_text(composed)


@pytest.mark.parametrize(
    ("lower", "punct", "expected"),
    [
        (False, False, "Namaste, प्राचीन भारत।"),
        (True, False, "namaste, प्राचीन भारत।"),
        (False, True, "Namaste प्राचीन भारत"),
        (True, True, "namaste प्राचीन भारत"),
    ],
)
def test_prepare_label_text(lower: bool, punct: bool, expected: str) -> None:
    assert prepare_label_text("  Namaste,  प्राचीन भारत। ", lower, punct) == expected


def test_the_normaliser_follows_the_language() -> None:
    from asrkit.data.text import resolve_normalizer, text_normalizer

    assert resolve_normalizer("auto", "en") == "english" and resolve_normalizer("auto", "hi") == "basic"
    assert resolve_normalizer("basic", "en") == "basic"
    assert text_normalizer("english")("He's got 3 colours, hasn't he?") == "he has got 3 colors has not he"
    assert text_normalizer("basic")("प्राचीन भारत।") == "प्राचीन भारत"
    with pytest.raises(ValueError, match="evaluation.normalizer='fr'"):
        resolve_normalizer("fr", "fr")
