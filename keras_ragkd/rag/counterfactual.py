"""Counterfactual knowledge-base augmentation for training readers to copy.

A generator trained on true facts can memorise them instead of reading the
retrieved passage, and then fails on entities whose facts it never saw. Here a
share of the training passages is replaced by another entity's passage of the
same kind with the entity names exchanged ("The capital of France is Lima."),
and the questions about them get the changed answers, so the only way to
answer is to read (copy from) the passage.
"""

import re

import numpy as np


def _group(passage_id):
    return passage_id.rsplit("/", 1)[-1]


def _rename(text, old, new):
    return re.sub(rf"\b{re.escape(old)}\b", new, text)


def counterfactual_augment(passages, questions, entities, fraction=0.5, seed=0):
    """Swaps the facts of a random share of the `entities`' passages.

    Each chosen passage (entity `C`, fact group `g`, from its id
    `"<slug>/<g>"`) takes the text of a donor passage of the same group whose
    title is another entity `D` of `entities`, with `D` renamed to `C`; the
    questions about the passage become the donor's questions with the same
    renaming (e.g. `"Lima is the capital of which country?"` → `"France"`).
    Donors come from `entities` only, so no other (e.g. held-out) entity's
    facts enter the training data.

    Args:
        passages: list of dicts `{"id", "title", "text"}`; titles are the
            entity names.
        questions: list of dicts with `"question"`, `"answer"`,
            `"passage_id"` (and optionally `"country"`).
        entities: names (passage titles) whose passages may be changed.
        fraction: float in [0, 1], share of their passages changed.
        seed: int.

    Returns:
        A tuple `(passages, questions)`: passages in the same order with the
        same ids, and the questions of `entities` (changed or not).

    Example:

    >>> passages = [
    ...     {"id": "a/capital", "title": "Aland", "text": "The capital of Aland is Ax."},
    ...     {"id": "b/capital", "title": "Boland", "text": "The capital of Boland is Bo."},
    ... ]
    >>> questions = [
    ...     {"question": "What is the capital of Aland?", "answer": "Ax", "passage_id": "a/capital"},
    ...     {"question": "What is the capital of Boland?", "answer": "Bo", "passage_id": "b/capital"},
    ... ]
    >>> new_passages, new_questions = counterfactual_augment(
    ...     passages, questions, ["Aland", "Boland"], fraction=1.0)
    >>> new_passages[0]["text"], new_questions[0]["answer"]
    ('The capital of Aland is Bo.', 'Bo')
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(
            f"`fraction` must be a float in [0, 1]. Received: fraction={fraction}"
        )
    entities = set(entities)
    rng = np.random.RandomState(seed)
    by_id = {p["id"]: p for p in passages}
    questions_of = {}
    for question in questions:
        questions_of.setdefault(question["passage_id"], []).append(question)
    donors = {}
    for passage in passages:
        if passage["title"] in entities:
            donors.setdefault(_group(passage["id"]), []).append(passage["id"])
    new_passages, new_questions = [], []
    for passage in passages:
        if passage["title"] not in entities:
            new_passages.append(passage)
            continue
        candidates = [
            i for i in donors[_group(passage["id"])] if by_id[i]["title"] != passage["title"]
        ]
        if not candidates or rng.rand() >= fraction:
            new_passages.append(passage)
            new_questions.extend(questions_of.get(passage["id"], []))
            continue
        donor = by_id[candidates[rng.randint(len(candidates))]]
        old, new = donor["title"], passage["title"]
        new_passages.append(dict(passage, text=_rename(donor["text"], old, new)))
        for question in questions_of.get(donor["id"], []):
            new_questions.append(
                dict(
                    question,
                    question=_rename(question["question"], old, new),
                    answer=_rename(question["answer"], old, new),
                    passage_id=passage["id"],
                    **({"country": new} if "country" in question else {}),
                )
            )
    return new_passages, new_questions
