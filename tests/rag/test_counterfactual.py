import pytest

from keras_ragkd.data import country_passages
from keras_ragkd.data import country_questions
from keras_ragkd.data import country_split
from keras_ragkd.rag import counterfactual_augment


def test_counterfactual_passages_carry_the_changed_answers():
    train, test = country_split()
    passages = country_passages()
    questions = country_questions("train")
    new_passages, new_questions = counterfactual_augment(passages, questions, train, 0.5, seed=0)
    assert [p["id"] for p in new_passages] == [p["id"] for p in passages]
    changed = {n["id"] for n, p in zip(new_passages, passages) if n["text"] != p["text"]}
    train_ids = {p["id"] for p in passages if p["title"] in train}
    assert 0.35 < len(changed) / len(train_ids) < 0.65
    assert changed <= train_ids
    text_of = {p["id"]: p["text"] for p in new_passages}
    for question in new_questions:
        # Every answer can be read from (copied out of) its passage.
        if question["type"] != "country_of_capital":
            assert question["answer"] in text_of[question["passage_id"]]
    original_answers = {(q["question"], q["answer"]) for q in questions}
    changed_questions = [q for q in new_questions if q["passage_id"] in changed]
    assert changed_questions
    assert sum((q["question"], q["answer"]) not in original_answers for q in changed_questions) > 0.8 * len(changed_questions)
    # Held-out countries' facts never leak into training passages.
    test_capitals = {p["text"].split(" is ")[-1] for p in passages if p["title"] in test and p["id"].endswith("/capital")}
    assert not any(
        p["text"].split(" is ")[-1] in test_capitals
        for p in new_passages
        if p["id"] in changed and p["id"].endswith("/capital")
    )


def test_fraction_is_validated():
    with pytest.raises(ValueError, match="Received: fraction=2"):
        counterfactual_augment([], [], [], fraction=2)
