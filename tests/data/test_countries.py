import pytest

from keras_ragkd.data import countries


def test_passages_have_unique_ids_and_short_texts():
    passages = countries.country_passages()
    ids = [p["id"] for p in passages]
    assert len(ids) == len(set(ids))
    assert len(passages) > 3 * 200
    assert all(p["text"] and p["title"] for p in passages)
    assert max(len(p["text"].split()) for p in passages) < 80


def test_france_facts():
    by_id = {p["id"]: p for p in countries.country_passages(["France"])}
    assert by_id["france/capital"]["text"] == "The capital of France is Paris."
    assert "Western Europe" in by_id["france/location"]["text"]
    assert "Germany" in by_id["france/location"]["text"]
    assert "EUR" in by_id["france/currency"]["text"]


def test_every_answer_is_in_its_gold_passage():
    by_id = {p["id"]: p["text"] for p in countries.country_passages()}
    for pair in countries.country_questions("all"):
        assert pair["answer"] in by_id[pair["passage_id"]], pair


def test_split_is_by_country_and_deterministic():
    train = countries.country_questions("train", seed=3)
    test = countries.country_questions("test", seed=3)
    assert {q["country"] for q in train}.isdisjoint({q["country"] for q in test})
    assert len(test) > 0.1 * (len(train) + len(test))
    assert test == countries.country_questions("test", seed=3)
    assert test != countries.country_questions("test", seed=4)


def test_every_default_question_type_appears_in_the_test_split():
    types = {q["type"] for q in countries.country_questions("test")}
    assert types == set(countries.DEFAULT_QUESTION_TYPES)
    assert set(countries.DEFAULT_QUESTION_TYPES) | set(countries.NUMERIC_QUESTION_TYPES) == set(
        countries.QUESTION_TEMPLATES
    )


def test_numeric_answers_are_bare_numbers_whose_passage_gives_the_unit():
    passages = {p["id"]: p["text"] for p in countries.country_passages()}
    numeric = countries.country_questions("all", types=countries.NUMERIC_QUESTION_TYPES)
    assert {q["type"] for q in numeric} == set(countries.NUMERIC_QUESTION_TYPES)
    for question in numeric:
        assert question["answer"].replace(".", "").isdigit()
        unit = "people" if question["type"] == "population" else "square kilometres"
        assert f" {question['answer']} {unit}." in passages[question["passage_id"]]


def test_type_filter():
    pairs = countries.country_questions("all", types=["capital"])
    assert {p["type"] for p in pairs} == {"capital"}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: countries.country_questions("dev"), "Received: split='dev'"),
        (lambda: countries.country_questions(types=["capitol"]), "Received: types=['capitol']"),
        (lambda: countries.country_split(test_fraction=1.5), "Received: test_fraction=1.5"),
        (lambda: countries.country_passages(["Atlantis"]), "Received: countries=['Atlantis']"),
    ],
)
def test_bad_arguments_are_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_a_single_string_is_not_a_country_list():
    with pytest.raises(TypeError, match="Received: countries='France'"):
        countries.country_passages("France")


def test_reverse_capital_questions_have_a_single_answer():
    pairs = countries.country_questions("all", types=["country_of_capital"])
    answers_by_question = {}
    for pair in pairs:
        answers_by_question.setdefault(pair["question"], set()).add(pair["answer"])
    assert all(len(answers) == 1 for answers in answers_by_question.values())
    assert not any("Naypyidaw" in question for question in answers_by_question)


def test_reworded_questions_use_no_training_wording():
    training = {t for templates in countries.QUESTION_TEMPLATES.values() for t in templates}
    reworded = {t for templates in countries.REWORDED_TEMPLATES.values() for t in templates}
    assert set(countries.REWORDED_TEMPLATES) == set(countries.QUESTION_TEMPLATES)
    assert training.isdisjoint(reworded)
    train_texts = {q["question"] for q in countries.country_questions(
        "all", types=countries.QUESTION_TEMPLATES)}
    test = countries.country_questions("test", seed=0, wording="reworded")
    assert test and not {q["question"] for q in test} & train_texts
    # Same facts, same split, same gold passages: only the wording differs.
    standard = countries.country_questions("test", seed=0)
    facts = {(q["country"], q["type"], q["answer"], q["passage_id"]) for q in standard}
    assert {(q["country"], q["type"], q["answer"], q["passage_id"]) for q in test} == facts
    assert {q["type"] for q in test} == set(countries.DEFAULT_QUESTION_TYPES)


def test_unlabelled_questions_use_neither_training_nor_reworded_wordings():
    wordings = {name: {t for templates in table.values() for t in templates}
                for name, table in countries.WORDINGS.items()}
    assert set(countries.UNLABELLED_TEMPLATES) == set(countries.QUESTION_TEMPLATES)
    assert wordings["unlabelled"].isdisjoint(wordings["training"] | wordings["reworded"])
    evaluated = {q["question"] for wording in ("training", "reworded")
                 for q in countries.country_questions("all", wording=wording)}
    unlabelled = countries.country_questions("train", seed=0, wording="unlabelled")
    assert unlabelled and not {q["question"] for q in unlabelled} & evaluated
    # The training split's facts, asked in other words.
    facts = {(q["country"], q["type"], q["answer"])
             for q in countries.country_questions("train", seed=0)}
    assert {(q["country"], q["type"], q["answer"]) for q in unlabelled} == facts


def test_reworded_wording_is_validated():
    with pytest.raises(ValueError, match="Received: wording='formal'"):
        countries.country_questions(wording="formal")
