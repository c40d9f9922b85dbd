import collections

import pytest

from keras_ragkd.data import country_passages
from keras_ragkd.data import country_questions
from keras_ragkd.data import country_split
from keras_ragkd.data import counterfactual_augment


def capitals_named(passages):
    """The capital names that the capital passages state, with repeats."""
    return collections.Counter(
        p["text"].rstrip(".").split(" is ", 1)[1] for p in passages if p["id"].endswith("/capital")
    )


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
    # Held-out countries' facts never leak into training passages (a capital
    # both a training and a held-out country name, e.g. Naypyidaw, may move).
    def capitals(titles):
        return set(capitals_named(p for p in passages if p["title"] in titles))

    held_out_only = capitals(test) - capitals(train)
    assert held_out_only
    assert not set(capitals_named(p for p in new_passages if p["id"] in changed)) & held_out_only


def test_changed_facts_keep_a_single_answer():
    train, _ = country_split()
    passages = country_passages()
    new_passages, new_questions = counterfactual_augment(
        passages, country_questions("train"), train, 0.5, seed=1
    )
    # Facts rotate: every training capital is named by one capital passage,
    # so "X is the capital of which country?" has one answer.
    assert capitals_named(new_passages) == capitals_named(passages)
    assert new_passages != passages
    text_of = {p["id"]: p["text"] for p in new_passages}
    for question in new_questions:
        if question["type"] == "country_of_capital":
            assert question["answer"] in text_of[question["passage_id"]]


def test_names_inside_facts_are_never_renamed():
    passages = [
        {"id": "mx/capital", "title": "Mexico", "text": "The capital of Mexico is Mexico City."},
        {"id": "pe/capital", "title": "Peru", "text": "The capital of Peru is Lima."},
        {"id": "fr/capital", "title": "France", "text": "The capital of France is Paris."},
        {"id": "sd/location", "title": "Sudan", "text": "Sudan borders South Sudan."},
        {"id": "td/location", "title": "Chad", "text": "Chad borders Libya."},
    ]
    questions = [
        {
            "question": f"What is the capital of {p['title']}?",
            "answer": p["text"][:-1].split(" is ")[1],
            "passage_id": p["id"],
        }
        for p in passages[:3]
    ]
    new_passages, new_questions = counterfactual_augment(
        passages, questions, ["Mexico", "Peru", "France", "Sudan", "Chad"], fraction=1.0
    )
    texts = [p["text"] for p in new_passages]
    assert texts[0] == "The capital of Mexico is Mexico City."
    assert sorted(texts[1:3]) == ["The capital of France is Lima.", "The capital of Peru is Paris."]
    assert texts[3:] == ["Sudan borders South Sudan.", "Chad borders Libya."]
    assert {q["answer"] for q in new_questions} == {"Mexico City", "Lima", "Paris"}


def test_fraction_is_validated():
    with pytest.raises(ValueError, match="Received: fraction=2"):
        counterfactual_augment([], [], [], fraction=2)


def test_derange_facts_changes_every_held_out_capital():
    from keras_ragkd.data.counterfactual import derange_facts

    _, test = country_split()
    passages = country_passages()
    questions = country_questions("test", types=["capital"])
    new_passages, new_questions = derange_facts(passages, questions, test, seed=0)
    assert [p["id"] for p in new_passages] == [p["id"] for p in passages]
    changed = {n["title"] for n, p in zip(new_passages, passages) if n["text"] != p["text"]}
    assert changed == set(test)  # every held-out country, no other
    # Each held-out capital passage now names another held-out country's
    # capital, every such capital is named once (a permutation), and the
    # questions carry the new answers.
    before = {p["title"]: p["text"] for p in passages if p["id"].endswith("/capital")}
    after = {p["title"]: p["text"] for p in new_passages if p["id"].endswith("/capital")}
    true_capital = {q["country"]: q["answer"] for q in questions}
    for question in new_questions:
        country, old, new = question["country"], question["original_answer"], question["answer"]
        assert new != old == true_capital[country]
        # Only the fact changes, not a country name equal to it (Singapore).
        assert after[country] == f"The capital of {country} is {new}."
        assert before[country] == f"The capital of {country} is {old}."
    assert collections.Counter(
        q["answer"] for q in new_questions) == collections.Counter(q["answer"] for q in questions)
    assert new_questions != derange_facts(passages, questions, test, seed=1)[1]


def test_derange_facts_refuses_what_it_cannot_change():
    from keras_ragkd.data.counterfactual import derange_facts

    passages = [{"id": f"{c}/capital", "title": c, "text": f"The capital of {c} is X."}
                for c in ("A", "B")]
    questions = [{"question": f"Capital of {c}?", "answer": "X", "passage_id": f"{c}/capital"}
                 for c in ("A", "B")]
    with pytest.raises(ValueError, match="Received: facts"):
        derange_facts(passages, questions, ["A", "B"])
    with pytest.raises(ValueError, match="at least two"):
        derange_facts(passages[:1], questions[:1], ["A"])
    with pytest.raises(ValueError, match="share one answer"):
        derange_facts(passages, [dict(questions[0], answer="Y"), questions[1]], ["A", "B"])


def test_derange_facts_keeps_a_name_equal_to_the_fact():
    from keras_ragkd.data.counterfactual import derange_facts

    countries = ["Singapore", "Mexico", "France"]
    passages = country_passages(countries)
    questions = [q for q in country_questions("all", types=["capital"])
                 if q["country"] in countries]
    new_passages, _ = derange_facts(passages, questions, countries, seed=0)
    texts = {p["id"]: p["text"] for p in new_passages}
    assert texts["singapore/capital"].startswith("The capital of Singapore is ")
    assert texts["singapore/capital"] != "The capital of Singapore is Singapore."
    assert texts["mexico/capital"].startswith("The capital of Mexico is ")
    assert "Mexico City" not in texts["mexico/capital"]
