"""A transfer set answered by a teacher: a tiny real RAG model as the teacher."""

import pytest

from keras_ragkd.data.countries import country_questions
from keras_ragkd.rag import RagQuestionAnswerer
from keras_ragkd.rag.teacher_answers import teacher_answered_questions

from .conftest import COUNTRIES
from .conftest import token_rag


@pytest.fixture(scope="module")
def teacher(kb, token_preprocessor):
    passages, _ = kb
    return RagQuestionAnswerer(token_preprocessor, token_rag(token_preprocessor, passages))


def unlabelled_questions():
    return [q for q in country_questions("all", wording="unlabelled")
            if q["country"] in COUNTRIES][:5]


def test_answers_are_the_teachers_and_the_labels_are_dropped(teacher):
    questions = unlabelled_questions()
    expected = teacher.generate([q["question"] for q in questions])
    # Batches of 2 over 5 questions: the last batch is padded, the order kept.
    answered = teacher_answered_questions(teacher, questions, batch_size=2, verbose=1)
    assert [a["answer"] for a in answered] == expected
    for question, entry in zip(questions, answered):
        assert entry == dict(question, answer=entry["answer"])
    # The gold answers never reach the result, even where the teacher is wrong.
    wrong = [q for q, a in zip(questions, expected) if a != q["answer"]]
    assert wrong, "the untrained teacher should miss some answers"
    # The caller's dicts are left as they were.
    assert all("answer" in q for q in questions)


def test_strings_are_answered_too(teacher):
    texts = [q["question"] for q in unlabelled_questions()[:2]]
    answered = teacher_answered_questions(teacher, texts)
    assert [sorted(a) for a in answered] == [["answer", "question"]] * 2
    assert [a["question"] for a in answered] == texts


@pytest.mark.parametrize("questions, error, match", [
    ([], ValueError, r"at least one question.*Received: questions=\[\]"),
    ([{"answer": "Paris"}], TypeError, r"string `\"question\"`.*Received: question="),
    ([7], TypeError, "Received: question="),
])
def test_bad_questions_are_refused(teacher, questions, error, match):
    with pytest.raises(error, match=match):
        teacher_answered_questions(teacher, questions)


def test_batch_size_is_validated(teacher):
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        teacher_answered_questions(teacher, ["Capital of Peru?"], batch_size=0)
