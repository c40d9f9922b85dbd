import pytest

from keras_ragkd.rag.metrics import answer_scores
from keras_ragkd.rag.metrics import exact_match
from keras_ragkd.rag.metrics import normalize_answer
from keras_ragkd.rag.metrics import token_f1


def test_normalize_answer_strips_case_punctuation_articles():
    assert normalize_answer("  The Hague, ") == "hague"
    assert normalize_answer("Port-au-Prince") == "portauprince"


def test_exact_match_and_f1():
    assert exact_match("paris", "Paris.") == 1.0
    assert exact_match("lyon", "Paris") == 0.0
    assert token_f1("new delhi", "New Delhi") == 1.0
    assert token_f1("delhi", "New Delhi") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0
    assert token_f1("rome", "") == 0.0


def test_answer_scores_and_errors():
    scores = answer_scores(["paris", "delhi"], ["Paris", "New Delhi"])
    assert scores["exact_match"] == 0.5
    assert scores["token_f1"] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="Received: len"):
        answer_scores(["a"], [])
    with pytest.raises(TypeError, match="Received: text=3"):
        normalize_answer(3)


def test_accents_are_ignored():
    assert exact_match("bogota", "Bogotá") == 1.0
