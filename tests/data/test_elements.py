import sys

import pytest

from keras_ragkd.data import elements


def test_every_element_once_by_atomic_number():
    records = elements.element_records()
    assert [r["number"] for r in records] == list(range(1, 119))
    assert len({r["symbol"] for r in records}) == 118
    assert all(r["name"][0].isupper() for r in records)


def test_gold_tungsten_and_hydrogen_facts():
    by_name = {r["name"]: r for r in elements.element_records()}
    gold = by_name["Gold"]
    assert (gold["symbol"], gold["number"], gold["period"], gold["density"]) == ("Au", 79, 6, "19.3")
    assert by_name["Tungsten"]["symbol"] == "W" and by_name["Tungsten"]["mass"] == "183.84"
    assert by_name["Hydrogen"]["period"] == 1 and by_name["Oganesson"]["period"] == 7
    by_id = {p["id"]: p["text"] for p in elements.element_passages(["Gold", "Hydrogen"])}
    assert by_id["gold/identity"] == "Gold (symbol Au) is element number 79 of the periodic table."
    assert "between Platinum and Mercury" in by_id["gold/position"]
    assert "at -252.87 °C" in by_id["hydrogen/density"]
    assert by_id["hydrogen/position"] == "Hydrogen sits in period 1 of the periodic table, before Helium."


def test_passage_ids_unique_texts_short_and_no_empty_density():
    passages = elements.element_passages()
    ids = [p["id"] for p in passages]
    assert len(ids) == len(set(ids))
    assert all(p["text"] and p["title"] for p in passages)
    assert max(len(p["text"].split()) for p in passages) < 40
    # Oganesson has no density in `periodictable`: no density passage.
    assert "oganesson/density" not in ids and "gold/density" in ids
    assert "no stable isotope" in {p["id"]: p["text"] for p in passages}["technetium/mass"]


@pytest.mark.parametrize("wording", ["training", "reworded"])
def test_every_answer_is_verbatim_in_its_gold_passage(wording):
    by_id = {p["id"]: p["text"] for p in elements.element_passages()}
    questions = elements.element_questions(wording=wording)
    assert {q["type"] for q in questions} == set(elements.QUESTION_TEMPLATES)
    for pair in questions:
        assert pair["answer"] in by_id[pair["passage_id"]], pair


def test_questions_are_deterministic_and_wordings_disjoint():
    training = elements.element_questions()
    assert training == elements.element_questions()
    reworded = elements.element_questions(wording="reworded")
    assert {q["question"] for q in training}.isdisjoint(q["question"] for q in reworded)
    assert [(q["answer"], q["passage_id"]) for q in training] == [
        (q["answer"], q["passage_id"]) for q in reworded
    ]


def test_symbol_and_number_questions_about_gold():
    pairs = elements.element_questions(["Gold"], types=["element_of_symbol", "element_of_number"])
    assert {(p["question"], p["answer"]) for p in pairs} >= {
        ("Which element has the symbol Au?", "Gold"),
        ("Which element has atomic number 79?", "Gold"),
    }
    assert {p["passage_id"] for p in pairs} == {"gold/identity"}


def test_vocabulary_differs_from_the_country_knowledge_base():
    from keras_ragkd.data import country_passages

    def words(passages):
        return {w.strip(".,:;()").lower() for p in passages for w in p["text"].split()}

    element_words = words(elements.element_passages())
    unseen = element_words - words(country_passages())
    assert {"tungsten", "symbol", "isotope", "periodic"} <= unseen
    assert len(unseen) > 0.5 * len(element_words)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: elements.element_questions(wording="plain"), ValueError,
         "Received: wording='plain'"),
        (lambda: elements.element_questions(types=["colour"]), ValueError,
         r"Received: types=\['colour'\]"),
        (lambda: elements.element_questions(types="symbol"), TypeError,
         "Received: types='symbol'"),
        (lambda: elements.element_passages(["gold"]), ValueError,
         r"Received: elements=\['gold'\]"),
        (lambda: elements.element_passages("Gold"), TypeError, "Received: elements='Gold'"),
    ],
)
def test_bad_arguments_are_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_missing_periodictable_is_a_clear_import_error(monkeypatch):
    elements.element_records.cache_clear()
    monkeypatch.setitem(sys.modules, "periodictable", None)  # `import` now fails.
    try:
        with pytest.raises(ImportError, match=r"pip install 'keras_ragkd\[data\]'"):
            elements.element_passages()
    finally:
        elements.element_records.cache_clear()
