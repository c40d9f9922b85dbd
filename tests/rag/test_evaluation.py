"""The shared evaluation helpers, on a tiny real RAG model."""

import numpy as np
import pytest

from keras_ragkd.rag import RagQuestionAnswerer
from keras_ragkd.rag.evaluation import answer_questions
from keras_ragkd.rag.evaluation import compare_latency
from keras_ragkd.rag.evaluation import evaluate_answers
from keras_ragkd.rag.evaluation import exact_match_by_type
from keras_ragkd.rag.evaluation import follow_rate
from keras_ragkd.rag.evaluation import latency_per_question
from keras_ragkd.rag.evaluation import retrieval_recall
from keras_ragkd.rag.evaluation import sample_questions
from keras_ragkd.rag.evaluation import score_answers
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import TfidfEncoder

from .conftest import token_rag

QUESTIONS = [
    {"question": "What is the capital of France?", "answer": "Paris", "type": "capital"},
    {"question": "What is the capital of Peru?", "answer": "Lima", "type": "capital"},
    {"question": "What is the currency of Japan?", "answer": "JPY", "type": "currency"},
]


def test_scores_overall_by_type_and_examples():
    scores = score_answers(QUESTIONS, ["paris", "lima city", "JPY"], num_examples=2)
    assert scores["exact_match"] == pytest.approx(2 / 3)
    assert scores["token_f1"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert scores["by_type"] == {"capital": 0.5, "currency": 1.0}
    assert scores["examples"] == [
        {"question": QUESTIONS[0]["question"], "gold": "Paris", "predicted": "paris"},
        {"question": QUESTIONS[1]["question"], "gold": "Lima", "predicted": "lima city"},
    ]
    assert exact_match_by_type(QUESTIONS, ["x", "lima", "y"]) == {"capital": 0.5, "currency": 0.0}
    with pytest.raises(ValueError, match="Received: len"):
        score_answers(QUESTIONS, ["paris"])


def test_sample_is_the_benchmarks_draw():
    questions = [{"question": str(i), "answer": str(i)} for i in range(50)]
    rng = np.random.RandomState(3)
    expected = [questions[i] for i in sorted(rng.choice(50, 10, replace=False))]
    assert sample_questions(questions, 10, seed=3) == expected
    assert sample_questions(questions, 0) == questions
    assert sample_questions(questions, 80) == questions


def test_follow_rate():
    swapped = [{"answer": "Lima", "original_answer": "Paris"},
               {"answer": "Paris", "original_answer": "Lima"}]
    assert follow_rate(swapped, ["lima", "lima"]) == 0.5
    assert follow_rate(swapped, ["lima", "lima"], key="original_answer") == 0.5
    with pytest.raises(ValueError, match="must not be empty"):
        follow_rate([], [])


@pytest.fixture(scope="module")
def tiny_model(kb, token_preprocessor):
    passages, _ = kb
    rag = token_rag(token_preprocessor, passages, num_docs=2)
    return RagQuestionAnswerer(token_preprocessor, rag)


def test_model_helpers_match_generate(tiny_model, kb):
    _, questions = kb
    questions = questions[:5]
    expected = tiny_model.generate([q["question"] for q in questions])
    assert answer_questions(tiny_model, questions, batch_size=2, verbose=1) == expected
    scores = evaluate_answers(tiny_model, questions, batch_size=2)
    assert scores["count"] == 5 and scores["seconds_per_question"] > 0
    assert scores["exact_match"] == score_answers(questions, expected)["exact_match"]
    assert latency_per_question(tiny_model, questions[:2]) > 0
    latencies = compare_latency({"a": tiny_model, "b": tiny_model}, questions[:2])
    assert set(latencies) == {"a", "b"} and min(latencies.values()) > 0
    with pytest.raises(ValueError, match="must not be empty"):
        latency_per_question(tiny_model, [])


def test_retrieval_recall_on_an_index():
    texts = ["Paris is the capital of France", "Lima is the capital of Peru",
             "Tokyo is the capital of Japan", "The yen is the currency of Japan"]
    passages = [{"id": f"p{i}", "text": text} for i, text in enumerate(texts)]
    index = PassageIndex.build(passages, TfidfEncoder(dim=3).fit(texts), verbose=0)
    found = index.search(["Paris France", "Lima Peru"], k=1).passage_ids
    questions = [{"question": "Paris France", "passage_id": found[0][0]},
                 {"question": "Lima Peru", "passage_id": "elsewhere"}]
    assert retrieval_recall(index, questions, k=1) == 0.5
    assert retrieval_recall(index, questions[:1], k=4) == 1.0
